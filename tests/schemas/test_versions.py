"""Loading schema versions: the packaged layout, and every way a schema directory can be wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from schemas.errors import SchemaDefinitionError
from schemas.events import EVENT_TYPES, Event
from schemas.versions import NAMESPACE, PACKAGED_SCHEMA_DIR, EventSchemas


@dataclass(kw_only=True)
class Note(Event):
    schema_name: ClassVar[str] = "Note"

    text: str
    mood: Literal["calm", "tense"] = "calm"


def note_schema(**changes: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "record",
        "name": "Note",
        "namespace": "teleprompter.events",
        "fields": [
            {"name": "conversation_id", "type": "string"},
            {"name": "event_time_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "trace", "type": {"type": "map", "values": "double"}, "default": {}},
            {"name": "text", "type": "string"},
            {
                "name": "mood",
                "type": {"type": "enum", "name": "Mood", "symbols": ["calm", "tense"]},
                "default": "calm",
            },
        ],
    }
    schema.update(changes)
    return schema


def write(path: Path, content: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_packaged_schemas_cover_every_event_type() -> None:
    schemas = EventSchemas.load()

    assert set(schemas.newest) == set(EVENT_TYPES)
    for event_type, version in schemas.newest.items():
        assert version.name == event_type.schema_name
        assert version.path.parent.parent == PACKAGED_SCHEMA_DIR
        assert version.path.name == f"v{version.version}.avsc"
        raw = json.loads(version.path.read_text())
        assert raw["namespace"] == NAMESPACE
        assert raw["fields"][1] == {
            "name": "event_time_ms",
            "type": {"type": "long", "logicalType": "timestamp-millis"},
        }


# Every released version's fingerprint. Records written with these are in topics now: a released
# schema file is never edited or removed (a change is a new vN+1.avsc), and a new release adds
# its line here.
RELEASED: dict[tuple[str, int], str] = {
    ("AudioChunk", 1): "b6e4a61db33cee17",
    ("ConversationSummary", 1): "431ccaefe08eb095",
    ("CustomerProfile", 1): "6555a4923c84ef90",
    ("LlmStatus", 1): "c97f46b6edeca32e",
    ("SessionRoute", 1): "1855d3725220e169",
    ("SuggestionEvent", 1): "04c8a146d3844e97",
    ("SuggestionEvent", 2): "a0b8ea6595ccb727",
    ("TranscriptSegment", 1): "6036a9dab21e2336",
    ("TranscriptSegment", 2): "4acab7ac5f2bcac2",
    ("Turn", 1): "c803e58ad98485d1",
    ("Turn", 2): "d2dafe67da3c5367",
}


def test_released_versions_are_kept_unchanged() -> None:
    loaded = {
        (version.name, version.version): version.fingerprint.hex()
        for version in EventSchemas.load().by_fingerprint.values()
    }
    assert loaded == RELEASED


def test_every_version_is_loaded_and_the_highest_is_newest(tmp_path: Path) -> None:
    write(tmp_path / "note" / "v1.avsc", note_schema(fields=note_schema()["fields"][:4]))
    write(tmp_path / "note" / "v2.avsc", note_schema())

    schemas = EventSchemas.load(tmp_path, (Note,))

    assert sorted(v.version for v in schemas.by_fingerprint.values()) == [1, 2]
    assert schemas.newest[Note].version == 2
    assert schemas.newest[Note].header[:2] == b"\xc3\x01"


def test_versions_compare_as_numbers(tmp_path: Path) -> None:
    for n in (1, 2, 10):
        fields = [*note_schema()["fields"], {"name": f"x{n}", "type": "int", "default": 0}]
        write(tmp_path / "note" / f"v{n}.avsc", note_schema(fields=fields))

    with pytest.raises(SchemaDefinitionError, match=r"v10\.avsc.*only in the schema \['x10'\]"):
        EventSchemas.load(tmp_path, (Note,))


def test_newest_schema_must_have_the_class_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "note" / "v1.avsc", note_schema(fields=note_schema()["fields"][:4]))

    with pytest.raises(SchemaDefinitionError, match=r"only in the class \['mood'\]") as caught:
        EventSchemas.load(tmp_path, (Note,))
    assert str(path) in str(caught.value)


def test_enum_symbols_must_be_the_literal_values(tmp_path: Path) -> None:
    fields = note_schema()["fields"]
    fields[4] = {
        "name": "mood",
        "type": {"type": "enum", "name": "Mood", "symbols": ["calm", "tense", "angry"]},
    }
    write(tmp_path / "note" / "v1.avsc", note_schema(fields=fields))

    with pytest.raises(SchemaDefinitionError, match="angry"):
        EventSchemas.load(tmp_path, (Note,))


@pytest.mark.parametrize("name", ["v0.avsc", "latest.avsc", "v1.1.avsc", "V1.avsc"])
def test_version_files_are_named_v_n(tmp_path: Path, name: str) -> None:
    write(tmp_path / "note" / "v1.avsc", note_schema())
    write(tmp_path / "note" / name, note_schema())

    with pytest.raises(SchemaDefinitionError, match=r"v<N>\.avsc"):
        EventSchemas.load(tmp_path, (Note,))


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not a valid Avro schema"),
        (note_schema(type="enum", symbols=["a"]), "one Avro record"),
        (note_schema(namespace="elsewhere"), "not in namespace teleprompter.events"),
        (note_schema(fields=[{"name": "x", "type": "no-such-type"}]), "not a valid Avro schema"),
    ],
    ids=["json", "not-a-record", "namespace", "unknown-type"],
)
def test_invalid_schema_file_is_named(tmp_path: Path, content: Any, complaint: str) -> None:
    path = write(tmp_path / "note" / "v1.avsc", content)

    with pytest.raises(SchemaDefinitionError, match=complaint) as caught:
        EventSchemas.load(tmp_path, (Note,))
    assert str(path) in str(caught.value)


def test_a_new_version_must_change_the_schema(tmp_path: Path) -> None:
    write(tmp_path / "note" / "v1.avsc", note_schema())
    write(tmp_path / "note" / "v2.avsc", note_schema(doc="only the documentation changed"))

    with pytest.raises(SchemaDefinitionError, match="same canonical form"):
        EventSchemas.load(tmp_path, (Note,))


def test_one_directory_per_record(tmp_path: Path) -> None:
    write(tmp_path / "note" / "v1.avsc", note_schema())
    write(tmp_path / "note" / "v2.avsc", note_schema(name="Memo"))

    with pytest.raises(SchemaDefinitionError, match="mixes records Memo, Note"):
        EventSchemas.load(tmp_path, (Note,))


def test_every_schema_needs_an_event_class(tmp_path: Path) -> None:
    write(tmp_path / "note" / "v1.avsc", note_schema())
    write(tmp_path / "memo" / "v1.avsc", note_schema(name="Memo"))

    with pytest.raises(SchemaDefinitionError, match="no event class has: Memo"):
        EventSchemas.load(tmp_path, (Note,))


def test_every_event_class_needs_a_schema(tmp_path: Path) -> None:
    write(tmp_path / "note" / "v1.avsc", note_schema())

    with pytest.raises(SchemaDefinitionError, match=r"for event classes: AudioChunk, .*Turn"):
        EventSchemas.load(tmp_path, (Note, *EVENT_TYPES))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SchemaDefinitionError, match="does not exist"):
        EventSchemas.load(tmp_path / "nowhere", (Note,))
