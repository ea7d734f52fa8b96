"""TurnLedger: a turn is taken once, and an open turn survives its worker."""

from __future__ import annotations

from schemas.events import Turn
from streams.ledger import TurnLedger
from streams.state import ConversationTable
from tests.streams.fake_table import conversation_table


def turn(turn_id: str, cid: str = "c1") -> Turn:
    return Turn(conversation_id=cid, turn_id=turn_id, text="Is there a discount?")


async def test_a_turn_is_taken_once() -> None:
    table, _ = conversation_table()
    ledger = TurnLedger(table)
    assert ledger.is_new(turn("t1"), offset=5)
    ledger.open(turn("t1"), partition=3, opened_ms=1.0, offset=5)
    assert not ledger.is_new(turn("t1"))  # open
    ledger.close("c1", "t1")
    assert not ledger.is_new(turn("t1"))  # ended
    assert not ledger.is_new(turn("t2"), offset=5)  # a redelivered record
    assert ledger.is_new(turn("t2"), offset=6)


async def test_an_open_turn_survives_its_worker() -> None:
    table, fake = conversation_table()
    TurnLedger(table).open(turn("t1"), partition=3, opened_ms=1_000.0)
    TurnLedger(table).open(turn("t9", cid="elsewhere"), partition=1, opened_ms=1_000.0)

    successor = TurnLedger(ConversationTable(fake.recovered()))
    [orphan] = successor.open_turns({3})
    assert (orphan.turn.turn_id, orphan.partition, orphan.opened_ms) == ("t1", 3, 1_000.0)
    assert successor.open_turn("c1") == orphan


async def test_ended_turn_ids_are_bounded_in_bytes() -> None:
    table, _ = conversation_table()
    ledger = TurnLedger(table, max_ended_bytes=40)
    for n in range(20):
        ledger.open(turn(f"turn-{n:04d}"), partition=0, opened_ms=0.0)  # 9 bytes each
        ledger.close("c1", f"turn-{n:04d}")
    entry = table.get("c1")
    assert entry is not None
    assert sum(len(t) for t in entry["ended"]) <= 40
    assert entry["ended"][-1] == "turn-0019"


async def test_a_long_ended_conversation_is_swept() -> None:
    table, fake = conversation_table()
    ledger = TurnLedger(table)
    ledger.mark_ended("old", partition=0, now_ms=1_000.0)
    ledger.mark_ended("recent", partition=0, now_ms=9_000.0)
    ledger.open(turn("t1", cid="live"), partition=0, opened_ms=0.0)
    assert ledger.sweep({0}, ended_before_ms=5_000.0) == ["old"]
    assert table.get("old") is None and table.get("recent") is not None
    assert fake.changelog[-1] == (0, "old", None)  # a tombstone
