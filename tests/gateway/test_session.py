"""The send queue's slow-client policy; sessions end to end are in test_app.py."""

from __future__ import annotations

import asyncio

import pytest

from gateway.protocol import (
    ErrorMessage,
    ServerMessage,
    SuggestionComplete,
    SuggestionDelta,
    Transcript,
)
from gateway.session import Outgoing, SendQueue


def delta(turn: str, seq: int, full: str) -> SuggestionDelta:
    return SuggestionDelta(turn_id=turn, seq=seq, text=full[-1], full_text=full)


async def take_all(queue: SendQueue) -> list[ServerMessage]:
    return [(await queue.get()).message for _ in range(len(queue))]


async def test_a_queue_with_room_keeps_everything_in_order() -> None:
    queue = SendQueue(capacity=3)
    items: list[ServerMessage] = [
        delta("t", 0, "a"),
        delta("t", 1, "ab"),
        Transcript(speaker="customer", text="x", final=True),
    ]
    assert all(queue.put(Outgoing(message=m)) for m in items)
    assert await take_all(queue) == items


async def test_when_full_the_deltas_of_a_turn_merge_into_the_newest_without_losing_text() -> None:
    merged: list[int] = []
    queue = SendQueue(capacity=3, on_coalesce=merged.append)
    for seq, full in enumerate(["T", "Th", "Tha", "Than", "Thank"]):
        assert queue.put(Outgoing(message=delta("t1", seq, full)))
    messages = await take_all(queue)
    assert len(messages) <= 3
    assert all(isinstance(m, SuggestionDelta) for m in messages)
    # Appending fragments and showing fullText both give the exact text.
    assert "".join(m.text for m in messages if isinstance(m, SuggestionDelta)) == "Thank"
    last = messages[-1]
    assert isinstance(last, SuggestionDelta)
    assert (last.seq, last.full_text) == (4, "Thank")
    assert sum(merged) == 5 - len(messages)


async def test_deltas_never_merge_across_turns_or_across_a_turns_end() -> None:
    queue = SendQueue(capacity=4)
    sequence: list[ServerMessage] = [
        delta("t1", 0, "a"),
        delta("t2", 0, "x"),
        delta("t1", 1, "ab"),
        SuggestionComplete(turn_id="t1", text="ab"),
        delta("t1", 2, "abc"),  # a stray delta after the end stays after it
        delta("t2", 1, "xy"),
    ]
    for message in sequence:
        assert queue.put(Outgoing(message=message))
    messages = await take_all(queue)
    assert messages == [
        SuggestionDelta(turn_id="t1", seq=1, text="ab", full_text="ab"),
        SuggestionComplete(turn_id="t1", text="ab"),
        delta("t1", 2, "abc"),
        SuggestionDelta(turn_id="t2", seq=1, text="xy", full_text="xy"),
    ]


async def test_a_queue_that_stays_full_refuses_and_keeps_what_it_had() -> None:
    queue = SendQueue(capacity=2)
    first = ErrorMessage(code="bad_json", message="1")
    second = ErrorMessage(code="bad_json", message="2")
    assert queue.put(Outgoing(message=first))
    assert queue.put(Outgoing(message=second))
    assert not queue.put(Outgoing(message=ErrorMessage(code="bad_json", message="3")))
    assert await take_all(queue) == [first, second]


async def test_get_waits_for_a_put() -> None:
    queue = SendQueue(capacity=1)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # let the getter start waiting
    assert not getter.done()
    message = Transcript(speaker="rep", text="hi", final=True)
    queue.put(Outgoing(message=message, received_at=1.0))
    item = await asyncio.wait_for(getter, timeout=5)
    assert item == Outgoing(message=message, received_at=1.0)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SendQueue(capacity=0)
