"""Consumes this gateway's reply topic and hands each record to its conversation's sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Final, Protocol

import confluent_kafka
from confluent_kafka.aio import AIOConsumer

from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    ServerMessage,
    Status,
    SuggestionCancelled,
    SuggestionComplete,
    SuggestionDelta,
    SuggestionFailed,
    Throttled,
    Transcript,
)
from schemas.codec import EventCodec
from schemas.errors import SchemaError
from schemas.events import Event, LlmState, LlmStatus, SuggestionEvent, TranscriptSegment, now_ms

logger = logging.getLogger(__name__)

ConfigValue = str | int | float | bool

# librdkafka tuned for latency. The broker answers a fetch as soon as data arrives; the short
# max wait bounds the delay where a broker does not (and costs idle fetches, 1 per 5 ms).
LATENCY_CONSUMER_CONFIG: Final[Mapping[str, ConfigValue]] = {
    "socket.nagle.disable": True,
    "fetch.wait.max.ms": 5,
    "fetch.min.bytes": 1,
    "fetch.error.backoff.ms": 50,
    # Offsets are never committed: a restarted gateway starts from the end of its topic.
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "latest",
}
GATEWAY_OUT_STAGE: Final = "gateway_out"


class ReplyTopicError(Exception):
    """The reply topic could not be created or read."""


class Recipient(Protocol):
    """Whatever takes server messages for one conversation (a `Session`)."""

    @property
    def conversation_id(self) -> str: ...

    def deliver(self, message: ServerMessage, *, received_at: float | None = None) -> None: ...


def reply_message(event: Event) -> ServerMessage | None:
    """The client message for a reply-topic event; None for events clients are not shown."""
    if isinstance(event, SuggestionEvent):
        return _suggestion_message(event)
    if isinstance(event, LlmStatus):
        return Status(llm=event.llm, reason=event.reason)
    if isinstance(event, TranscriptSegment) and event.text:
        return Transcript(
            speaker=event.speaker,
            text=event.text,
            final=event.final,
            segment_id=event.segment_id,
            revision=event.revision,
        )
    return None


def _suggestion_message(event: SuggestionEvent) -> ServerMessage:
    if event.kind == "delta":
        return SuggestionDelta(
            turn_id=event.turn_id, seq=event.seq, text=event.text, full_text=event.full_text
        )
    if event.kind == "complete":
        timings = dict(event.timings)
        # A complete re-sent to a client that reconnected carries no trace: it was timed once.
        if event.trace:
            # The reply hop: from the worker's last stamp to this gateway handing it to sockets.
            sent_ms = max(event.trace.values())
            timings[GATEWAY_OUT_STAGE] = max(0.0, now_ms() - sent_ms)
        return SuggestionComplete(
            turn_id=event.turn_id, text=event.full_text or event.text, timings=timings
        )
    if event.kind == "cancelled":
        return SuggestionCancelled(turn_id=event.turn_id, reason=event.reason or "superseded")
    if event.kind == "failed":
        return SuggestionFailed(turn_id=event.turn_id, reason=event.reason or "llm_error")
    return Throttled(reason=event.reason or "capacity", turn_id=event.turn_id)


class ReplyRouter:
    """Reads the reply topic from its end and routes every record by conversation id."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        codec: EventCodec,
        metrics: GatewayMetrics,
        group_id: str,
        poll_timeout_s: float = 0.1,
        max_batch: int = 256,
        extra_config: Mapping[str, ConfigValue] | None = None,
    ) -> None:
        self.topic = topic
        self._config: dict[str, object] = {
            **LATENCY_CONSUMER_CONFIG,
            "bootstrap.servers": bootstrap_servers,
            "logger": logging.getLogger("librdkafka.consumer"),  # not straight to stderr
            # Required by librdkafka, but partitions are assigned, never subscribed: no group.
            "group.id": group_id,
            **(extra_config or {}),
        }
        self._codec = codec
        self._metrics = metrics
        self._poll_timeout_s = poll_timeout_s
        self._max_batch = max_batch
        self._recipients: dict[str, list[Recipient]] = {}
        # Conversations held here whose worker last reported its LLM degraded, with the reason.
        self._llm_degraded: dict[str, str] = {}
        self._consumer: AIOConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- who is connected --------------------------------------------------------------

    def attach(self, recipient: Recipient) -> None:
        self._recipients.setdefault(recipient.conversation_id, []).append(recipient)

    def detach(self, recipient: Recipient) -> None:
        recipients = self._recipients.get(recipient.conversation_id, [])
        if recipient in recipients:
            recipients.remove(recipient)
        if not recipients:
            self._recipients.pop(recipient.conversation_id, None)
            self._llm_degraded.pop(recipient.conversation_id, None)

    def recipients_for(self, conversation_id: str) -> list[Recipient]:
        return list(self._recipients.get(conversation_id, ()))

    @property
    def llm(self) -> tuple[LlmState, str]:
        """ "degraded" (and why) while a worker reports its LLM failing for a conversation here."""
        for reason in self._llm_degraded.values():
            return "degraded", reason
        return "ok", ""

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, *, timeout_s: float = 10.0) -> None:
        """Assign the topic's only partition at its current end and start routing."""
        consumer = AIOConsumer(dict(self._config), max_workers=2)
        partition = confluent_kafka.TopicPartition(self.topic, 0)
        try:
            # An explicit offset rather than OFFSET_END, which librdkafka resolves lazily:
            # a reply produced after start() returns must never be skipped.
            _low, high = await consumer.get_watermark_offsets(
                partition, timeout=timeout_s, cached=False
            )
            partition.offset = high
            await consumer.assign([partition])
        except confluent_kafka.KafkaException as exc:
            await consumer.close()
            raise ReplyTopicError(f"cannot read reply topic {self.topic}: {exc}") from exc
        self._consumer = consumer
        self._task = asyncio.create_task(self._consume(consumer), name=f"reply-router-{self.topic}")
        logger.info("routing replies from %s, starting at offset %d", self.topic, high)

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            await task  # returns within one poll timeout
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.close()

    async def _consume(self, consumer: AIOConsumer) -> None:
        while not self._stopping:
            try:
                record = await consumer.poll(self._poll_timeout_s)
                if record is None:
                    continue
                self._route(record)
                # Drain what else has arrived in one executor hop instead of one per record.
                for record in await consumer.consume(num_messages=self._max_batch, timeout=0):
                    self._route(record)
            except confluent_kafka.KafkaException as exc:
                logger.warning("reply topic %s: %s", self.topic, exc)
                await asyncio.sleep(self._poll_timeout_s)  # back off; librdkafka reconnects
            except Exception:
                # One bad record or recipient must not stop replies to everyone else.
                logger.exception("reply topic %s: unexpected error routing a record", self.topic)

    def _route(self, record: confluent_kafka.Message) -> None:
        received_at = time.perf_counter()
        error = record.error()
        if error is not None:
            if error.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                logger.warning("reply topic %s: %s", self.topic, error.str())
            return
        try:
            event = self._codec.decode(
                record.value() or b"", topic=record.topic(), offset=record.offset()
            )
        except SchemaError as exc:
            self._metrics.reply_records.labels(outcome="undecodable").inc()
            logger.warning("skipping undecodable reply record: %s", exc)
            return
        self.dispatch(event, received_at=received_at)

    def dispatch(self, event: Event, *, received_at: float | None = None) -> int:
        """Deliver `event` to every socket of its conversation here; returns how many."""
        message = reply_message(event)
        if message is None:
            self._metrics.reply_records.labels(outcome="not_for_clients").inc()
            return 0
        if isinstance(message, SuggestionComplete):
            for stage, ms in message.timings.items():
                self._metrics.observe_stage(stage, ms / 1000.0)
        recipients = self._recipients.get(event.conversation_id)
        if not recipients:
            self._metrics.reply_records.labels(outcome="no_session").inc()
            return 0
        if isinstance(event, LlmStatus):
            if event.llm == "degraded":
                self._llm_degraded[event.conversation_id] = event.reason
            else:
                self._llm_degraded.pop(event.conversation_id, None)
        self._metrics.reply_records.labels(outcome="delivered").inc()
        for recipient in list(recipients):
            recipient.deliver(message, received_at=received_at)
        return len(recipients)
