"""Events to and from bytes in Avro single-object encoding: marker, CRC-64-AVRO fingerprint, body.

Any reader holding the schema files can decode any record: the fingerprint names the exact
schema version the record was written with, and the codec resolves it to the newest version
of that record (Avro schema resolution), so records written by older versions still decode.
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path
from typing import Any, Final, TypeVar

import fastavro
from fastavro.read import SchemaResolutionError

from schemas.errors import (
    EventEncodeError,
    NotSingleObjectError,
    SchemaMismatchError,
    TruncatedRecordError,
    UnknownFingerprintError,
)
from schemas.events import EVENT_TYPES, Event
from schemas.versions import PACKAGED_SCHEMA_DIR, SINGLE_OBJECT_MARKER, EventSchemas, SchemaVersion

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

HEADER_SIZE: Final = len(SINGLE_OBJECT_MARKER) + 8
# fastavro's own messages can embed whole schemas; keep ours readable.
_MAX_CAUSE_CHARS: Final = 200


class _Route:
    """How to read records with one writer fingerprint: as the newest version of its record."""

    __slots__ = ("event_type", "reader", "reader_schema", "writer")

    def __init__(self, *, writer: SchemaVersion, reader: SchemaVersion, event_type: type[Event]):
        self.writer = writer
        self.reader = reader
        self.event_type = event_type
        # No reader schema when writer and reader are one version: fastavro then skips resolution.
        self.reader_schema: dict[str, Any] | None = None if writer is reader else reader.parsed


class EventCodec:
    """Encodes events with the newest schema of their class; decodes any known version."""

    def __init__(
        self,
        *,
        schema_dir: Path = PACKAGED_SCHEMA_DIR,
        event_types: tuple[type[Event], ...] = EVENT_TYPES,
    ) -> None:
        self._schemas = EventSchemas.load(schema_dir, event_types)
        self._writers: dict[type[Event], SchemaVersion] = dict(self._schemas.newest)
        self._routes: dict[bytes, _Route] = {}
        for fingerprint, version in self._schemas.by_fingerprint.items():
            event_type = self._schemas.event_types[version.name]
            self._routes[fingerprint] = _Route(
                writer=version, reader=self._schemas.newest[event_type], event_type=event_type
            )

    @property
    def schemas(self) -> EventSchemas:
        return self._schemas

    def schema_for(self, event_type: type[Event]) -> SchemaVersion:
        """The schema version `event_type` is written with (the newest)."""
        try:
            return self._writers[event_type]
        except KeyError:
            raise EventEncodeError(
                f"{event_type.__name__} has no schema in {self._schemas.schema_dir}"
            ) from None

    def encode(self, event: Event) -> bytes:
        writer = self._writers.get(type(event))
        if writer is None:
            writer = self.schema_for(type(event))
        buffer = io.BytesIO()
        buffer.write(writer.header)
        try:
            # A dataclass instance's __dict__ is exactly its fields: no copy on the hot path.
            fastavro.schemaless_writer(buffer, writer.parsed, event.__dict__)
        except Exception as exc:  # fastavro reports bad values with assorted built-in types
            raise EventEncodeError(
                f"cannot encode {type(event).__name__} for conversation "
                f"{event.conversation_id!r} as {writer}: {_cause(exc)}"
            ) from exc
        return buffer.getvalue()

    def decode(self, data: bytes, *, topic: str | None = None, offset: int | None = None) -> Event:
        route = self._route(data, topic, offset)
        return self._read(route, data, topic, offset)

    def decode_as(
        self,
        data: bytes,
        event_type: type[E],
        *,
        topic: str | None = None,
        offset: int | None = None,
    ) -> E:
        route = self._route(data, topic, offset)
        if not issubclass(route.event_type, event_type):
            raise SchemaMismatchError(
                f"expected a {event_type.__name__} record, got {route.writer}",
                topic=topic,
                offset=offset,
            )
        event = self._read(route, data, topic, offset)
        assert isinstance(event, event_type)  # guaranteed by the route check above
        return event

    def _route(self, data: bytes, topic: str | None, offset: int | None) -> _Route:
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise NotSingleObjectError(
                f"not an Avro single-object record: {len(data)} bytes starting "
                f"{data[:2].hex() or '(empty)'}, expected marker {SINGLE_OBJECT_MARKER.hex()}",
                topic=topic,
                offset=offset,
            )
        if len(data) < HEADER_SIZE:
            raise TruncatedRecordError(
                f"record of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte "
                "single-object header",
                topic=topic,
                offset=offset,
            )
        fingerprint = data[2:HEADER_SIZE]
        route = self._routes.get(fingerprint)
        if route is None:
            raise UnknownFingerprintError(
                f"no schema in {self._schemas.schema_dir} has fingerprint {fingerprint.hex()} "
                "(written by a newer or foreign schema?)",
                fingerprint=fingerprint,
                topic=topic,
                offset=offset,
            )
        return route

    def _read(self, route: _Route, data: bytes, topic: str | None, offset: int | None) -> Event:
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(buffer, route.writer.parsed, route.reader_schema)
        except SchemaResolutionError as exc:
            raise SchemaMismatchError(
                f"cannot read {route.writer} as {route.reader}: {_cause(exc)}",
                topic=topic,
                offset=offset,
            ) from exc
        except Exception as exc:  # fastavro reports bad bytes with assorted built-in types
            # Running out of bytes mid-record is a truncation; anything else is a body that
            # does not follow the schema its fingerprint names.
            if isinstance(exc, EOFError | IndexError) and buffer.tell() >= len(data):
                raise TruncatedRecordError(
                    f"{route.writer} record ends early: {len(data)} bytes in all",
                    topic=topic,
                    offset=offset,
                ) from exc
            raise SchemaMismatchError(
                f"record body does not follow {route.writer}: {_cause(exc)}",
                topic=topic,
                offset=offset,
            ) from exc
        trailing = len(data) - buffer.tell()
        if trailing:
            raise SchemaMismatchError(
                f"{trailing} bytes left after a complete {route.writer} record",
                topic=topic,
                offset=offset,
            )
        if not isinstance(record, dict):  # a record schema always reads as a dict
            raise SchemaMismatchError(
                f"{route.writer} did not read as a record", topic=topic, offset=offset
            )
        try:
            return route.event_type(**record)
        except TypeError as exc:
            raise SchemaMismatchError(
                f"{route.reader} record does not fit {route.event_type.__name__}: {exc}",
                topic=topic,
                offset=offset,
            ) from exc


@functools.cache
def default_codec() -> EventCodec:
    """The codec over the packaged schemas, loaded once per process."""
    return EventCodec()


def _cause(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_CAUSE_CHARS else text[: _MAX_CAUSE_CHARS - 3] + "..."
