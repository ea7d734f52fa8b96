"""Which gateway holds each conversation, so suggestions follow the client across reconnects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from schemas.events import SessionRoute

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Route:
    """Where one conversation's suggestions go now."""

    gateway_id: str
    reply_topic: str
    session_id: str
    connected: bool
    event_time_ms: int


class RouteBook:
    """Routes by conversation over a durable mapping (the worker's Faust table).

    Reads may happen anywhere; `update` must run inside the routes agent (Faust writes a table's
    changelog from the event being processed). A suggestion that is ready before its route has
    arrived (the route and the transcript travel on different topics) waits for it briefly.
    """

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self._table = table
        self._arrivals: dict[str, asyncio.Event] = {}

    def get(self, conversation_id: str) -> Route | None:
        stored = self._table.get(conversation_id)
        return Route(**stored) if stored else None

    def update(self, event: SessionRoute) -> bool:
        """Adopt a route; True when the conversation moved to a new session (resume it)."""
        current = self.get(event.conversation_id)
        if current is not None and event.event_time_ms < current.event_time_ms:
            return False
        if not event.connected and current is not None and current.session_id != event.session_id:
            # A late goodbye from a session that has already been replaced.
            return False
        route = Route(
            gateway_id=event.gateway_id,
            reply_topic=event.reply_topic,
            session_id=event.session_id,
            connected=event.connected,
            event_time_ms=event.event_time_ms,
        )
        self._table[event.conversation_id] = asdict(route)
        if (arrival := self._arrivals.pop(event.conversation_id, None)) is not None:
            arrival.set()
        return event.connected and (current is None or current.session_id != route.session_id)

    def forget(self, conversation_id: str) -> None:
        self._table.pop(conversation_id, None)

    async def wait_for(self, conversation_id: str, *, timeout_s: float = 2.0) -> Route | None:
        """The conversation's route, waiting up to `timeout_s` for one to arrive."""
        route = self.get(conversation_id)
        if route is not None:
            return route
        arrival = self._arrivals.setdefault(conversation_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout_s):
                await arrival.wait()
        except TimeoutError:
            self._arrivals.pop(conversation_id, None)
            return None
        return self.get(conversation_id)
