"""Idempotent producers on one partition: their epochs, recent sequences, and Kafka's rules.

Kafka's rules (ProducerStateManager / ProducerAppendInfo), for batches carrying a producer id:
- an epoch older than the producer's current one is refused with INVALID_PRODUCER_EPOCH;
- a newer epoch must start again at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a batch whose first and last sequence match one of the producer's last five batches is a
  retry of a batch already written: it is acknowledged with that batch's offset and not
  written again;
- otherwise the first sequence must follow the producer's last one (wrapping after 2^31 - 1),
  else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer the partition knows nothing of (new, or all its batches gone with retention or
  DeleteRecords) may start at any sequence.
The state is rebuilt at start-up from the batches of the newest segment.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from broker.errors import ErrorCode
from broker.records import BatchHeader

logger = logging.getLogger(__name__)

BATCHES_KEPT: Final = 5  # what an idempotent producer may have in flight per partition
_MAX_SEQUENCE: Final = 0x7FFF_FFFF


@dataclass(frozen=True, slots=True)
class _Batch:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class _Producer:
    epoch: int
    batches: deque[_Batch] = field(default_factory=lambda: deque(maxlen=BATCHES_KEPT))


@dataclass(frozen=True, slots=True)
class SequenceCheck:
    """What to do with a batch: refuse it (error), acknowledge an earlier copy, or append."""

    error: ErrorCode = ErrorCode.NONE
    duplicate_of: int | None = None  # base offset of the batch this one repeats


APPEND: Final = SequenceCheck()


class ProducerStates:
    """Producer id -> epoch and last batches, for one partition."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}

    def check(self, header: BatchHeader) -> SequenceCheck:
        known = self._producers.get(header.producer_id) if header.producer_id >= 0 else None
        if known is None:
            return APPEND
        if header.producer_epoch < known.epoch:
            return SequenceCheck(ErrorCode.INVALID_PRODUCER_EPOCH)
        if header.producer_epoch > known.epoch:
            in_order = header.base_sequence == 0
        else:
            span = (header.base_sequence, header.last_sequence & _MAX_SEQUENCE)
            for batch in known.batches:
                if (batch.first_sequence, batch.last_sequence) == span:
                    return SequenceCheck(duplicate_of=batch.base_offset)
            in_order = not known.batches or _follows(
                known.batches[-1].last_sequence, header.base_sequence
            )
        return APPEND if in_order else SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)

    def remember(self, header: BatchHeader, base_offset: int) -> None:
        """Record a batch just appended at `base_offset`."""
        if header.producer_id < 0:
            return
        known = self._producers.get(header.producer_id)
        if known is None or known.epoch != header.producer_epoch:
            known = self._producers[header.producer_id] = _Producer(header.producer_epoch)
        known.batches.append(
            _Batch(
                header.base_sequence,
                header.last_sequence & _MAX_SEQUENCE,
                base_offset,
                base_offset + header.last_offset_delta,
            )
        )

    def forget_before(self, log_start_offset: int) -> None:
        """Drop producers none of whose batches are left (DeleteRecords, retention), as Kafka
        does; they may then start at any sequence."""
        gone = [
            producer_id
            for producer_id, known in self._producers.items()
            if not known.batches or known.batches[-1].last_offset < log_start_offset
        ]
        for producer_id in gone:
            del self._producers[producer_id]


def _follows(last_sequence: int, next_sequence: int) -> bool:
    return next_sequence == last_sequence + 1 or (
        next_sequence == 0 and last_sequence == _MAX_SEQUENCE
    )
