"""RouteBook: the newest route wins, late goodbyes are ignored, moves ask for a resume."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas.events import SessionRoute
from streams.routes import RouteBook


def route(session: str, *, at: int, connected: bool = True, gateway: str = "gw-a") -> SessionRoute:
    return SessionRoute(
        conversation_id="c1",
        gateway_id=gateway,
        reply_topic=f"tp.replies.{gateway}",
        session_id=session,
        connected=connected,
        event_time_ms=at,
    )


def test_a_first_connection_and_a_move_to_another_session_both_ask_for_a_resume() -> None:
    book = RouteBook({})
    assert book.update(route("s1", at=1)) is True
    assert book.update(route("s1", at=2)) is False
    assert book.update(route("s2", at=3, gateway="gw-b")) is True
    current = book.get("c1")
    assert current is not None and current.reply_topic == "tp.replies.gw-b"


def test_a_late_goodbye_from_a_replaced_session_changes_nothing() -> None:
    book = RouteBook({})
    book.update(route("s1", at=1))
    book.update(route("s2", at=3, gateway="gw-b"))
    assert book.update(route("s1", at=4, connected=False)) is False
    current = book.get("c1")
    assert current is not None and (current.session_id, current.connected) == ("s2", True)


def test_an_older_route_never_replaces_a_newer_one() -> None:
    book = RouteBook({})
    book.update(route("s2", at=5))
    assert book.update(route("s1", at=4)) is False
    current = book.get("c1")
    assert current is not None and current.session_id == "s2"


def test_routes_live_in_the_durable_table() -> None:
    table: dict[str, Any] = {}
    RouteBook(table).update(route("s1", at=1))
    restored = RouteBook(table).get("c1")
    assert restored is not None and restored.session_id == "s1"


async def test_a_suggestion_waits_for_a_route_that_is_on_its_way() -> None:
    book = RouteBook({})
    waiting = asyncio.create_task(book.wait_for("c1", timeout_s=5))
    await asyncio.sleep(0)  # let the waiter register before the route arrives
    book.update(route("s1", at=1))
    found = await waiting
    assert found is not None and found.session_id == "s1"
    assert await book.wait_for("nobody", timeout_s=0.01) is None
