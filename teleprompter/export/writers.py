"""One file per event type, written as records stream in, in bounded memory.

A Parquet writer buffers rows column by column and writes a row group whenever the buffer
reaches `row_group_rows` rows or about `row_group_bytes` bytes, so memory stays bounded whatever
the export's size. A JSON lines writer writes each event as it comes. Both write to a hidden
temporary name and rename on `close`, so a failed export leaves no half-written file behind.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from teleprompter.event_log.reader import RecordedEvent

logger = logging.getLogger(__name__)

ExportFormat = Literal["parquet", "jsonl"]

ROW_GROUP_ROWS: Final = 100_000
ROW_GROUP_BYTES: Final = 64 * 1024 * 1024
# What a row costs beyond its strings and bytes, for the buffer's byte estimate.
_ROW_OVERHEAD_BYTES: Final = 64
_KAFKA_COLUMNS: Final = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp")


class EventFileWriter(Protocol):
    path: Path
    rows: int

    def write(self, record: RecordedEvent) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def open_writer(
    directory: Path, name: str, schema: pa.Schema, output: ExportFormat
) -> EventFileWriter:
    """A writer for `<directory>/<name>.parquet` (or `.jsonl`) with the columns of `schema`."""
    if output == "parquet":
        return ParquetEventWriter(directory / f"{name}.parquet", schema)
    return JsonLinesEventWriter(directory / f"{name}.jsonl", schema)


class ParquetEventWriter:
    """Typed columns (`schema`), zstd-compressed, row groups of bounded size."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
    ) -> None:
        self.path = path
        self.rows = 0
        self._schema = schema
        self._fields = [name for name in schema.names if name not in _KAFKA_COLUMNS]
        self._row_group_rows = row_group_rows
        self._row_group_bytes = row_group_bytes
        self._partial = _partial_path(path)
        self._writer = pq.ParquetWriter(self._partial, schema, compression="zstd")
        self._columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._buffered_rows = 0
        self._buffered_bytes = 0

    def write(self, record: RecordedEvent) -> None:
        columns = self._columns
        columns["kafka_topic"].append(record.topic)
        columns["kafka_partition"].append(record.partition)
        columns["kafka_offset"].append(record.offset)
        columns["kafka_timestamp"].append(record.timestamp_ms if record.timestamp_ms >= 0 else None)
        size = _ROW_OVERHEAD_BYTES
        event = record.event
        for name in self._fields:
            value = getattr(event, name)
            if isinstance(value, str | bytes):
                size += len(value)
            columns[name].append(value)
        self._buffered_rows += 1
        self._buffered_bytes += size
        self.rows += 1
        if (
            self._buffered_rows >= self._row_group_rows
            or self._buffered_bytes >= self._row_group_bytes
        ):
            self._flush()

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._partial.replace(self.path)

    def abort(self) -> None:
        self._writer.close()
        self._partial.unlink(missing_ok=True)

    def _flush(self) -> None:
        if not self._buffered_rows:
            return
        batch = pa.RecordBatch.from_pydict(self._columns, schema=self._schema)
        self._writer.write_batch(batch)
        for values in self._columns.values():
            values.clear()
        self._buffered_rows = 0
        self._buffered_bytes = 0


class JsonLinesEventWriter:
    """One JSON object per event: the Kafka columns, then the event's fields as decoded
    (times stay epoch milliseconds, bytes become base64)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.rows = 0
        self._fields = [name for name in schema.names if name not in _KAFKA_COLUMNS]
        self._partial = _partial_path(path)
        self._file = self._partial.open("w", encoding="utf-8")

    def write(self, record: RecordedEvent) -> None:
        row: dict[str, Any] = {
            "kafka_topic": record.topic,
            "kafka_partition": record.partition,
            "kafka_offset": record.offset,
            "kafka_timestamp": record.timestamp_ms if record.timestamp_ms >= 0 else None,
        }
        event = record.event
        for name in self._fields:
            value = getattr(event, name)
            row[name] = (
                base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
            )
        self._file.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._file.close()
        self._partial.replace(self.path)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")
