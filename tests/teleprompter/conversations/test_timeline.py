"""The timeline: one entry per event, audio as utterances, deltas as one run per suggestion."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import ClassVar

from schemas.events import AudioChunk, Event, SuggestionEvent, TranscriptSegment, Turn
from teleprompter.conversations.render import entry_json
from teleprompter.conversations.timeline import (
    AUDIO_UTTERANCE,
    DELTA_RUN,
    TimelineBuilder,
    TimelineEntry,
    event_fields,
    sort_entries,
)
from teleprompter.event_log.reader import Recorded, RecordedEvent, UndecodableRecord

_offsets = itertools.count()


def recorded(event: Event, topic: str = "tp.transcripts") -> RecordedEvent:
    return RecordedEvent(
        topic=topic,
        partition=1,
        offset=next(_offsets),
        timestamp_ms=event.event_time_ms,
        event=event,
    )


def build(records: list[Recorded], **options: object) -> list[TimelineEntry]:
    builder = TimelineBuilder(is_reply_topic=lambda t: t.startswith("tp.replies."), **options)  # type: ignore[arg-type]
    entries = [entry for record in records for entry in builder.add(record)]
    return sort_entries(entries + builder.flush())


def chunk(
    at: int, seq: int, *, speaker: str = "customer", size: int = 3200, **kw: object
) -> RecordedEvent:
    return recorded(
        AudioChunk(
            conversation_id="c",
            event_time_ms=at,
            session_id="s",
            speaker=speaker,  # type: ignore[arg-type]
            seq=seq,
            audio=b"\0" * size,
            **kw,  # type: ignore[arg-type]
        ),
        "tp.audio",
    )


def delta(at: int, seq: int, text: str, full: str, turn: str = "t1") -> RecordedEvent:
    return recorded(
        SuggestionEvent(
            conversation_id="c",
            event_time_ms=at,
            turn_id=turn,
            kind="delta",
            seq=seq,
            text=text,
            full_text=full,
        ),
        "tp.replies.gw-a",
    )


def test_a_speakers_consecutive_chunks_are_one_utterance() -> None:
    records = [chunk(1000 + i * 100, i) for i in range(10)]
    records += [
        chunk(1500 + i * 100, i, speaker="rep", encoding="mulaw", sample_rate=8000, size=800)
        for i in range(3)
    ]
    records += [chunk(5000 + i * 100, 10 + i) for i in range(5)]  # after a pause: a new one

    entries = build(records)

    assert [e.type for e in entries] == [AUDIO_UTTERANCE] * 3
    first, rep, second = entries
    assert first.fields | {"conversation_id": "c"} == first.fields
    assert (first.at_ms, first.fields["chunks"], first.fields["bytes"]) == (1000, 10, 32000)
    assert first.fields["duration_ms"] == 1000.0  # 32000 B of 16-bit samples at 16 kHz
    assert (first.offset, first.last_offset, first.records) == (
        records[0].offset,
        records[9].offset,
        10,
    )
    assert rep.fields["speaker"] == "rep" and rep.fields["encoding"] == "mulaw"
    assert rep.fields["duration_ms"] == 300.0  # 2400 B of 8-bit samples at 8 kHz
    assert (second.at_ms, second.fields["first_seq"], second.fields["last_seq"]) == (5000, 10, 14)
    assert "audio" not in first.fields  # never the bytes


def test_an_end_of_stream_closes_the_utterance() -> None:
    records = [
        chunk(1000, 0),
        chunk(1100, 1),
        chunk(1150, 2, size=0, end_of_stream=True),
        chunk(1200, 3),
    ]

    entries = build(records)

    assert [(e.fields["chunks"], e.fields["end_of_stream"]) for e in entries] == [
        (3, True),
        (1, False),
    ]


def test_deltas_are_one_run_per_suggestion_closed_by_its_outcome() -> None:
    complete = recorded(
        SuggestionEvent(
            conversation_id="c",
            event_time_ms=1300,
            turn_id="t1",
            kind="complete",
            text="Hello there",
        ),
        "tp.suggestions",
    )
    copy = dataclasses.replace(complete, topic="tp.replies.gw-a", offset=next(_offsets))
    records = [
        delta(1000, 1, "Hello", "Hello"),
        delta(1100, 2, " there", "Hello there"),
        delta(1150, 2, "Hello there", "Hello there"),  # re-sent after a reconnect
        copy,
        complete,
    ]

    entries = build(records)

    assert [e.type for e in entries] == [DELTA_RUN, "SuggestionEvent"]
    run = entries[0]
    assert run.fields["deltas"] == 3 and run.fields["resent"] == 1
    assert run.fields["text"] == "Hello there"
    assert run.fields["streamed_ms"] == 150
    assert (run.topic, run.offset, run.last_offset) == (
        "tp.replies.gw-a",
        records[0].offset,
        records[2].offset,
    )
    assert entries[1].topic == "tp.suggestions"  # the copy on the reply topic is left out


def test_each_delta_on_request() -> None:
    entries = build([delta(1000, 1, "Hi", "Hi"), delta(1100, 2, "!", "Hi!")], deltas="each")

    assert [(e.type, e.fields["seq"]) for e in entries] == [
        ("SuggestionEvent", 1),
        ("SuggestionEvent", 2),
    ]


def test_copies_of_transcripts_on_reply_topics_are_left_out() -> None:
    segment = TranscriptSegment(
        conversation_id="c", event_time_ms=1000, session_id="s", segment_id="1", text="hi"
    )

    entries = build([recorded(segment), recorded(segment, "tp.replies.gw-a")])

    assert [(e.type, e.topic) for e in entries] == [("TranscriptSegment", "tp.transcripts")]


def test_entries_sort_by_event_time_then_pipeline_order() -> None:
    turn = Turn(conversation_id="c", event_time_ms=1000, turn_id="t1", text="hi")
    segment = TranscriptSegment(
        conversation_id="c", event_time_ms=1000, session_id="s", segment_id="1", text="hi"
    )
    early = TranscriptSegment(
        conversation_id="c", event_time_ms=900, session_id="s", segment_id="0", text="so"
    )

    entries = build([recorded(turn, "tp.turns"), recorded(segment), recorded(early)])

    assert [(e.at_ms, e.type) for e in entries] == [
        (900, "TranscriptSegment"),
        (1000, "TranscriptSegment"),
        (1000, "Turn"),
    ]


def test_undecodable_records_are_entries_that_say_why() -> None:
    bad = UndecodableRecord(
        topic="tp.turns", partition=1, offset=7, timestamp_ms=500, key=b"c", reason="no schema"
    )

    (entry,) = build([bad])

    assert (entry.type, entry.at_ms, entry.fields) == (
        "Undecodable",
        500,
        {"key": "c", "reason": "no schema"},
    )


@dataclass(kw_only=True)
class RevisedSegment(TranscriptSegment):
    """What a newer schema version may look like: a field this code has never heard of."""

    schema_name: ClassVar[str] = "TranscriptSegment"
    revision: int = 0


def test_fields_of_newer_schema_versions_come_through_generically() -> None:
    segment = RevisedSegment(
        conversation_id="c",
        event_time_ms=1000,
        session_id="s",
        segment_id="1",
        text="hi",
        revision=2,
    )

    (entry,) = build([recorded(segment)])

    assert entry.fields == event_fields(segment)
    assert entry.fields["revision"] == 2
    assert '"revision":2' in entry_json(entry)


def test_an_outcome_read_before_its_last_deltas_waits_for_the_run() -> None:
    complete = recorded(
        SuggestionEvent(
            conversation_id="c", event_time_ms=1300, turn_id="t1", kind="complete", text="Hi you"
        ),
        "tp.suggestions",
    )
    copy = dataclasses.replace(complete, topic="tp.replies.gw-a", offset=next(_offsets))
    builder = TimelineBuilder(is_reply_topic=lambda t: t.startswith("tp.replies."))

    emitted = [
        builder.add(delta(1000, 1, "Hi", "Hi")),
        builder.add(complete),  # its topic was fetched first
        builder.add(delta(1100, 2, " you", "Hi you")),
        builder.add(copy),
    ]

    assert [[e.type for e in batch] for batch in emitted] == [
        [],
        [],
        [],
        [DELTA_RUN, "SuggestionEvent"],
    ]
    assert emitted[3][0].fields["deltas"] == 2 and emitted[3][1].topic == "tp.suggestions"


def test_a_stream_without_an_outcome_is_shown_once_idle_or_at_the_end() -> None:
    builder = TimelineBuilder(is_reply_topic=lambda t: t.startswith("tp.replies."))
    builder.add(delta(1000, 1, "Hi", "Hi"))

    assert builder.expire(now_ms=5000) == []
    (run,) = builder.expire(now_ms=20_000)
    assert run.type == DELTA_RUN and builder.flush() == []
