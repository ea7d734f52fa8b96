"""Ranges of partitions read with an assign-only consumer, filtered by key and decoded.

The reader never subscribes: it assigns the partitions it was asked for, so it forms no consumer
group, commits nothing and writes nothing to Kafka, whatever it reads. Where to start and stop
comes from the broker's time index (`offsets_for_times`) and watermarks, so a time range costs
the records in it, not the topic. Memory is bounded by librdkafka's prefetch queue
(`queue_kbytes`) and the batch a caller takes at a time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from schemas.codec import EventCodec
from schemas.errors import SchemaError
from schemas.events import Event

logger = logging.getLogger(__name__)
_librdkafka_logger = logger.getChild("librdkafka")

DEFAULT_TIMEOUT_S: Final = 10.0
# Record timestamps are stamped when a producer sends, event times when the event is made, on
# hosts whose clocks may differ: seek this much wider than asked, then filter on event time.
CLOCK_SLACK_MS: Final = 60_000
# A bounded read that gets no record for this long while partitions remain is stuck.
STALL_TIMEOUT_S: Final = 30.0
BATCH_SIZE: Final = 1000
_TIMESTAMP_NOT_AVAILABLE: Final = confluent_kafka.TIMESTAMP_NOT_AVAILABLE


class EventLogError(RuntimeError):
    """Kafka could not be read; the message names the cluster and what was asked."""


class UnknownTopicError(EventLogError):
    """A topic the caller named does not exist on the cluster."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One decoded event and where Kafka keeps it (`timestamp_ms`: the record's timestamp)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    event: Event


@dataclass(frozen=True, slots=True)
class UndecodableRecord:
    """A record the codec could not read: reported, never dropped silently."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    reason: str


Recorded = RecordedEvent | UndecodableRecord


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets `start` (inclusive) to `end` (exclusive) of one partition; no `end`: follow it."""

    topic: str
    partition: int
    start: int
    end: int | None

    @property
    def empty(self) -> bool:
        return self.end is not None and self.start >= self.end


class EventLogReader:
    """Reads partition ranges; `keys` keeps only records with those keys (None keeps all).

    Use it as a context manager, or call `close`. Not thread-safe; every call blocks at most
    `timeout_s` (polls: the timeout given), so it belongs on a thread of its own when an event
    loop is running.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        codec: EventCodec,
        keys: Iterable[bytes] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        stall_timeout_s: float = STALL_TIMEOUT_S,
        queue_kbytes: int = 32 * 1024,
        client_config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._codec = codec
        self._keys = None if keys is None else frozenset(keys)
        self._timeout_s = timeout_s
        self._stall_timeout_s = stall_timeout_s
        config: dict[str, object] = {
            "bootstrap.servers": bootstrap_servers,
            # librdkafka wants a group id even for assign(); none is joined or committed to.
            "group.id": f"teleprompter-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # Records that retention deletes between our offset look-up and the fetch: go on.
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": queue_kbytes,
            "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
            "logger": _DemotedLog(),
            **(client_config or {}),
        }
        try:
            self._consumer = confluent_kafka.Consumer(config)
        except KafkaException as exc:
            raise EventLogError(
                f"cannot create a Kafka consumer for {bootstrap_servers}: {_reason(exc)}"
            ) from exc
        self._ranges: dict[tuple[str, int], PartitionRange] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._covered = 0
        self._last_progress = time.monotonic()
        self._closed = False

    # --- where to read ----------------------------------------------------------------------
    def topics(self) -> dict[str, int]:
        """Every topic on the cluster with its partition count."""
        try:
            metadata = self._consumer.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise EventLogError(
                f"Kafka at {self.bootstrap_servers} did not answer within "
                f"{self._timeout_s:g} s: {_reason(exc)}"
            ) from exc
        return {
            name: len(topic.partitions)
            for name, topic in metadata.topics.items()
            if topic.error is None and not name.startswith("__")
        }

    def partition_counts(self, names: Iterable[str]) -> dict[str, int]:
        """Partition counts of the named topics; `UnknownTopicError` names any that is missing."""
        names = list(dict.fromkeys(names))
        existing = self.topics()
        missing = [name for name in names if name not in existing]
        if missing:
            raise UnknownTopicError(
                f"no topic {', '.join(missing)} on {self.bootstrap_servers}"
                " (is the topic prefix right? `teleprompter topics list` shows the catalog)"
            )
        return {name: existing[name] for name in names}

    def ranges(
        self,
        partitions: Iterable[tuple[str, int]],
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        follow: bool = False,
        slack_ms: int = CLOCK_SLACK_MS,
    ) -> list[PartitionRange]:
        """The offsets holding records stamped from `from_ms` to `to_ms`, widened by `slack_ms`.

        No `from_ms`: from the oldest record kept. No `to_ms`: to the end as it is now, or, when
        `follow`, open-ended.
        """
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not wanted:
            return []
        watermarks = {(tp.topic, tp.partition): self._watermarks(tp) for tp in wanted}
        starts = {key: low for key, (low, _) in watermarks.items()}
        ends: dict[tuple[str, int], int | None] = {
            key: None if follow else high for key, (_, high) in watermarks.items()
        }
        if from_ms is not None:
            for key, offset in self._offsets_at(wanted, from_ms - slack_ms).items():
                starts[key] = max(starts[key], watermarks[key][1] if offset < 0 else offset)
        if to_ms is not None:
            for key, offset in self._offsets_at(wanted, to_ms + slack_ms).items():
                ends[key] = watermarks[key][1] if offset < 0 else offset
        return [
            PartitionRange(topic=key[0], partition=key[1], start=starts[key], end=ends[key])
            for key in watermarks
        ]

    # --- reading ----------------------------------------------------------------------------
    def assign(self, ranges: Iterable[PartitionRange]) -> None:
        """Start reading these ranges too (empty ones are skipped)."""
        added: list[TopicPartition] = []
        for wanted in ranges:
            key = (wanted.topic, wanted.partition)
            if wanted.empty or key in self._ranges:
                continue
            self._ranges[key] = wanted
            self._next[key] = wanted.start
            added.append(TopicPartition(wanted.topic, wanted.partition, wanted.start))
        if added:
            try:
                self._consumer.incremental_assign(added)
            except KafkaException as exc:
                raise EventLogError(f"cannot assign {_names(added)}: {_reason(exc)}") from exc
            self._last_progress = time.monotonic()

    @property
    def finished(self) -> bool:
        """Every bounded range was read to its end, and no open-ended range is assigned."""
        return not self._ranges

    @property
    def offsets_read(self) -> int:
        """Offsets covered so far over every range assigned (for progress bars)."""
        return self._covered

    def bound_at_end(self) -> None:
        """Open-ended ranges stop at the end they have now (a followed conversation ended)."""
        for key, wanted in list(self._ranges.items()):
            if wanted.end is None:
                _, high = self._watermarks(TopicPartition(*key))
                self._ranges[key] = PartitionRange(
                    topic=wanted.topic, partition=wanted.partition, start=wanted.start, end=high
                )
                if self._next[key] >= high:
                    self._finish(key)

    def poll(self, *, timeout_s: float = 0.5, max_records: int = BATCH_SIZE) -> list[Recorded]:
        """The next records, in offset order per partition; [] when none came within timeout."""
        if not self._ranges:
            return []
        try:
            # Take what has arrived; if nothing has, wait for one record, not for a full batch.
            messages = self._consumer.consume(num_messages=max_records, timeout=0)
            if not messages:
                messages = self._consumer.consume(num_messages=1, timeout=timeout_s)
        except KafkaException as exc:
            raise EventLogError(f"reading from {self.bootstrap_servers}: {_reason(exc)}") from exc
        records: list[Recorded] = []
        for message in messages:
            error = message.error()
            topic, partition = message.topic() or "", message.partition() or 0
            key = (topic, partition)
            if error is not None:
                self._on_error(key, error)
                continue
            wanted = self._ranges.get(key)
            offset = message.offset() or 0
            if wanted is None:  # a late fetch of a partition already finished
                continue
            if wanted.end is not None and offset >= wanted.end:
                self._finish(key)
                continue
            self._covered += offset + 1 - self._next[key]
            self._next[key] = offset + 1
            if self._keys is not None and message.key() not in self._keys:
                continue
            records.append(self._decode(message, topic, partition, offset))
            if wanted.end is not None and offset + 1 >= wanted.end:
                self._finish(key)
        if messages:
            self._last_progress = time.monotonic()
        elif self._bounded_left() and time.monotonic() - self._last_progress > (
            self._stall_timeout_s
        ):
            raise EventLogError(
                f"Kafka at {self.bootstrap_servers} sent nothing for "
                f"{self._stall_timeout_s:g} s with {self._bounded_left()} partitions left to read"
            )
        return records

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> EventLogReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------
    def _decode(
        self, message: confluent_kafka.Message, topic: str, partition: int, offset: int
    ) -> Recorded:
        kind, stamp = message.timestamp()
        timestamp_ms = -1 if kind == _TIMESTAMP_NOT_AVAILABLE else stamp
        value = message.value() or b""
        try:
            event = self._codec.decode(value, topic=topic, offset=offset)
        except SchemaError as exc:
            return UndecodableRecord(
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=timestamp_ms,
                key=message.key(),
                reason=exc.reason,
            )
        return RecordedEvent(
            topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms, event=event
        )

    def _on_error(self, key: tuple[str, int], error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            wanted = self._ranges.get(key)
            if wanted is not None and wanted.end is not None:
                self._finish(key)
            return
        if error.fatal() or error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._UNKNOWN_PARTITION,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            raise EventLogError(f"reading {key[0]}[{key[1]}]: {error.str()} ({error.name()})")
        # Transport errors: librdkafka reconnects by itself; the stall timeout catches the rest.
        logger.debug("kafka consumer: %s", error.str())

    def _finish(self, key: tuple[str, int]) -> None:
        wanted = self._ranges.pop(key, None)
        if wanted is None:
            return
        if wanted.end is not None:
            self._covered += max(0, wanted.end - self._next[key])
        try:
            self._consumer.incremental_unassign([TopicPartition(*key)])
        except KafkaException as exc:
            logger.debug("unassigning %s[%d]: %s", key[0], key[1], _reason(exc))

    def _bounded_left(self) -> int:
        return sum(1 for wanted in self._ranges.values() if wanted.end is not None)

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                tp, timeout=self._timeout_s, cached=False
            )
        except KafkaException as exc:
            raise EventLogError(
                f"cannot read the offsets of {tp.topic}[{tp.partition}] on "
                f"{self.bootstrap_servers}: {_reason(exc)}"
            ) from exc
        return int(low), int(high)

    def _offsets_at(
        self, partitions: list[TopicPartition], at_ms: int
    ) -> dict[tuple[str, int], int]:
        """The first offset stamped at or after `at_ms` per partition; -1 where there is none."""
        query = [TopicPartition(tp.topic, tp.partition, max(0, at_ms)) for tp in partitions]
        try:
            found = self._consumer.offsets_for_times(query, timeout=self._timeout_s)
        except KafkaException as exc:
            raise EventLogError(
                f"cannot look up offsets by time on {self.bootstrap_servers}: {_reason(exc)}"
            ) from exc
        offsets: dict[tuple[str, int], int] = {}
        for tp in found:
            if tp.error is not None:
                raise EventLogError(f"cannot look up offsets by time in {_names([tp])}: {tp.error}")
            offsets[(tp.topic, tp.partition)] = int(tp.offset)
        return offsets


class _DemotedLog:
    """librdkafka's log lines at DEBUG: failures reach the caller as EventLogError."""

    def log(self, level: int, message: str, *args: object) -> None:
        _librdkafka_logger.debug(message, *args)


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return f"{error.str()} ({error.name()})"
    return f"{type(exc).__name__}: {exc}"
