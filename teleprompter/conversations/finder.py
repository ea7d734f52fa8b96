"""Finds one conversation's records in Kafka without reading whole topics where Kafka lets it.

Every catalog topic is keyed by conversation id, so the conversation lives on one partition of
each (the key's partition, `partition_for_key`), and `--from`/`--to` become offsets through the
broker's time index. Compacted topics (routes, summaries, profiles) are small and hold state
that began before any window, so their partition is read whole. The per-gateway reply topics
(one partition, every conversation of one gateway) hold the token deltas: the routes name the
ones this conversation used, and they are read over the conversation's own time span only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from core.kafka.catalog import TopicCatalog
from schemas.events import SessionRoute, TranscriptSegment
from teleprompter.event_log.partitions import partition_for_key
from teleprompter.event_log.reader import (
    CLOCK_SLACK_MS,
    EventLogReader,
    PartitionRange,
    Recorded,
    RecordedEvent,
)
from teleprompter.event_log.times import format_time

logger = logging.getLogger(__name__)


class UnknownConversationError(LookupError):
    """No record of the conversation where it would be; the message says where we looked."""


@dataclass(kw_only=True)
class _Seen:
    """What the records read so far tell about the conversation."""

    reply_topics: list[str] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None
    records: int = 0
    ended: bool = False

    def note(self, record: Recorded, *, compacted: bool) -> None:
        self.records += 1
        if not isinstance(record, RecordedEvent):
            return
        event = record.event
        if isinstance(event, SessionRoute) and event.reply_topic not in self.reply_topics:
            self.reply_topics.append(event.reply_topic)
        if isinstance(event, TranscriptSegment) and event.end_of_conversation:
            self.ended = True
        if not compacted:
            at = event.event_time_ms
            self.first_ms = at if self.first_ms is None else min(self.first_ms, at)
            self.last_ms = at if self.last_ms is None else max(self.last_ms, at)


class ConversationFinder:
    """Reads one conversation's records: `history`, then, to tail a live call, `follow`."""

    def __init__(
        self,
        reader: EventLogReader,
        catalog: TopicCatalog,
        conversation_id: str,
    ) -> None:
        self._reader = reader
        self._catalog = catalog
        self.conversation_id = conversation_id
        self.key = conversation_id.encode()
        self._seen = _Seen()
        self._compacted = {s.name for s in catalog.shared_topics if s.cleanup_policy == "compact"}
        self._reply_prefix = catalog.reply_topic("").name
        self._read_ranges: list[PartitionRange] = []
        counts = reader.partition_counts(spec.name for spec in catalog.shared_topics)
        self.partitions = {name: partition_for_key(self.key, n) for name, n in counts.items()}

    def is_reply_topic(self, topic: str) -> bool:
        return topic.startswith(self._reply_prefix)

    @property
    def ended(self) -> bool:
        """The conversation's end-of-conversation marker has been read."""
        return self._seen.ended

    def in_window(self, at_ms: int, from_ms: int | None, to_ms: int | None) -> bool:
        return (from_ms is None or at_ms >= from_ms) and (to_ms is None or at_ms < to_ms)

    def history(
        self, *, from_ms: int | None = None, to_ms: int | None = None, replies: bool = True
    ) -> Iterator[Recorded]:
        """Every record of the conversation kept in Kafka now, as read (not in time order).

        Records are those stamped near the window; callers filter on event time. Raises
        `UnknownConversationError` when the conversation's partitions hold none of its records.
        """
        for spec in self._catalog.shared_topics:
            compacted = spec.name in self._compacted
            self._read_ranges += self._reader.ranges(
                [(spec.name, self.partitions[spec.name])],
                from_ms=None if compacted else from_ms,
                to_ms=to_ms,
            )
        yield from self._drain(self._read_ranges)
        if self._seen.records == 0:
            raise UnknownConversationError(self._nothing_found(from_ms, to_ms))
        if not replies or self._seen.first_ms is None:
            return
        # Deltas stream between a turn and its outcome: the conversation's span covers them.
        span_from = (
            max(self._seen.first_ms, from_ms) if from_ms is not None else self._seen.first_ms
        )
        span_to = self._seen.last_ms if to_ms is None else min(to_ms, self._seen.last_ms or to_ms)
        reply_ranges = self._reader.ranges(
            [
                (topic, partition)
                for topic, partitions in self._reply_topics().items()
                for partition in range(partitions)
            ],
            from_ms=span_from,
            to_ms=None if span_to is None else span_to + CLOCK_SLACK_MS,
        )
        self._read_ranges += reply_ranges
        yield from self._drain(reply_ranges)

    def follow(self, *, poll_s: float = 0.2) -> Iterator[list[Recorded]]:
        """After `history`: batches of new records (maybe empty, every `poll_s` at most) until
        the conversation ends; a route to another gateway adds its reply topic."""
        known = {r.topic for r in self._read_ranges if self.is_reply_topic(r.topic)}
        self._reader.assign(
            PartitionRange(topic=r.topic, partition=r.partition, start=r.end or r.start, end=None)
            for r in self._read_ranges
        )
        for topic in self._seen.reply_topics:
            if topic not in known:
                self._follow_reply_topic(topic, since_ms=self._seen.first_ms)
                known.add(topic)
        bounded = False
        while not (bounded and self._reader.finished):
            batch = self._reader.poll(timeout_s=poll_s)
            for record in batch:
                self._seen.note(record, compacted=record.topic in self._compacted)
            for topic in self._seen.reply_topics:
                if topic not in known:
                    known.add(topic)
                    self._follow_reply_topic(topic, since_ms=self._seen.last_ms)
            if self._seen.ended and not bounded:
                # Read what was written up to now (the last outcomes), then stop.
                self._reader.bound_at_end()
                bounded = True
            yield batch

    # --- internals --------------------------------------------------------------------------
    def _drain(self, ranges: list[PartitionRange]) -> Iterator[Recorded]:
        self._reader.assign(ranges)
        while not self._reader.finished:
            for record in self._reader.poll():
                self._seen.note(record, compacted=record.topic in self._compacted)
                yield record

    def _reply_topics(self) -> dict[str, int]:
        """The reply topics the routes named (that still exist), else every reply topic, with
        their partition counts."""
        existing = self._reader.topics()
        named = {t: existing[t] for t in self._seen.reply_topics if t in existing}
        return named or {t: n for t, n in sorted(existing.items()) if self.is_reply_topic(t)}

    def _follow_reply_topic(self, topic: str, *, since_ms: int | None) -> None:
        partitions = self._reader.topics().get(topic)
        if partitions is None:
            logger.info("reply topic %s does not exist (yet)", topic)
            return
        at = int(time.time() * 1000) if since_ms is None else since_ms
        self._reader.assign(
            self._reader.ranges([(topic, p) for p in range(partitions)], from_ms=at, follow=True)
        )

    def _nothing_found(self, from_ms: int | None, to_ms: int | None) -> str:
        partitions = sorted(set(self.partitions.values()))
        where = f"partition {partitions[0]}" if len(partitions) == 1 else f"partitions {partitions}"
        window = ""
        if from_ms is not None or to_ms is not None:
            start = format_time(from_ms) if from_ms is not None else "the start"
            end = format_time(to_ms) if to_ms is not None else "now"
            window = f" from {start} to {end}"
        return (
            f"no conversation {self.conversation_id!r}: no record of it in "
            f"{self._catalog.prefix}.* ({where}){window}"
        )
