"""Hostile clients of the broker, for the fault suite and `python -m broker.bench --under-fuzz`.

Each is a plain function over a blocking socket that plays one abuse from issue 12 finding 7
(impossible array counts, a 32 MB frame, a request heavy with items, a slowloris frame, a
metadata storm of unknown topics) and reports whether the broker closed the connection.
They send only to the address given, and each stops by itself.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Final

logger = logging.getLogger(__name__)

_METADATA: Final = 3
_OFFSET_COMMIT: Final = 8
_API_VERSIONS: Final = 18
_CLIENT_ID: Final = b"hostile"
_CHUNK: Final = 1 << 20


def frame(api_key: int, version: int, body: bytes, *, correlation_id: int = 1) -> bytes:
    """A request frame (length prefix, v1 header, body)."""
    header = struct.pack(">hhih", api_key, version, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    return struct.pack(">i", len(header) + len(body)) + header + body


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def impossible_array_count() -> bytes:
    """Metadata v1 claiming 2^31 - 1 topics in a 20-byte body."""
    return frame(_METADATA, 1, struct.pack(">i", 0x7FFF_FFFF) + _string("t") * 4)


def huge_array_frame(size_bytes: int = 32 * 1024 * 1024) -> bytes:
    """Metadata v1 whose topic array really fills `size_bytes`: millions of short names."""
    name = _string("topic-x")
    count = (size_bytes - 4) // len(name)
    return frame(_METADATA, 1, struct.pack(">i", count) + name * count)


def item_heavy_request(topics: int = 400, partitions: int = 500) -> bytes:
    """OffsetCommit v2 with topics x partitions entries, each array short enough to fit."""
    partition_entries = b"".join(
        struct.pack(">iq", index, 0) + _string("") for index in range(partitions)
    )
    topic_entries = b"".join(
        _string(f"t{index}") + struct.pack(">i", partitions) + partition_entries
        for index in range(topics)
    )
    body = (
        _string("hostile-group")
        + struct.pack(">i", -1)
        + _string("")
        + struct.pack(">q", -1)
        + struct.pack(">i", topics)
        + topic_entries
    )
    return frame(_OFFSET_COMMIT, 2, body)


def metadata_for_unknown_topics(count: int = 2_000, *, prefix: str = "storm") -> bytes:
    """Metadata v4 (auto-create allowed) for `count` topics that do not exist (~29 KB)."""
    names = b"".join(_string(f"{prefix}-{index:05d}") for index in range(count))
    return frame(_METADATA, 4, struct.pack(">i", count) + names + b"\x01")


def closed_by_broker(sock: socket.socket, *, timeout_s: float) -> bool:
    """Read until the broker closes the connection (True) or `timeout_s` passes (False)."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass  # an answer: keep reading until the close
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


def send_and_watch(address: tuple[str, int], payload: bytes, *, timeout_s: float = 30.0) -> bool:
    """Send one hostile payload; True when the broker closes the connection over it."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            view = memoryview(payload)
            for start in range(0, len(view), _CHUNK):
                sock.sendall(view[start : start + _CHUNK])
        except ConnectionError:
            return True  # closed while we were still sending: refused from the length prefix
        return closed_by_broker(sock, timeout_s=timeout_s)


def slowloris(address: tuple[str, int], *, byte_every_s: float, timeout_s: float) -> bool:
    """Start a frame and trickle it a byte at a time; True when the broker hangs up."""
    payload = frame(_API_VERSIONS, 1, b"") + b""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection(address, timeout=timeout_s) as sock:
        for byte in payload[:-1]:  # never the last byte: the frame stays incomplete
            try:
                sock.sendall(bytes([byte]))
            except ConnectionError:
                return True
            sock.settimeout(max(byte_every_s, 0.001))
            try:
                if not sock.recv(1):
                    return True
            except TimeoutError:
                pass  # still open: send the next byte
            except ConnectionError:
                return True
            if time.monotonic() > deadline:
                return False
        return closed_by_broker(sock, timeout_s=max(deadline - time.monotonic(), 0.001))


def metadata_answer(address: tuple[str, int], payload: bytes, *, timeout_s: float = 60.0) -> bytes:
    """Send one request and read its whole answer (for requests the broker should answer)."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        sock.sendall(payload)
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, _CHUNK))
        if not chunk:
            raise ConnectionError("the broker closed the connection before answering")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
