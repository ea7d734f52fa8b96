"""Record batches (message format v2): header fields, validation, offset assignment.

The broker stores batches exactly as producers sent them, compressed or not, rewriting only
the base offset (which the batch CRC does not cover). Records are opened only to answer a
ListOffsets-by-timestamp precisely.
"""

from __future__ import annotations

import logging
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.util import calc_crc32c

logger = logging.getLogger(__name__)

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_BATCH_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
BATCH_HEADER_SIZE: Final = _BATCH_HEADER.size  # 61
LOG_OVERHEAD: Final = 12  # baseOffset and batchLength precede the length-counted part
_CRC_START: Final = 21  # the CRC covers attributes onwards
_BASE_OFFSET: Final = struct.Struct(">q")

ByteSource = bytes | bytearray | memoryview | mmap.mmap

LOG_APPEND_TIME_FLAG: Final = 0x08
TRANSACTIONAL_FLAG: Final = 0x10
CONTROL_FLAG: Final = 0x20
_ATTRIBUTES: Final = struct.Struct(">h")
_CRC: Final = struct.Struct(">I")
_MAX_TIMESTAMP_AT: Final = 35  # after attributes (21), last offset delta, base timestamp


class InvalidBatchError(ValueError):
    """Bytes that are not a well-formed v2 record batch; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    size: int  # whole batch, including the 12-byte log overhead
    magic: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        return self.base_sequence + self.last_offset_delta


def read_header(buffer: ByteSource, position: int = 0) -> BatchHeader:
    """The header of the batch at `position`; checks only that the header itself is sane."""
    if len(buffer) - position < BATCH_HEADER_SIZE:
        raise InvalidBatchError("truncated batch header")
    (
        base_offset,
        length,
        _leader_epoch,
        magic,
        _crc,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    ) = _BATCH_HEADER.unpack_from(buffer, position)
    if magic != 2:
        raise InvalidBatchError(f"record batch magic {magic}; only v2 (magic 2) is supported")
    if length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
        raise InvalidBatchError(f"record batch length {length} is shorter than its header")
    if last_offset_delta < 0 or record_count < 0:
        raise InvalidBatchError("negative record count or offset delta")
    return BatchHeader(
        base_offset=base_offset,
        size=length + LOG_OVERHEAD,
        magic=magic,
        attributes=attributes,
        last_offset_delta=last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        record_count=record_count,
    )


def check_crc(buffer: ByteSource, position: int, header: BatchHeader) -> bool:
    end = position + header.size
    if end > len(buffer):
        return False
    (stored,) = struct.unpack_from(">I", buffer, position + 17)
    return bool(calc_crc32c(bytes(buffer[position + _CRC_START : end])) == stored)


def iter_batches(buffer: ByteSource, *, verify_crc: bool) -> Iterator[BatchHeader]:
    """Every complete batch in `buffer`; raises InvalidBatchError at the first bad one."""
    position = 0
    while position < len(buffer):
        header = read_header(buffer, position)
        if position + header.size > len(buffer):
            raise InvalidBatchError("record batch runs past the end of the data")
        if verify_crc and not check_crc(buffer, position, header):
            raise InvalidBatchError("record batch CRC does not match its contents")
        yield header
        position += header.size


def with_base_offset(batch: bytes, base_offset: int) -> bytes:
    """The same batch renumbered to start at `base_offset` (CRC stays valid)."""
    return _BASE_OFFSET.pack(base_offset) + batch[8:]


def with_log_append_time(batch: bytes, now_ms: int) -> bytes:
    """The batch stamped with the broker's clock (message.timestamp.type=LogAppendTime).

    As Kafka does for v2 batches: the timestamp-type attribute is set and the max timestamp
    becomes the append time, which readers then give every record; the CRC is recomputed.
    """
    stamped = bytearray(batch)
    (attributes,) = _ATTRIBUTES.unpack_from(stamped, _CRC_START)
    _ATTRIBUTES.pack_into(stamped, _CRC_START, attributes | LOG_APPEND_TIME_FLAG)
    _BASE_OFFSET.pack_into(stamped, _MAX_TIMESTAMP_AT, now_ms)
    _CRC.pack_into(stamped, 17, calc_crc32c(bytes(stamped[_CRC_START:])))
    return bytes(stamped)


def first_at_or_after(batch: bytes, timestamp_ms: int) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record in `batch` stamped at or after `timestamp_ms`.

    Opens the records (decompressing if needed); if the codec is unavailable, falls back to
    the batch's first offset and maximum timestamp, which is never later than the true answer.
    """
    try:
        for record in DefaultRecordBatch(batch):
            if record.timestamp >= timestamp_ms:
                return record.offset, record.timestamp
        return None
    except Exception:  # any codec failure degrades to the batch-level answer
        header = read_header(batch)
        logger.debug("cannot open batch at offset %d for timestamp lookup", header.base_offset)
        if header.max_timestamp >= timestamp_ms:
            return header.base_offset, header.max_timestamp
        return None
