"""Faust's aiokafka transport with the consumer's waits fixed for latency (`tpkafka://` URLs).

Registered through Faust's own extension point, the `faust.transports` entry-point group (see
pyproject.toml), and selected by the broker URL's scheme in `streams.app.faust_settings`.
It fixes two waits in the stock driver (faust-streaming 0.11-0.15 with aiokafka 0.1x):

1. Partitions Faust pauses are still fetched. Faust "pauses" a partition only by leaving it
   out of the set it drains; aiokafka is never told and keeps fetching it. Every table's
   changelog partitions are paused so after recovery, and our tables are written on every
   transcript segment: those records land in aiokafka's fetch buffer and are never drained.
   While undrained records are younger than aiokafka's `prefetch_backoff` (100 ms), its
   fetcher sends no fetch at all to that broker: the whole worker stops reading for 100 ms
   each time a changelog partition gets its first records. Here a pause reaches aiokafka.
2. `fetch_max_wait_ms` is hard-coded to 1500. aiokafka keeps one fetch in flight per broker
   and leaves out of it any partition whose records are still waiting to be drained; once
   Faust drains them, they can only be fetched again after the fetch in flight returns, which
   a broker may hold for the full wait when none of *its* partitions gets data. A short wait
   bounds that stall; the price is an idle fetch every `fetch_max_wait_ms`.

Faust's stall monitor (every 2.5 s) expects aiokafka to fetch every assigned partition and
logs an error for each one not fetched within `stream_processing_timeout`: with fix 1, every
paused changelog partition of an idle worker, about 6 lines a second from 5 minutes after start.
A partition paused in aiokafka on purpose is not stalled, so the monitor skips those here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, ClassVar, Final

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

logger = logging.getLogger(__name__)

SCHEME: Final = "tpkafka"
FETCH_MAX_WAIT_MS: Final = 20


class TransportError(RuntimeError):
    """The installed aiokafka no longer has what this transport adjusts."""


class LatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The thread running aiokafka's consumer, built with our fetch wait."""

    fetch_max_wait_ms: ClassVar[int] = FETCH_MAX_WAIT_MS

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka takes the wait only as a constructor argument, and Faust passes 1500 there;
        # the fetcher reads this attribute when the consumer starts, which is after this.
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise TransportError("aiokafka's consumer has no _fetch_max_wait_ms any more")
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Faust's stall check of one partition, unless this transport paused it in aiokafka."""
        consumer = self._consumer
        if consumer is not None and TopicPartition(tp.topic, tp.partition) in consumer.paused():
            return
        super().verify_event_path(now, tp)

    def pause_in_driver(self, tps: Iterable[Any], *, paused: bool) -> None:
        """Pause or resume `tps` in aiokafka itself; runs on this thread's loop."""
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        # aiokafka insists on its own TopicPartition type; Faust passes its TP namedtuples.
        mine = [TopicPartition(tp.topic, tp.partition) for tp in tps if tp in assigned]
        if mine:
            (consumer.pause if paused else consumer.resume)(*mine)


class LatencyConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose partition pauses reach aiokafka's fetcher."""

    _thread: LatencyConsumerThread

    def _new_consumer_thread(self) -> LatencyConsumerThread:
        return LatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def pause_partitions(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._in_driver(tps, paused=True)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._in_driver(tps, paused=False)

    def _in_driver(self, tps: list[Any], *, paused: bool) -> None:
        thread = self._thread
        loop = getattr(thread, "thread_loop", None)
        if loop is None or loop.is_closed():
            return
        # aiokafka is not thread-safe: its consumer is only touched on its own thread's loop.
        loop.call_soon_threadsafe(lambda: thread.pause_in_driver(tps, paused=paused))


class Transport(faust_aiokafka.Transport):
    """`tpkafka://host:port`: Faust's aiokafka transport with `LatencyConsumer`."""

    Consumer = LatencyConsumer
