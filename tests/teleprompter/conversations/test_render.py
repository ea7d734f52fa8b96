"""Rendering: a fixed-width table for people, JSON lines with everything for tools."""

from __future__ import annotations

import json

from teleprompter.conversations.render import TableWriter, describe, entry_json
from teleprompter.conversations.timeline import TimelineEntry
from tests.teleprompter.conversations.test_timeline import build, chunk


def test_table_lines_say_where_each_entry_is_kept() -> None:
    entries = build([chunk(1000 + i * 100, i) for i in range(3)])
    table = TableWriter(origin_ms=0, source_width=20)

    line = table.line(entries[0])

    assert "+0:01.000" in line
    assert f"tp.audio[1]@{entries[0].offset}..{entries[0].last_offset}" in line
    assert "customer 0.30 s, 3 chunks, 9,600 B, pcm_s16le 16000 Hz" in line


def test_json_lines_carry_the_kafka_location_and_every_field() -> None:
    entry = TimelineEntry(
        at_ms=1_748_779_200_000,
        type="Turn",
        topic="tp.turns",
        partition=3,
        offset=41,
        fields={"turn_id": "t1", "text": "hi", "future_field": [1, 2]},
    )

    line = json.loads(entry_json(entry))

    assert line == {
        "at": "2025-06-01T12:00:00.000Z",
        "type": "Turn",
        "topic": "tp.turns",
        "partition": 3,
        "offset": 41,
        "event": {"turn_id": "t1", "text": "hi", "future_field": [1, 2]},
    }


def test_an_event_type_it_does_not_know_is_shown_field_by_field() -> None:
    entry = TimelineEntry(
        at_ms=0,
        type="Handoff",
        topic="tp.x",
        partition=0,
        offset=0,
        fields={"conversation_id": "c", "to": "billing", "trace": {}},
    )

    assert describe(entry) == ("Handoff", 'to="billing"')
