"""Partition logs on disk: appends, reads, recovery of a torn tail, the index, retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from broker.errors import ErrorCode
from broker.log import LogConfig, PartitionLog
from broker.records import read_header


def batch(*values: bytes, timestamp_ms: int = 1_000, producer: tuple[int, int] = (-1, -1)) -> bytes:
    """A v2 record batch as a producer sends it (base offset 0)."""
    producer_id, sequence = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=sequence,
        batch_size=1 << 20,
    )
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=timestamp_ms + delta, key=None, value=value, headers=[])
    return bytes(builder.build())


def append(log: PartitionLog, data: bytes) -> int:
    appended = log.append(data, read_header(data))
    assert appended.error == ErrorCode.NONE, appended.error.name
    return appended.base_offset


def values(data: bytes) -> list[tuple[int, bytes | None]]:
    """(offset, value) of every record in concatenated batches."""
    found = []
    position = 0
    while position < len(data):
        size = read_header(data, position).size
        for record in DefaultRecordBatch(data[position : position + size]):
            found.append((record.offset, record.value))
        position += size
    return found


def test_appends_get_consecutive_offsets_and_read_back(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig())
    assert append(log, batch(b"a", b"b")) == 0
    assert append(log, batch(b"c")) == 2
    assert log.next_offset == 3

    assert values(log.read(0, 1 << 20, at_least_one=True)) == [(0, b"a"), (1, b"b"), (2, b"c")]
    # Reading from inside a batch returns that whole batch; the client skips what it has.
    assert values(log.read(1, 1 << 20, at_least_one=True))[0] == (0, b"a")
    assert values(log.read(2, 1 << 20, at_least_one=True)) == [(2, b"c")]
    assert log.read(3, 1 << 20, at_least_one=True) == b""


def test_reads_stop_at_batch_boundaries_but_return_at_least_one_batch(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig())
    for i in range(3):
        append(log, batch(bytes([i]) * 100))
    one = len(batch(b"x" * 100))

    assert values(log.read(0, one + 10, at_least_one=False)) == [(0, b"\x00" * 100)]
    assert values(log.read(0, 10, at_least_one=True)) == [(0, b"\x00" * 100)]
    assert log.read(0, 10, at_least_one=False) == b""


def test_a_restart_keeps_everything_and_truncates_only_a_torn_tail(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig())
    append(log, batch(b"kept-1"))
    append(log, batch(b"kept-2"))
    log.close()
    segment = next(tmp_path.glob("*.log"))
    intact_size = segment.stat().st_size
    torn = batch(b"torn")
    with segment.open("ab") as handle:
        handle.write(torn[: len(torn) // 2])  # a write cut short by a crash

    reopened = PartitionLog(directory=tmp_path, config=LogConfig())

    assert segment.stat().st_size == intact_size
    assert reopened.next_offset == 2
    assert values(reopened.read(0, 1 << 20, at_least_one=True)) == [(0, b"kept-1"), (1, b"kept-2")]
    assert append(reopened, batch(b"after")) == 2


def test_a_corrupt_batch_and_everything_after_it_is_truncated(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig())
    append(log, batch(b"good"))
    append(log, batch(b"flipped"))
    log.close()
    segment = next(tmp_path.glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # inside the second batch's records: its CRC no longer matches
    segment.write_bytes(bytes(data))

    reopened = PartitionLog(directory=tmp_path, config=LogConfig())

    assert reopened.next_offset == 1
    assert values(reopened.read(0, 1 << 20, at_least_one=True)) == [(0, b"good")]


def test_segments_roll_and_sealed_indexes_reload(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1024)
    log = PartitionLog(directory=tmp_path, config=config)
    for i in range(40):
        append(log, batch(f"record-{i}".encode() * 5))
    log.close()
    assert len(list(tmp_path.glob("*.log"))) > 3
    assert len(list(tmp_path.glob("*.index"))) == len(list(tmp_path.glob("*.log"))) - 1

    reopened = PartitionLog(directory=tmp_path, config=config)
    assert reopened.next_offset == 40
    for offset in (0, 17, 39):
        assert values(reopened.read(offset, 1, at_least_one=True))[0][0] == offset


def test_a_sealed_segment_with_a_bad_index_is_rescanned(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1024)
    log = PartitionLog(directory=tmp_path, config=config)
    for i in range(20):
        append(log, batch(f"record-{i}".encode() * 5))
    log.close()
    first_index = sorted(tmp_path.glob("*.index"))[0]
    first_index.write_bytes(first_index.read_bytes()[:-5])

    reopened = PartitionLog(directory=tmp_path, config=config)

    assert reopened.next_offset == 20
    assert values(reopened.read(1, 1, at_least_one=True))[0][0] == 1


def test_offset_for_timestamp_finds_the_first_record_at_or_after(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig(segment_bytes=1024))
    append(log, batch(b"a", b"b", b"c", timestamp_ms=1_000))  # stamps 1000, 1001, 1002
    append(log, batch(b"d", timestamp_ms=5_000))
    for i in range(10):
        append(log, batch(b"pad" * 50, timestamp_ms=6_000 + i))

    assert log.offset_for_timestamp(0) == (0, 1_000)
    assert log.offset_for_timestamp(1_001) == (1, 1_001)
    assert log.offset_for_timestamp(1_003) == (3, 5_000)
    assert log.offset_for_timestamp(6_005) == (9, 6_005)
    assert log.offset_for_timestamp(7_000) is None


def test_an_idempotent_producers_retry_is_not_written_twice(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig())
    first = batch(b"once", producer=(7, 0))
    assert append(log, first) == 0
    assert append(log, batch(b"next", producer=(7, 1))) == 1
    assert append(log, first) == 0  # the retry of a batch already written
    assert log.next_offset == 2


def test_retention_by_bytes_drops_whole_old_segments(tmp_path: Path) -> None:
    log = PartitionLog(
        directory=tmp_path, config=LogConfig(segment_bytes=1024, retention_bytes=2048)
    )
    for i in range(60):
        append(log, batch(f"record-{i}".encode() * 5, timestamp_ms=int(time.time() * 1000)))

    removed = log.apply_retention(int(time.time() * 1000))

    assert removed > 0
    assert log.log_start_offset > 0
    assert log.next_offset == 60
    assert log.size_bytes - 1024 < 2048
    assert (
        values(log.read(log.log_start_offset, 1, at_least_one=True))[0][0] == log.log_start_offset
    )


def test_retention_by_time_drops_expired_data_even_in_the_active_segment(tmp_path: Path) -> None:
    log = PartitionLog(directory=tmp_path, config=LogConfig(retention_ms=60_000))
    now_ms = int(time.time() * 1000)
    append(log, batch(b"old", timestamp_ms=now_ms - 120_000))
    append(log, batch(b"old too", timestamp_ms=now_ms - 90_000))

    assert log.apply_retention(now_ms) == 1
    assert (log.log_start_offset, log.next_offset) == (2, 2)
    assert append(log, batch(b"new", timestamp_ms=now_ms)) == 2
    assert log.apply_retention(now_ms) == 0
    assert log.log_start_offset == 2


def test_compacted_logs_are_not_subject_to_retention(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1024, retention_ms=1, cleanup_policy="compact")
    log = PartitionLog(directory=tmp_path, config=config)
    for i in range(20):
        append(log, batch(f"record-{i}".encode() * 5, timestamp_ms=1))

    assert log.apply_retention(int(time.time() * 1000)) == 0
    assert log.log_start_offset == 0


def test_appends_reach_the_file_before_returning(tmp_path: Path) -> None:
    """What a kill -9 leaves behind: the file already holds every appended batch."""
    log = PartitionLog(directory=tmp_path, config=LogConfig())
    data = batch(b"durable")
    append(log, data)
    segment = next(tmp_path.glob("*.log"))
    assert os.path.getsize(segment) == len(data)
    assert segment.read_bytes()[8:] == data[8:]
