"""Export columns are typed from the Avro schemas, whatever fields a version adds."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from schemas.codec import default_codec
from schemas.events import SuggestionEvent, TranscriptSegment
from schemas.versions import SchemaVersion
from teleprompter.export.arrow_schema import UnsupportedSchemaError, event_schema


def test_kafka_columns_then_the_records_fields_typed() -> None:
    schema = event_schema(default_codec().schema_for(SuggestionEvent))

    assert schema.names[:4] == ["kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp"]
    assert schema.field("event_time_ms").type == pa.timestamp("ms")
    assert schema.field("kafka_timestamp").type == pa.timestamp("ms")
    assert schema.field("timings").type == pa.map_(pa.string(), pa.float64())
    assert schema.field("kind").type == pa.dictionary(pa.int8(), pa.string())
    assert schema.field("seq").type == pa.int64()
    assert schema.field("text").type == pa.string()


def test_every_event_type_has_a_schema() -> None:
    for event_type, version in default_codec().schemas.newest.items():
        schema = event_schema(version)
        assert set(schema.names) >= {"conversation_id", "event_time_ms", "trace"}, event_type


def version_file(tmp_path: Path, fields: list[dict[str, object]]) -> SchemaVersion:
    path = tmp_path / "v2.avsc"
    path.write_text(json.dumps({"type": "record", "name": "X", "fields": fields}))
    return SchemaVersion(
        name="X", version=2, path=path, canonical_form="{}", fingerprint=b"", parsed={}
    )


def test_a_new_versions_fields_become_columns(tmp_path: Path) -> None:
    base = json.loads(default_codec().schema_for(TranscriptSegment).path.read_text())["fields"]
    added = [
        {"name": "stability", "type": "int", "default": 0},
        {"name": "replaces", "type": ["null", "string"], "default": None},
        {
            "name": "words",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Word",
                    "fields": [
                        {"name": "w", "type": "string"},
                        {
                            "name": "at_ms",
                            "type": {"type": "long", "logicalType": "timestamp-millis"},
                        },
                    ],
                },
            },
            "default": [],
        },
        {"name": "by", "type": "Speaker", "default": "customer"},  # a type named earlier
    ]

    schema = event_schema(version_file(tmp_path, base + added))

    assert schema.field("stability").type == pa.int32()
    assert schema.field("replaces").nullable and schema.field("replaces").type == pa.string()
    word = schema.field("words").type.value_type
    assert word.field("at_ms").type == pa.timestamp("ms")
    assert schema.field("by").type == schema.field("speaker").type
    assert schema.metadata[b"avro.version"] == b"2"


def test_types_it_cannot_export_are_named(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSchemaError, match=r"X v2\.odd: unions other than"):
        event_schema(version_file(tmp_path, [{"name": "odd", "type": ["string", "long"]}]))
