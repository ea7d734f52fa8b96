"""Response encoding: a body dict straight to bytes, by an encoder compiled once per layout.

The layouts are aiokafka's field types (as decoding.py reads them). A field the body omits
takes its type's zero value (0, "", [], a null bytes field, an empty struct), so one handler
dict serves every version of an API. Compiled encoders write into one bytearray, several
times faster than aiokafka's per-field `encode`, which matters for big answers (metadata for
thousands of topics) that would otherwise hold the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiokafka.protocol.types import (
    Array,
    Boolean,
    Bytes,
    CompactArray,
    CompactBytes,
    CompactString,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
    UnsignedVarInt32,
)

from broker.decoding import FIXED_LAYOUTS

logger = logging.getLogger(__name__)

Encoder = Callable[[Any, bytearray], None]

_FIXED: Final = FIXED_LAYOUTS  # numbers are laid out as decoding.py reads them
_INT16: Final = _FIXED[Int16]
_INT32: Final = _FIXED[Int32]
_NULL16: Final = _INT16.pack(-1)
_NULL32: Final = _INT32.pack(-1)
_MISSING: Final = object()
_compiled: dict[int, tuple[Encoder, Any]] = {}


def encode_body(schema: Schema, body: Mapping[str, Any]) -> bytes:
    """The bytes of `body` laid out as `schema` (aiokafka's field names)."""
    encode, _ = _compile(schema)
    out = bytearray()
    encode(body, out)
    return bytes(out)


def _compile(field: Any) -> tuple[Encoder, Any]:
    """An encoder for a field type, and the value an omitted field of that type takes."""
    found = _compiled.get(id(field))
    if found is None:
        found = _build(field)
        _compiled[id(field)] = found
    return found


def _build(field: Any) -> tuple[Encoder, Any]:  # noqa: PLR0911  # one branch per wire type
    if field in _FIXED:
        pack = _FIXED[field].pack
        return (lambda value, out: out.extend(pack(value))), False if field is Boolean else 0
    if field is UnsignedVarInt32:
        return (lambda value, out: out.extend(_varint(value))), 0
    if field is TaggedFields:
        return _tagged_fields, {}
    if field is Bytes:
        return _bytes, None
    if field is CompactBytes:
        return _compact_bytes, None
    if isinstance(field, CompactString):  # before String, which it extends
        return _compact_string, ""
    if isinstance(field, String):
        return _string, ""
    if isinstance(field, CompactArray):  # before Array, which it extends
        return _array(field, compact=True), []
    if isinstance(field, Array):
        return _array(field, compact=False), []
    if isinstance(field, Schema):
        return _schema(field), {}
    raise TypeError(f"no encoder for field type {field!r}")


def _varint(value: int) -> bytes:
    value &= 0xFFFF_FFFF
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: str | None, out: bytearray) -> None:
    if value is None:
        out.extend(_NULL16)
        return
    raw = value.encode()
    out.extend(_INT16.pack(len(raw)))
    out.extend(raw)


def _compact_string(value: str | None, out: bytearray) -> None:
    if value is None:
        out.append(0)
        return
    raw = value.encode()
    out.extend(_varint(len(raw) + 1))
    out.extend(raw)


def _bytes(value: bytes | None, out: bytearray) -> None:
    if value is None:
        out.extend(_NULL32)
        return
    out.extend(_INT32.pack(len(value)))
    out.extend(value)


def _compact_bytes(value: bytes | None, out: bytearray) -> None:
    if value is None:
        out.append(0)
        return
    out.extend(_varint(len(value) + 1))
    out.extend(value)


def _tagged_fields(value: Mapping[int, bytes], out: bytearray) -> None:
    out.extend(_varint(len(value)))
    for tag, raw in sorted(value.items()):
        out.extend(_varint(tag))
        out.extend(_varint(len(raw)))
        out.extend(raw)


def _array(field: Array, *, compact: bool) -> Encoder:
    item, _ = _compile(field.array_of)

    def encode(items: list[Any] | None, out: bytearray) -> None:
        if items is None:
            out.extend(b"\x00" if compact else _NULL32)
            return
        out.extend(_varint(len(items) + 1) if compact else _INT32.pack(len(items)))
        for value in items:
            item(value, out)

    return encode


def _schema(schema: Schema) -> Encoder:
    fields = [
        (name, *_compile(field)) for name, field in zip(schema.names, schema.fields, strict=True)
    ]

    def encode(data: Mapping[str, Any], out: bytearray) -> None:
        for name, field_encode, zero in fields:
            value = data.get(name, _MISSING)
            field_encode(zero if value is _MISSING else value, out)

    return encode
