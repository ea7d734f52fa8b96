"""Arrow schemas derived from the events' Avro schemas, so every export column is typed.

    long with logicalType timestamp-millis   -> timestamp[ms] (UTC, without a zone)
    enum                                     -> dictionary<int8, string>
    map                                      -> map<string, value>
    array                                    -> list<item>
    ["null", T] (an optional field)          -> T, nullable
    string / bytes / boolean / int / long / float / double -> the Arrow type of that name

The schema read is the newest version of each record, which is what the codec decodes every
older version to, so a field added by a new schema version becomes a column without code
changes. Each export row also says where its record is kept (`KAFKA_COLUMNS`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

import pyarrow as pa

from schemas.versions import SchemaVersion

logger = logging.getLogger(__name__)

KAFKA_COLUMNS: Final = (
    pa.field("kafka_topic", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("kafka_timestamp", pa.timestamp("ms"), nullable=True),
)

_PRIMITIVES: Final[dict[str, pa.DataType]] = {
    "string": pa.string(),
    "bytes": pa.binary(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
}
_TIMESTAMPS: Final[dict[str, pa.DataType]] = {
    "timestamp-millis": pa.timestamp("ms"),
    "timestamp-micros": pa.timestamp("us"),
}


class UnsupportedSchemaError(ValueError):
    """An Avro type this export has no column type for; the message names the field."""


def event_schema(version: SchemaVersion) -> pa.Schema:
    """The export schema of one record: Kafka columns, then the record's fields in order."""
    raw = json.loads(version.path.read_text(encoding="utf-8"))
    named: dict[str, pa.DataType] = {}
    fields = [
        _field(field["name"], field["type"], f"{version}.{field['name']}", named)
        for field in raw["fields"]
    ]
    metadata: dict[bytes | str, bytes | str] = {
        b"avro.schema": version.canonical_form.encode(),
        b"avro.version": str(version.version).encode(),
    }
    return pa.schema([*KAFKA_COLUMNS, *fields], metadata=metadata)


def _field(name: str, avro_type: Any, where: str, named: dict[str, pa.DataType]) -> pa.Field[Any]:
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        if len(branches) != 1:
            raise UnsupportedSchemaError(f"{where}: unions other than [null, T] are not exported")
        return pa.field(name, _arrow_type(branches[0], where, named), nullable=True)
    return pa.field(name, _arrow_type(avro_type, where, named), nullable=False)


def _arrow_type(avro_type: Any, where: str, named: dict[str, pa.DataType]) -> pa.DataType:
    """`named` holds the enums and records defined so far, which later fields name by name."""
    if isinstance(avro_type, str):
        found = _PRIMITIVES.get(avro_type) or named.get(avro_type.rpartition(".")[2])
        if found is None:
            raise UnsupportedSchemaError(f"{where}: unknown named type {avro_type!r}")
        return found
    kind = avro_type.get("type") if isinstance(avro_type, dict) else None
    arrow: pa.DataType
    if kind == "long" and avro_type.get("logicalType") in _TIMESTAMPS:
        arrow = _TIMESTAMPS[avro_type["logicalType"]]
    elif kind == "enum":
        index = pa.int8() if len(avro_type["symbols"]) <= 127 else pa.int32()
        arrow = named[_short_name(avro_type)] = pa.dictionary(index, pa.string())
    elif kind == "record":
        arrow = named[_short_name(avro_type)] = pa.struct(
            [
                _field(f["name"], f["type"], f"{where}.{f['name']}", named)
                for f in avro_type["fields"]
            ]
        )
    elif kind == "map":
        arrow = pa.map_(pa.string(), _arrow_type(avro_type["values"], f"{where}[value]", named))
    elif kind == "array":
        arrow = pa.list_(_arrow_type(avro_type["items"], f"{where}[item]", named))
    elif isinstance(kind, str):
        arrow = _arrow_type(kind, where, named)  # {"type": "string"} and the like
    else:
        raise UnsupportedSchemaError(f"{where}: unexpected Avro type {avro_type!r}")
    return arrow


def _short_name(avro_type: dict[str, Any]) -> str:
    return str(avro_type["name"]).rpartition(".")[2]
