"""`teleprompter export`: every event of a time range, one file per event type.

Each catalog topic is read from the offsets its time index gives for `--from` to those for
`--to` (every partition, or with `--conversation` only those conversations' partitions), and
the per-gateway reply topics for the token deltas they carry (their copies of outcomes and
transcripts are left out: the originals are on their own topics). Events are kept when their
event time is in [from, to). Nothing is written to Kafka.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Never, TextIO

from tqdm import tqdm

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from schemas.codec import EventCodec, default_codec
from schemas.events import Event, SuggestionEvent
from teleprompter.event_log.partitions import partition_for_key
from teleprompter.event_log.reader import (
    EventLogError,
    EventLogReader,
    PartitionRange,
    RecordedEvent,
    UndecodableRecord,
    UnknownTopicError,
)
from teleprompter.event_log.times import format_time
from teleprompter.export.arrow_schema import event_schema
from teleprompter.export.writers import EventFileWriter, ExportFormat, open_writer
from teleprompter.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    from_ms: int
    to_ms: int
    directory: Path
    output: ExportFormat = "parquet"
    conversations: tuple[str, ...] = ()
    deltas: bool = True


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What was written: rows per file, events in all, and how long it took."""

    files: dict[Path, int]
    events: int
    undecodable: int
    seconds: float
    per_conversation: dict[str, int]

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def export(
    settings: Settings,
    request: ExportRequest,
    *,
    out: TextIO,
    err: Callable[[str], None],
    progress: bool | None = None,
) -> int:
    """Run the export and print what it wrote; returns the exit code."""
    try:
        report = export_events(settings, request, err=err, progress=progress)
    except UnknownTopicError as exc:
        err(f"teleprompter: {exc}")
        return EXIT_USAGE
    except (EventLogError, OSError) as exc:
        err(f"teleprompter: export failed: {exc}")
        return EXIT_FAILED
    missing = [cid for cid, rows in report.per_conversation.items() if rows == 0]
    if request.conversations and len(missing) == len(request.conversations):
        err(
            f"teleprompter: no events of conversation {', '.join(map(repr, missing))} "
            f"from {format_time(request.from_ms)} to {format_time(request.to_ms)}"
        )
        return EXIT_USAGE
    for cid in missing:
        err(f"teleprompter: no events of conversation {cid!r} in the range")
    width = max(len(str(path)) for path in report.files)
    out.write(f"{'FILE':<{width}}  ROWS\n")
    for path, rows in report.files.items():
        out.write(f"{path!s:<{width}}  {rows}\n")
    out.write(
        f"{report.events} events from {format_time(request.from_ms)} to "
        f"{format_time(request.to_ms)} in {report.seconds:.1f} s "
        f"({report.events_per_s:,.0f} events/s)\n"
    )
    if report.undecodable:
        err(f"teleprompter: skipped {report.undecodable} undecodable records (see the log)")
    return EXIT_OK


def export_events(
    settings: Settings,
    request: ExportRequest,
    *,
    codec: EventCodec | None = None,
    err: Callable[[str], None] = print,
    progress: bool | None = None,
) -> ExportReport:
    """Write the files; raises `EventLogError`/`UnknownTopicError` (no file is left then)."""
    codec = codec or default_codec()
    catalog = TopicCatalog.from_settings(settings)
    keys = [cid.encode() for cid in request.conversations] or None
    started = time.perf_counter()
    with EventLogReader(
        bootstrap_servers=settings.bootstrap_servers, codec=codec, keys=keys
    ) as reader:
        counts = reader.partition_counts(spec.name for spec in catalog.shared_topics)
        reply_prefix = catalog.reply_topic("").name
        if request.deltas:
            counts.update(
                {t: n for t, n in sorted(reader.topics().items()) if t.startswith(reply_prefix)}
            )
        ranges = reader.ranges(
            _partitions(counts, keys, reply_prefix),
            from_ms=request.from_ms,
            to_ms=request.to_ms,
        )
        request.directory.mkdir(parents=True, exist_ok=True)
        writers = _writers(codec, request)
        per_conversation = dict.fromkeys(request.conversations, 0)
        events = undecodable = shown = 0
        try:
            with _progress_bar(ranges, enabled=progress) as bar:
                reader.assign(ranges)
                while not reader.finished:
                    for record in reader.poll():
                        if isinstance(record, UndecodableRecord):
                            undecodable += 1
                            logger.warning("skipped an undecodable record: %s", record.reason)
                            continue
                        if not _exported(record, request, reply_prefix):
                            continue
                        writers[type(record.event)].write(record)
                        events += 1
                        if record.event.conversation_id in per_conversation:
                            per_conversation[record.event.conversation_id] += 1
                    bar.update(reader.offsets_read - shown)
                    shown = reader.offsets_read
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        for writer in writers.values():
            writer.close()
    return ExportReport(
        files={writer.path: writer.rows for writer in writers.values()},
        events=events,
        undecodable=undecodable,
        seconds=time.perf_counter() - started,
        per_conversation=per_conversation,
    )


def _partitions(
    counts: dict[str, int], keys: list[bytes] | None, reply_prefix: str
) -> list[tuple[str, int]]:
    """Every partition, or only the keys' partitions of keyed topics (reply topics: all)."""
    wanted: list[tuple[str, int]] = []
    for topic, partitions in counts.items():
        if keys is None or topic.startswith(reply_prefix):
            wanted += [(topic, p) for p in range(partitions)]
        else:
            wanted += [(topic, p) for p in sorted({partition_for_key(k, partitions) for k in keys})]
    return wanted


def _exported(record: RecordedEvent, request: ExportRequest, reply_prefix: str) -> bool:
    event: Event = record.event
    if not request.from_ms <= event.event_time_ms < request.to_ms:
        return False
    if record.topic.startswith(reply_prefix):
        # Reply topics add the token deltas; the rest there are copies for the gateway.
        return isinstance(event, SuggestionEvent) and event.kind == "delta"
    return True


def _writers(codec: EventCodec, request: ExportRequest) -> dict[type[Event], EventFileWriter]:
    writers: dict[type[Event], EventFileWriter] = {}
    try:
        for event_type, version in codec.schemas.newest.items():
            # Files are named as the schema directories are: suggestion_event.parquet, ...
            writers[event_type] = open_writer(
                request.directory, version.path.parent.name, event_schema(version), request.output
            )
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return writers


def _progress_bar(ranges: Iterable[PartitionRange], *, enabled: bool | None) -> tqdm[Never]:
    """A bar over the offsets to read, on stderr; by default only when stderr is a terminal."""
    total = sum((r.end or r.start) - r.start for r in ranges)
    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(
        total=total, unit="rec", unit_scale=True, file=sys.stderr, desc="export", disable=not show
    )
