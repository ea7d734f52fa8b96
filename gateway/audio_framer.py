"""Re-chunks a client's audio bytes into ~100-200 ms pieces without decoding them."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class AudioFramer:
    """Cuts a byte stream into chunks of `min_chunk_ms` to `max_chunk_ms` on sample boundaries.

    Holds back less than one minimum chunk between calls, so its buffer is bounded by
    `min_chunk_ms` of audio plus the frame being pushed.
    """

    def __init__(
        self,
        *,
        bytes_per_second: int,
        bytes_per_sample: int,
        min_chunk_ms: float = 100.0,
        max_chunk_ms: float = 200.0,
    ) -> None:
        if not 0 < min_chunk_ms <= max_chunk_ms:
            raise ValueError(
                f"need 0 < min_chunk_ms <= max_chunk_ms ({min_chunk_ms=}, {max_chunk_ms=})"
            )
        self.bytes_per_sample = bytes_per_sample
        self.min_chunk_bytes = self._whole_samples(bytes_per_second * min_chunk_ms / 1000.0)
        self.max_chunk_bytes = self._whole_samples(bytes_per_second * max_chunk_ms / 1000.0)
        self._pending = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        """Add one frame; return the chunks now complete (possibly none)."""
        if len(data) % self.bytes_per_sample:
            raise ValueError(
                f"{len(data)} bytes is not a whole number of {self.bytes_per_sample}-byte samples"
            )
        self._pending += data
        chunks: list[bytes] = []
        while len(self._pending) >= self.max_chunk_bytes:
            chunks.append(bytes(self._pending[: self.max_chunk_bytes]))
            del self._pending[: self.max_chunk_bytes]
        if len(self._pending) >= self.min_chunk_bytes:
            chunks.append(bytes(self._pending))
            self._pending.clear()
        return chunks

    def flush(self) -> bytes:
        """Everything held back (possibly empty): the tail at a pause or the end of the stream."""
        tail = bytes(self._pending)
        self._pending.clear()
        return tail

    def _whole_samples(self, size: float) -> int:
        return max(
            self.bytes_per_sample, int(size) // self.bytes_per_sample * self.bytes_per_sample
        )
