"""Events to Kafka without blocking the event loop: encode, hand to librdkafka, await the ack.

confluent-kafka's `AIOProducer` is not used on this path: it buffers messages in Python until
`batch_size` or `buffer_timeout` (1000 / 1 s by default), and it serves delivery reports only
when the next batch is produced, so a lone transcript chunk's ack can wait a second or more.
`Producer.produce()` itself only enqueues into librdkafka (microseconds, never blocks), and one
thread waiting in `poll()` settles each delivery future the moment its ack arrives.
`scripts/bench_gateway.py --compare-aio` measures both.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import confluent_kafka

from gateway.metrics import GatewayMetrics
from gateway.throttled_log import ThrottledWarning
from schemas.codec import EventCodec
from schemas.errors import SchemaError
from schemas.events import Event

logger = logging.getLogger(__name__)

ConfigValue = str | int | float | bool

# librdkafka tuned for latency: hand each message to the broker at once.
LATENCY_PRODUCER_CONFIG: Final[Mapping[str, ConfigValue]] = {
    "socket.nagle.disable": True,
    "acks": "all",
    "compression.type": "none",  # audio does not compress; transcripts are tiny
    # The partition of a key must match the Java client's and aiokafka's (Faust's) murmur2,
    # so that a conversation's events share a partition number across every topic.
    "partitioner": "murmur2_random",
    "queue.buffering.max.kbytes": 64 * 1024,  # bounded: a full queue is an error, not a wait
}


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int


ProduceFailure = Literal[
    "encode",  # the codec refused the event
    "too_large",  # bigger than Kafka takes: no retry can store it
    "queue_full",  # librdkafka's bounded local queue is full: try again later
    "rejected",  # librdkafka refused it for another reason
    "delivery",  # not acknowledged within the delivery timeout, or refused by the broker
]


class ProduceError(Exception):
    """An event was not stored: it could not be encoded, queued, or acknowledged."""

    def __init__(
        self,
        topic: str,
        message: str,
        *,
        retriable: bool = False,
        failure: ProduceFailure = "delivery",
    ) -> None:
        super().__init__(f"cannot produce to {topic}: {message}")
        self.topic = topic
        self.retriable = retriable
        self.failure: ProduceFailure = failure


class EventProducer:
    """Encodes events with the codec and produces them keyed by conversation id."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        codec: EventCodec,
        client_id: str = "teleprompter-gateway",
        linger_ms: float = 0.0,
        delivery_timeout_s: float = 10.0,
        poll_interval_s: float = 0.1,
        metrics: GatewayMetrics | None = None,
        extra_config: Mapping[str, ConfigValue] | None = None,
    ) -> None:
        config: dict[str, object] = {
            **LATENCY_PRODUCER_CONFIG,
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "linger.ms": linger_ms,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "error_cb": self._on_client_error,
            "logger": logging.getLogger("librdkafka.producer"),  # not straight to stderr
            **(extra_config or {}),
        }
        # An outage fails every event in flight and repeats the cluster's error: one line per
        # interval each, so the log still shows what else happens meanwhile.
        self._failures = ThrottledWarning("events not stored", logger=logger)
        self._client_errors = ThrottledWarning("kafka producer", logger=logger)
        self._producer = confluent_kafka.Producer(config)
        self._codec = codec
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        self._closed = False

    async def start(self) -> None:
        """Begin serving delivery reports on a thread of their own."""
        self._loop = asyncio.get_running_loop()
        self._poller = threading.Thread(
            target=self._poll_until_stopped, name="event-producer-poll", daemon=True
        )
        self._poller.start()

    def produce(self, topic: str, event: Event) -> asyncio.Future[Delivery]:
        """Queue `event` for `topic`; the future settles when the broker acknowledges it.

        Never blocks. Raises `ProduceError` at once if the event cannot be encoded or
        librdkafka's bounded queue is full.
        """
        if self._loop is None or self._closed:
            raise ProduceError(topic, "the producer is not running")
        try:
            value = self._codec.encode(event)
        except SchemaError as exc:
            self._count_failure(topic, "encode")
            raise ProduceError(topic, str(exc), failure="encode") from exc
        future: asyncio.Future[Delivery] = self._loop.create_future()
        try:
            self._producer.produce(
                topic,
                value=value,
                key=event.key,
                on_delivery=lambda err, msg: self._on_delivery(future, topic, err, msg),
            )
        except BufferError:
            self._count_failure(topic, "queue_full")
            raise ProduceError(
                topic, "the local send queue is full", retriable=True, failure="queue_full"
            ) from None
        except confluent_kafka.KafkaException as exc:
            error: confluent_kafka.KafkaError = exc.args[0]
            if error.code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE:
                self._count_failure(topic, "too_large")
                raise ProduceError(
                    topic, f"{len(value)} bytes is more than Kafka takes", failure="too_large"
                ) from exc
            self._count_failure(topic, "rejected")
            raise ProduceError(topic, error.str(), failure="rejected") from exc
        return future

    async def flush(self, *, timeout_s: float = 10.0) -> int:
        """Wait until every queued event is acknowledged; returns how many are still pending."""
        return await asyncio.to_thread(self._producer.flush, timeout_s)

    async def close(self, *, timeout_s: float = 10.0) -> None:
        """Flush, fail whatever could not be delivered in `timeout_s`, stop the poll thread."""
        if self._closed:
            return
        self._closed = True
        pending = await self.flush(timeout_s=timeout_s)
        if pending:
            logger.error("%d events not acknowledged within %.1f s; dropping", pending, timeout_s)
            # Purging fails their futures (via delivery reports) instead of leaving them hanging.
            self._producer.purge()
            await asyncio.to_thread(self._producer.poll, 0)
        self._stop_polling.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)

    def __len__(self) -> int:
        """Events queued in librdkafka and not yet acknowledged."""
        return len(self._producer)

    # --- librdkafka threads -------------------------------------------------------------

    def _poll_until_stopped(self) -> None:
        while not self._stop_polling.is_set():
            self._producer.poll(self._poll_interval_s)

    def _on_delivery(
        self,
        future: asyncio.Future[Delivery],
        topic: str,
        error: confluent_kafka.KafkaError | None,
        message: confluent_kafka.Message | None,
    ) -> None:
        # Runs on the poll thread: hand the outcome to the event loop.
        if error is not None:
            too_large = error.code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE
            outcome: Delivery | ProduceError = ProduceError(
                topic,
                error.str(),
                retriable=error.retriable(),
                failure="too_large" if too_large else "delivery",
            )
        else:
            assert message is not None  # librdkafka reports the message with every success
            outcome = Delivery(
                topic=topic, partition=message.partition() or 0, offset=message.offset() or 0
            )
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._settle, future, outcome)
        except RuntimeError:  # the loop closed between the check and the call
            logger.debug("delivery report for %s after the event loop closed", topic)

    def _settle(self, future: asyncio.Future[Delivery], outcome: Delivery | ProduceError) -> None:
        if isinstance(outcome, ProduceError):
            self._count_failure(outcome.topic, "delivery")
            self._failures.note(outcome)
            if not future.done():
                future.set_exception(outcome)
        elif not future.done():
            future.set_result(outcome)

    def _count_failure(self, topic: str, stage: str) -> None:
        if self._metrics is not None:
            self._metrics.produce_failures.labels(topic=topic, stage=stage).inc()

    def _on_client_error(self, error: confluent_kafka.KafkaError) -> None:
        # librdkafka retries by itself; these say why the cluster is unreachable meanwhile.
        self._client_errors.note(error.str())
