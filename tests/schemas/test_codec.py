"""Single-object encoding: round trips, wire layout, schema evolution and every bad-input error."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.codec import EventCodec, default_codec
from schemas.errors import (
    EventEncodeError,
    NotSingleObjectError,
    SchemaError,
    SchemaMismatchError,
    TruncatedRecordError,
    UnknownFingerprintError,
)
from schemas.events import (
    EVENT_TYPES,
    AudioChunk,
    ConversationSummary,
    CustomerProfile,
    Event,
    LlmStatus,
    SessionRoute,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)
from schemas.versions import PACKAGED_SCHEMA_DIR

E = TypeVar("E", bound=Event)

TOPIC = "tp.turns"
OFFSET = 4242

# One event per type with every field away from its default, so a field that is lost or
# swapped in a round trip shows.
SAMPLES: tuple[Event, ...] = (
    AudioChunk(
        conversation_id="conv-1",
        event_time_ms=1_764_000_000_123,
        trace={"client_sent": 1_764_000_000_100.25, "gateway_in": 1_764_000_000_123.5},
        session_id="sess-1",
        speaker="rep",
        seq=2**40,
        encoding="mulaw",
        sample_rate=8000,
        audio=bytes(range(256)) * 13,
        end_of_stream=True,
    ),
    TranscriptSegment(
        conversation_id="conv-2",
        event_time_ms=1_764_000_001_000,
        trace={"asr_done": 1_764_000_001_050.0},
        session_id="sess-2",
        segment_id="seg-9",
        speaker="rep",
        text="Grüße — ça va? 你好 🙂",
        final=False,
        source="asr",
        end_of_conversation=True,
    ),
    Turn(
        conversation_id="conv-3",
        event_time_ms=1_764_000_002_000,
        turn_id="turn-3",
        text="What does the premium plan cost?",
        reason="pause",
        segment_ids=["sess-3:0", "sess-3:1"],
    ),
    SuggestionEvent(
        conversation_id="conv-4",
        event_time_ms=1_764_000_003_000,
        trace={"turn": 1.0, "llm_first_token": 2.5},
        turn_id="turn-4",
        kind="complete",
        seq=31,
        text="",
        full_text="It is $49 a month, billed yearly.",
        reason="stop",
        timings={"asr_ms": 180.0, "llm_ttft_ms": 301.5},
    ),
    LlmStatus(
        conversation_id="conv-8",
        event_time_ms=1_764_000_007_000,
        worker_id="worker-1",
        llm="degraded",
        reason="LLM endpoint http://127.0.0.1:8000/v1 answered 503",
    ),
    ConversationSummary(
        conversation_id="conv-5",
        event_time_ms=1_764_000_004_000,
        summary="Customer asks about pricing; rep offered a trial.",
        covers_until_ms=1_764_000_003_999,
        turn_count=12,
    ),
    SessionRoute(
        conversation_id="conv-6",
        event_time_ms=1_764_000_005_000,
        gateway_id="gw-b",
        reply_topic="tp.replies.gw-b",
        session_id="sess-6",
        connected=False,
    ),
    CustomerProfile(
        conversation_id="conv-7",
        event_time_ms=1_764_000_006_000,
        profile_json='{"name": "Ada", "plan": "basic", "notes": ["renewal in May"]}',
    ),
)


def sample(event_type: type[E]) -> E:
    return next(event for event in SAMPLES if isinstance(event, event_type))


def test_samples_cover_every_event_type() -> None:
    assert {type(event) for event in SAMPLES} == set(EVENT_TYPES)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_round_trip_every_event_type(event: Event) -> None:
    codec = default_codec()
    data = codec.encode(event)
    decoded = codec.decode(data, topic=TOPIC, offset=OFFSET)
    assert type(decoded) is type(event)
    assert decoded == event
    assert codec.decode_as(data, type(event)) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda event_type: event_type.__name__)
def test_round_trip_with_defaults(event_type: type[Event]) -> None:
    # Only the fields without defaults, set to their emptiest values.
    required: dict[str, Any] = {
        "conversation_id": "",
        "session_id": "",
        "seq": 0,
        "audio": b"",
        "segment_id": "",
        "text": "",
        "turn_id": "",
        "kind": "throttled",
        "summary": "",
        "covers_until_ms": 0,
        "gateway_id": "",
        "reply_topic": "",
        "profile_json": "{}",
    }
    fields = event_type.__dataclass_fields__
    event = event_type(**{name: value for name, value in required.items() if name in fields})
    assert default_codec().decode(default_codec().encode(event)) == event


def test_decode_as_accepts_the_base_class() -> None:
    data = default_codec().encode(sample(Turn))
    assert default_codec().decode_as(data, Event) == sample(Turn)


def test_default_codec_is_loaded_once() -> None:
    assert default_codec() is default_codec()


# --- wire layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_single_object_layout(event: Event) -> None:
    """Marker C3 01, the CRC-64-AVRO fingerprint of the schema file, then the plain Avro body."""
    schema_path = default_codec().schema_for(type(event)).path
    schema = fastavro.parse_schema(json.loads(schema_path.read_text()))
    expected_fingerprint = bytes.fromhex(
        fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    )

    data = default_codec().encode(event)

    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected_fingerprint
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, vars(event))
    assert data[10:] == body.getvalue()
    # Any Avro reader holding the schema file reads the body.
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema)
    assert isinstance(record, dict)
    assert record["conversation_id"] == event.conversation_id
    assert int(record["event_time_ms"].timestamp() * 1000) == event.event_time_ms


def test_fingerprint_is_the_avro_spec_value() -> None:
    # Cross-check fastavro's CRC-64-AVRO with the spec's example bytes for the schema "int".
    assert fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"


# --- evolution ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class NoteV1(Event):
    schema_name: ClassVar[str] = "Note"

    text: str


@dataclass(kw_only=True)
class NoteV2(Event):
    schema_name: ClassVar[str] = "Note"

    text: str
    language: str = "en"


NOTE_V1: dict[str, Any] = {
    "type": "record",
    "name": "Note",
    "namespace": "teleprompter.events",
    "fields": [
        {"name": "conversation_id", "type": "string"},
        {"name": "event_time_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "trace", "type": {"type": "map", "values": "double"}, "default": {}},
        {"name": "text", "type": "string"},
    ],
}
NOTE_V2: dict[str, Any] = {
    **NOTE_V1,
    "fields": [*NOTE_V1["fields"], {"name": "language", "type": "string", "default": "en"}],
}


def write_schema(path: Path, schema: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=2))


def test_newer_reader_reads_older_record_filling_the_default(tmp_path: Path) -> None:
    write_schema(tmp_path / "old" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "new" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "new" / "note" / "v2.avsc", NOTE_V2)
    old = EventCodec(schema_dir=tmp_path / "old", event_types=(NoteV1,))
    new = EventCodec(schema_dir=tmp_path / "new", event_types=(NoteV2,))

    written_by_old = old.encode(NoteV1(conversation_id="c", event_time_ms=5, text="hi"))

    assert new.decode(written_by_old) == NoteV2(
        conversation_id="c", event_time_ms=5, text="hi", language="en"
    )
    # The newer codec writes its newest version, with its own fingerprint.
    written_by_new = new.encode(NoteV2(conversation_id="c", text="salut", language="fr"))
    assert written_by_new[2:10] == new.schema_for(NoteV2).fingerprint != written_by_old[2:10]
    assert new.decode_as(written_by_new, NoteV2).language == "fr"


def test_older_reader_cannot_read_a_newer_record(tmp_path: Path) -> None:
    write_schema(tmp_path / "old" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "new" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "new" / "note" / "v2.avsc", NOTE_V2)
    old = EventCodec(schema_dir=tmp_path / "old", event_types=(NoteV1,))
    new = EventCodec(schema_dir=tmp_path / "new", event_types=(NoteV2,))

    data = new.encode(NoteV2(conversation_id="c", text="hi"))

    with pytest.raises(UnknownFingerprintError, match=data[2:10].hex()):
        old.decode(data, topic=TOPIC, offset=OFFSET)


def test_dropping_a_released_version_strands_its_records(tmp_path: Path) -> None:
    """Why every version is kept: a record's fingerprint names the version it was written with."""
    write_schema(tmp_path / "v1" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "all" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "all" / "note" / "v2.avsc", NOTE_V2)
    write_schema(tmp_path / "newest" / "note" / "v2.avsc", NOTE_V2)
    data = EventCodec(schema_dir=tmp_path / "v1", event_types=(NoteV1,)).encode(
        NoteV1(conversation_id="c", text="hi")
    )

    keeping_all = EventCodec(schema_dir=tmp_path / "all", event_types=(NoteV2,))
    assert keeping_all.decode_as(data, NoteV2).text == "hi"
    newest_only = EventCodec(schema_dir=tmp_path / "newest", event_types=(NoteV2,))
    with pytest.raises(UnknownFingerprintError):
        newest_only.decode(data)


def test_record_from_an_older_turn_schema_decodes_with_the_packaged_newest(
    tmp_path: Path,
) -> None:
    """A Turn written before `reason` existed reads as today's Turn with the default reason."""
    schema_dir = tmp_path / "avro"
    shutil.copytree(PACKAGED_SCHEMA_DIR, schema_dir)
    turn_dir = schema_dir / "turn"
    # Make room for an older version below the packaged ones: vN becomes v(N+1).
    for path in sorted(turn_dir.glob("v*.avsc"), key=lambda p: -int(p.stem[1:])):
        path.rename(turn_dir / f"v{int(path.stem[1:]) + 1}.avsc")
    newest = json.loads(default_codec().schema_for(Turn).path.read_text())
    older = {**newest, "fields": [f for f in newest["fields"] if f["name"] != "reason"]}
    write_schema(turn_dir / "v1.avsc", older)

    older_parsed = fastavro.parse_schema(older)
    header = b"\xc3\x01" + bytes.fromhex(
        fingerprint(to_parsing_canonical_form(older_parsed), "CRC-64-AVRO")
    )
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        older_parsed,
        {"conversation_id": "c9", "event_time_ms": 77, "trace": {}, "turn_id": "t1", "text": "hi"},
    )

    codec = EventCodec(schema_dir=schema_dir)
    decoded = codec.decode_as(header + body.getvalue(), Turn, topic=TOPIC, offset=OFFSET)

    assert decoded == Turn(
        conversation_id="c9", event_time_ms=77, turn_id="t1", text="hi", reason="sentence_end"
    )
    # The packaged events still round-trip through the codec holding both versions.
    assert codec.decode(default_codec().encode(sample(Turn))) == sample(Turn)


def test_reader_field_without_default_is_a_schema_mismatch(tmp_path: Path) -> None:
    no_default = {
        **NOTE_V1,
        "fields": [*NOTE_V1["fields"], {"name": "language", "type": "string"}],
    }
    write_schema(tmp_path / "old" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "new" / "note" / "v1.avsc", NOTE_V1)
    write_schema(tmp_path / "new" / "note" / "v2.avsc", no_default)
    data = EventCodec(schema_dir=tmp_path / "old", event_types=(NoteV1,)).encode(
        NoteV1(conversation_id="c", text="hi")
    )
    new = EventCodec(schema_dir=tmp_path / "new", event_types=(NoteV2,))

    with pytest.raises(SchemaMismatchError, match="language") as caught:
        new.decode(data, topic=TOPIC, offset=OFFSET)
    assert_names_where(caught.value)


# --- bad input ------------------------------------------------------------------------------


def assert_names_where(error: SchemaError) -> None:
    assert error.topic == TOPIC
    assert error.offset == OFFSET
    assert f"topic {TOPIC}" in str(error)
    assert f"offset {OFFSET}" in str(error)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b'{"conversation_id": "c"}', b"\x00\x01" + bytes(20), b"\xc3\x00" + bytes(9)],
    ids=["empty", "half-marker", "json", "zero-marker", "wrong-second-byte"],
)
def test_bytes_without_the_marker(data: bytes) -> None:
    with pytest.raises(NotSingleObjectError, match="single-object") as caught:
        default_codec().decode(data, topic=TOPIC, offset=OFFSET)
    assert_names_where(caught.value)


def test_marker_then_a_cut_fingerprint_is_truncated() -> None:
    data = default_codec().encode(sample(Turn))
    for cut in range(2, 10):
        with pytest.raises(TruncatedRecordError, match="header") as caught:
            default_codec().decode(data[:cut], topic=TOPIC, offset=OFFSET)
        assert_names_where(caught.value)


def test_unknown_fingerprint() -> None:
    data = bytearray(default_codec().encode(sample(Turn)))
    data[2:10] = b"\x01\x02\x03\x04\x05\x06\x07\x08"

    with pytest.raises(UnknownFingerprintError, match="0102030405060708") as caught:
        default_codec().decode(bytes(data), topic=TOPIC, offset=OFFSET)

    assert caught.value.fingerprint == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert_names_where(caught.value)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_every_truncated_body(event: Event) -> None:
    data = default_codec().encode(event)
    for cut in range(10, len(data)):
        with pytest.raises(TruncatedRecordError, match="ends early") as caught:
            default_codec().decode(data[:cut], topic=TOPIC, offset=OFFSET)
        assert_names_where(caught.value)


def test_trailing_bytes_are_a_mismatch() -> None:
    data = default_codec().encode(sample(Turn)) + b"\x00\x00"
    with pytest.raises(SchemaMismatchError, match="2 bytes left") as caught:
        default_codec().decode(data, topic=TOPIC, offset=OFFSET)
    assert_names_where(caught.value)


def test_enum_index_out_of_range_is_a_mismatch() -> None:
    segment = TranscriptSegment(
        conversation_id="c", event_time_ms=1, session_id="s", segment_id="g", speaker="rep", text=""
    )
    data = bytearray(default_codec().encode(segment))
    # Header (10), "c" (2), 1 (1), {} (1), "s" (2), "g" (2): then the speaker's enum index.
    speaker_at = 18
    assert data[speaker_at] == 0x02  # zig-zag 1: "rep"
    data[speaker_at] = 0x12  # zig-zag 9: no such Speaker
    with pytest.raises(SchemaMismatchError, match="does not follow TranscriptSegment v2") as caught:
        default_codec().decode(bytes(data), topic=TOPIC, offset=OFFSET)
    assert_names_where(caught.value)


def test_invalid_utf8_is_a_mismatch() -> None:
    turn = Turn(conversation_id="c", event_time_ms=1, turn_id="t", text="ab", reason="pause")
    data = bytearray(default_codec().encode(turn))
    position = data.index(b"ab")
    data[position : position + 2] = b"\xff\xfe"
    with pytest.raises(SchemaMismatchError, match="UnicodeDecodeError") as caught:
        default_codec().decode(bytes(data), topic=TOPIC, offset=OFFSET)
    assert_names_where(caught.value)


def test_decode_as_the_wrong_type() -> None:
    data = default_codec().encode(sample(SuggestionEvent))
    with pytest.raises(SchemaMismatchError, match="expected a Turn record") as caught:
        default_codec().decode_as(data, Turn, topic=TOPIC, offset=OFFSET)
    assert_names_where(caught.value)


def test_errors_without_topic_or_offset_say_nothing_about_them() -> None:
    with pytest.raises(NotSingleObjectError) as caught:
        default_codec().decode(b"nope")
    assert caught.value.topic is None
    assert caught.value.offset is None
    assert "topic" not in str(caught.value)
    assert "offset" not in str(caught.value)


def test_offset_alone_is_named() -> None:
    with pytest.raises(NotSingleObjectError, match=r"\(offset 7\)"):
        default_codec().decode(b"nope", offset=7)


@pytest.mark.parametrize(
    ("event", "complaint"),
    [
        (replace(sample(Turn), reason="shrug"), "reason|shrug"),  # type: ignore[arg-type]
        (replace(sample(AudioChunk), audio="not bytes"), "bytes"),  # type: ignore[arg-type]
        (replace(sample(AudioChunk), seq=2**64), "int"),
        (replace(sample(Turn), trace={"stage": "soon"}), "trace"),  # type: ignore[dict-item]
    ],
    ids=["enum-symbol", "bytes", "long-overflow", "map-value"],
)
def test_encoding_a_value_that_does_not_fit(event: Event, complaint: str) -> None:
    with pytest.raises(EventEncodeError, match=complaint) as caught:
        default_codec().encode(event)
    assert event.conversation_id in str(caught.value)


def test_encoding_an_event_without_a_schema() -> None:
    with pytest.raises(EventEncodeError, match="NoteV1 has no schema"):
        default_codec().encode(NoteV1(conversation_id="c", text="hi"))
