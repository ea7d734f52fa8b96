"""Bounded request decoding: a request body, laid out in aiokafka's field types, into dicts.

Parse time and memory per request are bounded before anything is allocated: an array (or a
string, bytes or tagged-field block) whose declared length cannot fit in the bytes left is
refused at once, and every array item counts against an item budget for the whole request.
A count is checked before its list is built, so a few bytes claiming two billion items cost
nothing. The server parses with a small budget on its event loop and, when a request needs
more, again off the loop with the full one (see server.py).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, Final

from aiokafka.protocol.types import (
    Array,
    Boolean,
    Bytes,
    CompactArray,
    CompactBytes,
    CompactString,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
    UInt32,
    UnsignedVarInt32,
)

from broker.errors import MalformedRequestError

logger = logging.getLogger(__name__)

# Array items one request may hold in all. Real clients stay far below (a consumer fetching
# 10,000 partitions sends about 10,000); a request over it closes its connection as malformed.
MAX_REQUEST_ITEMS: Final = 100_000


class RequestTooComplexError(MalformedRequestError):
    """The request holds more array items than the budget it was decoded with.

    `needed` is how many items it holds at least (those read, plus the array that broke the
    budget), so a caller can tell whether a bigger budget could ever be enough.
    """

    def __init__(self, message: str, needed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed

    def __reduce__(self) -> tuple[type, tuple[str, int]]:  # crosses to the parser process
        return (type(self), (str(self), self.needed))


class _Reader:
    """A position in a frame, and how many array items the request may still hold."""

    __slots__ = ("budget", "data", "items_left", "position")

    def __init__(self, data: bytes, position: int, items_left: int) -> None:
        self.data = data
        self.position = position
        self.items_left = items_left
        self.budget = items_left

    def left(self) -> int:
        return len(self.data) - self.position

    def take(self, size: int, what: str) -> bytes:
        if size > self.left():
            raise MalformedRequestError(f"{what} of {size} bytes runs past the end of the frame")
        start = self.position
        self.position = start + size
        return self.data[start : self.position]

    def count_items(self, count: int, item_size: int) -> None:
        if count * item_size > self.left():
            raise MalformedRequestError(
                f"an array of {count} items cannot fit in the {self.left()} bytes left"
            )
        if count > self.items_left:
            raise RequestTooComplexError(
                f"the request holds more than its budget of array items ({count} more wanted, "
                f"{self.items_left} left)",
                needed=self.budget - self.items_left + count,
            )
        self.items_left -= count

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.position >= len(self.data):
                raise MalformedRequestError("varint runs past the end of the frame")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise MalformedRequestError("varint longer than 5 bytes")


Decoder = Callable[[_Reader], Any]

FIXED_LAYOUTS: Final[dict[Any, struct.Struct]] = {
    Int8: struct.Struct(">b"),
    Int16: struct.Struct(">h"),
    Int32: struct.Struct(">i"),
    Int64: struct.Struct(">q"),
    UInt32: struct.Struct(">I"),
    Float64: struct.Struct(">d"),
    Boolean: struct.Struct(">?"),
}
_compiled: dict[int, tuple[Decoder, int]] = {}


def decode_body(schema: Schema, frame: bytes, position: int, *, max_items: int) -> dict[str, Any]:
    """The body at `position` as nested dicts by aiokafka's field names (null arrays: None).

    Raises MalformedRequestError for bytes that do not hold the layout, and its subclass
    RequestTooComplexError when the body holds more than `max_items` array items.
    """
    decode, _ = _compile(schema)
    reader = _Reader(frame, position, max_items)
    body: dict[str, Any] = decode(reader)
    return body


def skip_tagged_fields(frame: bytes, position: int) -> int:
    """Where the tagged-field block at `position` ends (a flexible request header's)."""
    reader = _Reader(frame, position, MAX_REQUEST_ITEMS)
    _tagged_fields(reader)
    return reader.position


def _compile(field: Any) -> tuple[Decoder, int]:
    """A decoder for a field type, and the fewest bytes one value of it takes."""
    found = _compiled.get(id(field))
    if found is None:
        found = _build(field)
        _compiled[id(field)] = found
    return found


def _build(field: Any) -> tuple[Decoder, int]:  # noqa: PLR0911  # one branch per wire type
    if field in FIXED_LAYOUTS:
        return _fixed(FIXED_LAYOUTS[field])
    if field is UnsignedVarInt32:
        return (lambda reader: reader.varint()), 1
    if field is TaggedFields:
        return _tagged_fields, 1
    if field is Bytes:
        return _sized(_INT32, nullable_text=None), 4
    if field is CompactBytes:
        return _compact_sized(text=False), 1
    if isinstance(field, CompactString):  # before String, which it extends
        return _compact_sized(text=True), 1
    if isinstance(field, String):
        return _sized(_INT16, nullable_text=field.encoding), 2
    if isinstance(field, CompactArray):  # before Array, which it extends
        return _array(field, compact=True), 1
    if isinstance(field, Array):
        return _array(field, compact=False), 4
    if isinstance(field, Schema):
        return _schema(field)
    raise TypeError(f"no decoder for field type {field!r}")


_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")


def _fixed(layout: struct.Struct) -> tuple[Decoder, int]:
    size = layout.size
    unpack = layout.unpack_from

    def decode(reader: _Reader) -> Any:
        position = reader.position
        if position + size > len(reader.data):
            raise MalformedRequestError("a number runs past the end of the frame")
        reader.position = position + size
        return unpack(reader.data, position)[0]

    return decode, size


def _sized(length: struct.Struct, *, nullable_text: str | None) -> Decoder:
    """Int16-prefixed strings (with an encoding) or Int32-prefixed bytes (without)."""
    read_length = _fixed(length)[0]

    def decode(reader: _Reader) -> Any:
        size = read_length(reader)
        if size < 0:
            return None
        raw = reader.take(size, "a string" if nullable_text else "a bytes field")
        return _text(raw, nullable_text) if nullable_text else raw

    return decode


def _compact_sized(*, text: bool) -> Decoder:
    def decode(reader: _Reader) -> Any:
        size = reader.varint() - 1
        if size < 0:
            return None
        raw = reader.take(size, "a string" if text else "a bytes field")
        return _text(raw, "utf-8") if text else raw

    return decode


def _text(raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise MalformedRequestError(f"a string is not valid {encoding}: {exc}") from None


def _array(field: Array, *, compact: bool) -> Decoder:
    item, item_size = _compile(field.array_of)
    read_count = _fixed(_INT32)[0]

    def decode(reader: _Reader) -> list[Any] | None:
        count = reader.varint() - 1 if compact else read_count(reader)
        if count < 0:
            return None
        reader.count_items(count, item_size)
        return [item(reader) for _ in range(count)]

    return decode


def _schema(schema: Schema) -> tuple[Decoder, int]:
    fields = [
        (name, *_compile(field)) for name, field in zip(schema.names, schema.fields, strict=True)
    ]
    names_and_decoders = [(name, decode) for name, decode, _ in fields]
    size = sum(size for _, _, size in fields)

    def decode(reader: _Reader) -> dict[str, Any]:
        return {name: field_decode(reader) for name, field_decode in names_and_decoders}

    return decode, size


def _tagged_fields(reader: _Reader) -> dict[int, bytes]:
    count = reader.varint()
    reader.count_items(count, 2)  # a tag and a size, at least a byte each
    fields: dict[int, bytes] = {}
    for _ in range(count):
        tag = reader.varint()
        fields[tag] = reader.take(reader.varint(), "a tagged field")
    return fields
