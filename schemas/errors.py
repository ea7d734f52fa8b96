"""Typed errors for event encoding and decoding, each naming the topic and offset when known."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class SchemaError(ValueError):
    """Base of every schema and codec error; `topic`/`offset` say where a bad record came from."""

    def __init__(self, message: str, *, topic: str | None = None, offset: int | None = None):
        self.topic = topic
        self.offset = offset
        self.reason = message
        super().__init__(message + _where(topic, offset))


class SchemaDefinitionError(SchemaError):
    """A schema file is unreadable, or does not match the event class it belongs to."""


class EventEncodeError(SchemaError):
    """An event could not be encoded: it has no schema, or a field value does not fit it."""


class NotSingleObjectError(SchemaError):
    """The bytes do not start with the Avro single-object marker (C3 01) and a fingerprint."""


class UnknownFingerprintError(SchemaError):
    """The record names a schema fingerprint that no loaded schema version has."""

    def __init__(
        self,
        message: str,
        *,
        fingerprint: bytes,
        topic: str | None = None,
        offset: int | None = None,
    ):
        self.fingerprint = fingerprint
        super().__init__(message, topic=topic, offset=offset)


class TruncatedRecordError(SchemaError):
    """The record body ends before the record its schema describes does."""


class SchemaMismatchError(SchemaError):
    """The body does not fit its writer schema, cannot be read as the reader schema, or is not
    the event type the caller asked for."""


def _where(topic: str | None, offset: int | None) -> str:
    parts = []
    if topic is not None:
        parts.append(f"topic {topic}")
    if offset is not None:
        parts.append(f"offset {offset}")
    return f" ({', '.join(parts)})" if parts else ""
