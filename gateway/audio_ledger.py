"""Where each byte of a connection's audio stands: held, sent to Kafka, stored or refused.

Audio acks count bytes of the client's audio stream. The gateway re-chunks frames, so one
Kafka record may hold parts of several frames; the ledger keeps the byte ranges it handed on,
in stream order, and reports the offset before which every byte has an outcome.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class AudioRange:
    """Bytes [start, end) of the stream, sent to Kafka or refused; `settled` once decided.

    `stream` is the tag of the stream it belongs to (None: a connection's untagged stream).
    """

    start: int
    end: int
    stream: int | None = None
    settled: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


class AudioLedger:
    """Byte offsets of one audio stream: received, handed on (produced or refused), settled.

    `received - handed` bytes are held by the framer; `settled` only moves forward, over a
    run of settled ranges.
    """

    def __init__(self, *, offset: int = 0, stream: int | None = None) -> None:
        self.stream = stream
        self.received = offset
        self.handed = offset
        self.settled = offset
        self._ranges: deque[AudioRange] = deque()

    @property
    def held(self) -> int:
        return self.received - self.handed

    def receive(self, size: int) -> int:
        """`size` more bytes arrived; returns the offset of the first."""
        start = self.received
        self.received += size
        return start

    def hand_on(self, size: int) -> AudioRange:
        """The next `size` received bytes leave the framer (a chunk to Kafka, or a refusal)."""
        if size > self.held:
            raise ValueError(f"only {self.held} bytes are held, not {size}")
        piece = AudioRange(start=self.handed, end=self.handed + size, stream=self.stream)
        self.handed += size
        self._ranges.append(piece)
        return piece

    def refuse(self, size: int) -> AudioRange:
        """`size` bytes just received and refused at once (nothing held may precede them)."""
        if self.held:
            raise ValueError(f"{self.held} earlier bytes are still held; hand them on first")
        self.receive(size)
        piece = self.hand_on(size)
        self.settle(piece)
        return piece

    def skip_to(self, offset: int) -> None:
        """The client's next bytes start at `offset`: it dropped the ones in between."""
        if self.held:
            raise ValueError(f"{self.held} earlier bytes are still held; hand them on first")
        if offset < self.received:
            raise ValueError(f"offset {offset} is behind the {self.received} bytes received")
        gap = offset - self.received
        self.receive(gap)
        self.settle(self.hand_on(gap))

    def settle(self, piece: AudioRange) -> bool:
        """`piece` has its outcome; True if that moved `settled` forward."""
        piece.settled = True
        before = self.settled
        # Ranges are contiguous from `settled`, in stream order.
        while self._ranges and self._ranges[0].settled:
            self.settled = self._ranges.popleft().end
        return self.settled > before
