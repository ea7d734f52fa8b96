"""Writers: bounded row groups, typed values, nothing left behind by a failed export."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from schemas.codec import default_codec
from schemas.events import AudioChunk
from teleprompter.event_log.reader import RecordedEvent
from teleprompter.export.arrow_schema import event_schema
from teleprompter.export.writers import ParquetEventWriter, open_writer

SCHEMA = event_schema(default_codec().schema_for(AudioChunk))


def chunk(offset: int, size: int = 1000) -> RecordedEvent:
    event = AudioChunk(
        conversation_id="c",
        event_time_ms=1_700_000_000_000 + offset,
        session_id="s",
        seq=offset,
        audio=b"\1" * size,
    )
    return RecordedEvent(
        topic="tp.audio", partition=2, offset=offset, timestamp_ms=event.event_time_ms, event=event
    )


def test_row_groups_are_bounded_in_rows_and_bytes(tmp_path: Path) -> None:
    by_rows = ParquetEventWriter(tmp_path / "rows.parquet", SCHEMA, row_group_rows=100)
    by_bytes = ParquetEventWriter(tmp_path / "bytes.parquet", SCHEMA, row_group_bytes=50_000)
    for offset in range(250):
        by_rows.write(chunk(offset))
        by_bytes.write(chunk(offset))
    by_rows.close()
    by_bytes.close()

    rows = pq.ParquetFile(tmp_path / "rows.parquet")
    assert [rows.metadata.row_group(i).num_rows for i in range(rows.num_row_groups)] == [
        100,
        100,
        50,
    ]
    sizes = pq.ParquetFile(tmp_path / "bytes.parquet").metadata
    assert (
        sizes.num_row_groups == 250 // 47 + 1
    )  # 47 rows of ~1,083 B (audio, strings, overhead) reach 50,000 B
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.num_rows == 250
    assert table.column("audio")[3].as_py() == b"\1" * 1000
    assert table.column("kafka_offset").to_pylist() == list(range(250))


def test_files_appear_only_when_complete(tmp_path: Path) -> None:
    done = open_writer(tmp_path, "done", SCHEMA, "jsonl")
    failed = open_writer(tmp_path, "failed", SCHEMA, "parquet")
    done.write(chunk(0))
    failed.write(chunk(0))
    assert list(tmp_path.glob("*.jsonl")) == list(tmp_path.glob("*.parquet")) == []

    done.close()
    failed.abort()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.jsonl"]
