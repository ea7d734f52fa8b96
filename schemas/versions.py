"""Every released Avro schema version of every event type, loaded from `<dir>/<name>/v<N>.avsc`.

Each directory holds one record's versions; the highest N is the schema events are written
with and read as, and every older version stays so that records written with it still decode.
Loading checks each newest schema against its event dataclass, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fastavro
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form

from schemas.errors import SchemaDefinitionError
from schemas.events import EVENT_TYPES, Event

logger = logging.getLogger(__name__)

PACKAGED_SCHEMA_DIR: Final = Path(__file__).parent / "avro"
NAMESPACE: Final = "teleprompter.events"
SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
FINGERPRINT_ALGORITHM: Final = "CRC-64-AVRO"

_VERSION_FILE: Final = re.compile(r"^v([1-9][0-9]*)\.avsc$")
# Epoch milliseconds stay plain ints in memory, as in the dataclasses; the logical type is kept
# in the files for other readers and does not enter the canonical form or the fingerprint.
_EPOCH_MS_LOGICAL_TYPES: Final = frozenset({"timestamp-millis"})


@dataclass(frozen=True, kw_only=True)
class SchemaVersion:
    """One released version of one record schema."""

    name: str
    version: int
    path: Path
    canonical_form: str
    fingerprint: bytes
    parsed: dict[str, Any]

    @functools.cached_property
    def header(self) -> bytes:
        """The single-object header: marker, then the fingerprint as written on the wire."""
        return SINGLE_OBJECT_MARKER + self.fingerprint

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True, kw_only=True)
class EventSchemas:
    """Every version of every event schema in one directory, matched to the event classes."""

    schema_dir: Path
    by_fingerprint: Mapping[bytes, SchemaVersion]
    newest: Mapping[type[Event], SchemaVersion]
    event_types: Mapping[str, type[Event]]

    @classmethod
    def load(
        cls,
        schema_dir: Path = PACKAGED_SCHEMA_DIR,
        event_types: Iterable[type[Event]] = EVENT_TYPES,
    ) -> EventSchemas:
        by_name = {event_type.schema_name: event_type for event_type in event_types}
        versions: dict[str, list[SchemaVersion]] = {}
        by_fingerprint: dict[bytes, SchemaVersion] = {}
        if not schema_dir.is_dir():
            raise SchemaDefinitionError(f"schema directory {schema_dir} does not exist")
        for record_dir in sorted(path for path in schema_dir.iterdir() if path.is_dir()):
            for version in _load_record_dir(record_dir):
                versions.setdefault(version.name, []).append(version)
                clash = by_fingerprint.setdefault(version.fingerprint, version)
                if clash is not version:
                    raise SchemaDefinitionError(
                        f"{version.path} has the same canonical form as {clash.path}; "
                        "a new version must change the schema"
                    )

        unknown = sorted(set(versions) - set(by_name))
        if unknown:
            raise SchemaDefinitionError(
                f"schemas in {schema_dir} for records no event class has: {', '.join(unknown)}"
            )
        missing = sorted(set(by_name) - set(versions))
        if missing:
            raise SchemaDefinitionError(
                f"no schema in {schema_dir} for event classes: {', '.join(missing)}"
            )
        newest: dict[type[Event], SchemaVersion] = {}
        for name, event_type in by_name.items():
            latest = max(versions[name], key=lambda version: version.version)
            _check_matches_class(latest, event_type)
            newest[event_type] = latest
        logger.debug("loaded %d schema versions from %s", len(by_fingerprint), schema_dir)
        return cls(
            schema_dir=schema_dir,
            by_fingerprint=by_fingerprint,
            newest=newest,
            event_types=by_name,
        )


def _load_record_dir(record_dir: Path) -> list[SchemaVersion]:
    """Every version file of one record; all must name the same record."""
    loaded: list[SchemaVersion] = []
    for path in sorted(record_dir.glob("*.avsc")):
        match = _VERSION_FILE.match(path.name)
        if match is None:
            raise SchemaDefinitionError(f"{path}: schema files are named v<N>.avsc (N from 1)")
        loaded.append(_load_version(path, int(match.group(1))))
    names = {version.name for version in loaded}
    if len(names) > 1:
        raise SchemaDefinitionError(
            f"{record_dir} mixes records {', '.join(sorted(names))}; one directory per record"
        )
    return loaded


def _load_version(path: Path, version: int) -> SchemaVersion:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        canonical = to_parsing_canonical_form(fastavro.parse_schema(raw))
        parsed = fastavro.parse_schema(_without_epoch_ms_types(raw))
    except (OSError, ValueError, KeyError, TypeError, SchemaParseException) as exc:
        raise SchemaDefinitionError(f"{path}: not a valid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaDefinitionError(f"{path}: an event schema must be one Avro record")
    full_name = str(parsed["name"])
    namespace, _, name = full_name.rpartition(".")
    if namespace != NAMESPACE:
        raise SchemaDefinitionError(f"{path}: record {full_name} is not in namespace {NAMESPACE}")
    return SchemaVersion(
        name=name,
        version=version,
        path=path,
        canonical_form=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, FINGERPRINT_ALGORITHM)),
        parsed=parsed,
    )


def _without_epoch_ms_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _without_epoch_ms_types(value)
            for key, value in node.items()
            if not (key == "logicalType" and value in _EPOCH_MS_LOGICAL_TYPES)
        }
    if isinstance(node, list):
        return [_without_epoch_ms_types(item) for item in node]
    return node


def _check_matches_class(version: SchemaVersion, event_type: type[Event]) -> None:
    """The newest schema is what events are read as: its fields must be the dataclass's."""
    schema_fields = {field["name"]: field for field in version.parsed["fields"]}
    class_fields = [field.name for field in dataclasses.fields(event_type) if field.init]
    only_schema = sorted(set(schema_fields) - set(class_fields))
    only_class = sorted(set(class_fields) - set(schema_fields))
    if only_schema or only_class:
        raise SchemaDefinitionError(
            f"{version.path} ({version}) does not match {event_type.__name__}: "
            f"fields only in the schema {only_schema}, only in the class {only_class}"
        )
    hints = typing.get_type_hints(event_type)
    for name in class_fields:
        avro_type = schema_fields[name]["type"]
        if not (isinstance(avro_type, dict) and avro_type.get("type") == "enum"):
            continue
        literal = hints[name]
        if typing.get_origin(literal) is not typing.Literal:
            raise SchemaDefinitionError(
                f"{version.path}: field {name} is an enum but {event_type.__name__}.{name} "
                "is not a Literal"
            )
        if list(typing.get_args(literal)) != list(avro_type["symbols"]):
            raise SchemaDefinitionError(
                f"{version.path}: enum {name} has symbols {avro_type['symbols']}, "
                f"{event_type.__name__}.{name} allows {list(typing.get_args(literal))}"
            )
