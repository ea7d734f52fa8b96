"""One partition's log: append-only segment files with an offset/timestamp index.

Layout per partition directory: `<base offset>.log` holds record batches back to back, as
produced (only the base offset rewritten); `<base offset>.index` holds one entry per batch
(last offset, file position, running maximum timestamp) and is written when a segment is
sealed. The active segment's index lives in memory and is rebuilt at start-up by scanning
the segment, which is also where a torn tail (a batch cut short or failing its CRC) is found
and truncated.

Durability: an append is written to the segment file (the OS page cache) before it is
acknowledged, so it survives a kill -9 of the broker; `flush()` fsyncs, and the server calls
it periodically and at shutdown, which bounds what a power loss can take.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import mmap
import os
import struct
import time
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

from broker.errors import ErrorCode
from broker.producers import ProducerStates
from broker.records import (
    BatchHeader,
    InvalidBatchError,
    check_crc,
    first_at_or_after,
    read_header,
    with_base_offset,
    with_log_append_time,
)
from broker.storage import write_json_atomically

logger = logging.getLogger(__name__)

_INDEX_ENTRY: Final = struct.Struct(">qqq")  # last offset, position, running max timestamp
_LOG_SUFFIX: Final = ".log"
_INDEX_SUFFIX: Final = ".index"
_LOG_START_FILE: Final = "log-start-offset"  # moved by DeleteRecords; Kafka's checkpoint

CleanupPolicy = Literal["delete", "compact", "compact,delete"]
TimestampType = Literal["CreateTime", "LogAppendTime"]


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Per-topic settings the log obeys (Kafka's topic config names, typed)."""

    segment_bytes: int = 64 * 1024 * 1024
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1: keep forever
    retention_bytes: int = -1  # -1: no size limit
    cleanup_policy: CleanupPolicy = "delete"
    max_message_bytes: int = 1024 * 1024 + 12
    timestamp_type: TimestampType = "CreateTime"


@dataclass(frozen=True, slots=True)
class Appended:
    """A produced batch's outcome: its base offset, or the error it was refused with."""

    error: ErrorCode
    base_offset: int = -1
    log_append_time: int = -1  # the broker's stamp, for LogAppendTime topics


class Segment:
    """One segment file and its in-memory index."""

    def __init__(self, directory: Path, base_offset: int) -> None:
        self.base_offset = base_offset
        self.log_path = directory / f"{base_offset:020d}{_LOG_SUFFIX}"
        self.index_path = directory / f"{base_offset:020d}{_INDEX_SUFFIX}"
        self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.last_offsets = array("q")
        self.positions = array("q")
        self.max_timestamps = array("q")  # running maximum, so it can be bisected
        self.created_s = time.time()

    # --- loading -------------------------------------------------------------------------

    def load_index(self) -> bool:
        """Load the sealed index if it matches the log exactly; False means rescan."""
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return False
        if not raw or len(raw) % _INDEX_ENTRY.size:
            return False
        entries = list(_INDEX_ENTRY.iter_unpack(raw))
        last_offset, position, _ = entries[-1]
        try:
            header = read_header(os.pread(self._fd, 61, position))
        except InvalidBatchError:
            return False
        if position + header.size != self.size or header.last_offset != last_offset:
            return False
        for last, pos, max_ts in entries:
            self.last_offsets.append(last)
            self.positions.append(pos)
            self.max_timestamps.append(max_ts)
        return True

    def recover(self) -> list[BatchHeader]:
        """Rebuild the index by scanning; truncate at the first incomplete or corrupt batch."""
        self.last_offsets = array("q")
        self.positions = array("q")
        self.max_timestamps = array("q")
        headers: list[BatchHeader] = []
        valid_end = 0
        if self.size:
            with mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ) as data:
                position = 0
                while position < self.size:
                    try:
                        header = read_header(data, position)
                    except InvalidBatchError:
                        break
                    if not check_crc(data, position, header):
                        break
                    if header.base_offset != self.next_offset:
                        break  # a batch out of sequence cannot have been written by us
                    self._index(header, position)
                    headers.append(header)
                    position += header.size
                valid_end = position
        if valid_end != self.size:
            logger.warning(
                "%s: truncating %d bytes of torn or corrupt tail after offset %d",
                self.log_path,
                self.size - valid_end,
                self.next_offset - 1,
            )
            os.ftruncate(self._fd, valid_end)
            self.size = valid_end
        return headers

    # --- writing ---------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        return self.last_offsets[-1] + 1 if self.last_offsets else self.base_offset

    @property
    def largest_timestamp(self) -> int:
        return self.max_timestamps[-1] if self.max_timestamps else -1

    def _index(self, header: BatchHeader, position: int) -> None:
        running = max(self.largest_timestamp, header.max_timestamp)
        self.last_offsets.append(header.last_offset)
        self.positions.append(position)
        self.max_timestamps.append(running)

    def append(self, batch: bytes, header: BatchHeader) -> None:
        view = memoryview(batch)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._index(header, self.size)
        self.size += len(batch)

    def write_index(self) -> None:
        entries = zip(self.last_offsets, self.positions, self.max_timestamps, strict=True)
        self.index_path.write_bytes(b"".join(_INDEX_ENTRY.pack(*entry) for entry in entries))

    def fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError:  # closed meanwhile by retention: nothing left to protect
            logger.debug("fsync skipped for closed segment %s", self.log_path)

    # --- reading ---------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, at_least_one: bool) -> bytes:
        """Whole batches from the one holding `offset`, up to `max_bytes` (or one batch)."""
        first = bisect.bisect_left(self.last_offsets, offset)
        if first == len(self.last_offsets):
            return b""
        start = self.positions[first]
        limit = start + max_bytes
        fitting = bisect.bisect_right(self.positions, limit)
        if fitting == len(self.positions) and self.size <= limit:
            end = self.size
        elif fitting - 1 > first:
            end = self.positions[fitting - 1]
        elif at_least_one:
            end = self.positions[first + 1] if first + 1 < len(self.positions) else self.size
        else:
            return b""
        return os.pread(self._fd, end - start, start)

    def batch_at_timestamp(self, timestamp_ms: int) -> bytes | None:
        """The first batch holding a record stamped at or after `timestamp_ms`."""
        index = bisect.bisect_left(self.max_timestamps, timestamp_ms)
        if index == len(self.max_timestamps):
            return None
        start = self.positions[index]
        end = self.positions[index + 1] if index + 1 < len(self.positions) else self.size
        return os.pread(self._fd, end - start, start)

    def close(self) -> None:
        os.close(self._fd)

    def delete(self) -> None:
        self.close()
        self.log_path.unlink(missing_ok=True)
        self.index_path.unlink(missing_ok=True)


class PartitionLog:
    """A partition's segments, its offsets, and the fetches waiting for its next record."""

    def __init__(self, *, directory: Path, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: list[Segment] = []
        self._waiters: set[asyncio.Future[None]] = set()
        self._producers = ProducerStates()
        self._deleted_up_to = 0  # DeleteRecords' low watermark (may fall inside a segment)
        self._dirty = False
        self._unsynced: list[Segment] = []
        self._load()

    def _load(self) -> None:
        bases = sorted(int(path.stem) for path in self.directory.glob(f"*{_LOG_SUFFIX}"))
        for base in bases:
            segment = Segment(self.directory, base)
            is_last = base == bases[-1]
            if is_last or not segment.load_index():
                headers = segment.recover()
                if is_last:
                    for header in headers:
                        self._producers.remember(header, header.base_offset)
            self._segments.append(segment)
        if not self._segments:
            self._segments.append(Segment(self.directory, 0))
        start_file = self.directory / _LOG_START_FILE
        if start_file.exists():
            self._deleted_up_to = min(int(start_file.read_text()), self.next_offset)

    # --- offsets ---------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return max(self._segments[0].base_offset, self._deleted_up_to)

    @property
    def next_offset(self) -> int:
        """The log end offset, which is also the high watermark on a single node."""
        return self._segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    # --- appending -------------------------------------------------------------------------

    def append(self, batch: bytes, header: BatchHeader) -> Appended:
        """Append one produced batch, applying idempotent producers' sequence rules.

        A retried batch of an idempotent producer (producers.py) is not written again: it is
        acknowledged with the offset it got the first time.
        """
        check = self._producers.check(header)
        if check.error != ErrorCode.NONE:
            logger.info(
                "%s: batch from producer %d (epoch %d, sequence %d) refused: %s",
                self.directory.name,
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                check.error.name,
            )
            return Appended(check.error)
        if check.duplicate_of is not None:
            logger.debug("duplicate batch from producer %d acknowledged", header.producer_id)
            return Appended(ErrorCode.NONE, check.duplicate_of)
        offset = self.next_offset
        append_time = -1
        if self.config.timestamp_type == "LogAppendTime":
            append_time = int(time.time() * 1000)
            batch = with_log_append_time(batch, append_time)
            header = replace(header, max_timestamp=append_time)
        active = self._segments[-1]
        if active.size and active.size + len(batch) > self.config.segment_bytes:
            active = self._roll()
        active.append(with_base_offset(batch, offset), replace(header, base_offset=offset))
        self._producers.remember(header, offset)
        self._dirty = True
        self._wake()
        return Appended(ErrorCode.NONE, offset, append_time)

    def _roll(self) -> Segment:
        sealed = self._segments[-1]
        sealed.write_index()
        self._unsynced.append(sealed)
        segment = Segment(self.directory, self.next_offset)
        self._segments.append(segment)
        logger.debug("%s: rolled new segment at offset %d", self.directory, segment.base_offset)
        return segment

    def delete_records(self, before_offset: int) -> int:
        """DeleteRecords: records before `before_offset` are gone; returns the new log start.

        Whole segments below it are removed; the new start is written (and fsynced) before
        the answer, so a restart keeps it.
        """
        if before_offset <= self.log_start_offset:
            return self.log_start_offset
        self._deleted_up_to = before_offset
        write_json_atomically(self.directory / _LOG_START_FILE, before_offset)
        while len(self._segments) > 1 and self._segments[1].base_offset <= before_offset:
            self._remove_oldest_segment()
        self._producers.forget_before(before_offset)
        logger.info("%s: records before offset %d deleted", self.directory.name, before_offset)
        return self.log_start_offset

    def _remove_oldest_segment(self) -> Segment:
        oldest = self._segments.pop(0)
        if oldest in self._unsynced:
            self._unsynced.remove(oldest)
        oldest.delete()
        return oldest

    # --- waiting for data ------------------------------------------------------------------

    def add_waiter(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.add(waiter)

    def remove_waiter(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.discard(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    # --- reading ---------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, at_least_one: bool) -> bytes:
        """Batches from `offset` on, whole batches only, at most `max_bytes` (or one batch)."""
        index = bisect.bisect_right([s.base_offset for s in self._segments], offset) - 1
        for segment in self._segments[max(index, 0) :]:
            data = segment.read(offset, max_bytes, at_least_one=at_least_one)
            if data:
                return data
        return b""

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record stamped at or after `timestamp_ms`."""
        for segment in self._segments:
            if segment.largest_timestamp < timestamp_ms:
                continue
            batch = segment.batch_at_timestamp(timestamp_ms)
            if batch is not None:
                found = first_at_or_after(batch, timestamp_ms)
                if found is not None:
                    return found
        return None

    # --- housekeeping ----------------------------------------------------------------------

    def segments_to_sync(self) -> list[Segment]:
        """Segments written since the last call, to fsync off the event loop."""
        segments, self._unsynced = self._unsynced, []
        if self._dirty:
            self._dirty = False
            segments.append(self._segments[-1])
        return segments

    def flush(self) -> None:
        for segment in self.segments_to_sync():
            segment.fsync()

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole segments past retention.ms / retention.bytes; returns how many."""
        if "delete" not in self.config.cleanup_policy:
            return 0
        retention_ms = self.config.retention_ms
        active = self._segments[-1]
        if retention_ms >= 0 and active.size and now_ms - _age_stamp(active) > retention_ms:
            self._roll()  # the whole active segment is expired: seal it so it can go
        removed = 0
        total = self.size_bytes
        while len(self._segments) > 1:
            oldest = self._segments[0]
            expired = retention_ms >= 0 and now_ms - _age_stamp(oldest) > retention_ms
            oversized = (
                self.config.retention_bytes >= 0
                and total - oldest.size >= self.config.retention_bytes
            )
            if not (expired or oversized):
                break
            total -= self._remove_oldest_segment().size
            removed += 1
        if removed:
            logger.info(
                "%s: retention removed %d segment(s); log now starts at %d",
                self.directory,
                removed,
                self.log_start_offset,
            )
        return removed

    def close(self) -> None:
        self._wake()
        self.flush()
        for segment in self._segments:
            segment.close()


def _age_stamp(segment: Segment) -> int:
    """When a segment's newest data was written, for time retention (ms)."""
    if segment.largest_timestamp >= 0:
        return segment.largest_timestamp
    return int(segment.created_s * 1000)
