"""The gateway's own added latency, measured against the same Kafka hop without a gateway.

    python scripts/bench_gateway.py [--count 300] [--bootstrap HOST:PORT] [--compare-aio]

Inbound: a client's transcript_chunk frame until a consumer sees the record, against a bare
producer's record until the same consumer sees it. Outbound: a worker's reply record until the
client's socket has it, against the same record until a bare consumer has it. The difference
is what the gateway adds. Also reports the gateway's own stage histograms (frame received to
broker ack; reply consumed to socket written) and, with --compare-aio, produce-to-ack latency of
our EventProducer against confluent-kafka's AIOProducer. Lone messages, one at a time: this is
a latency benchmark, not a load test. Runs an embedded broker unless --bootstrap is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import confluent_kafka
from aiohttp import web
from confluent_kafka.aio import AIOProducer
from pydantic import SecretStr

from broker import BrokerThread
from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog, TopicSpec
from core.settings import Settings
from core.tokens import TokenSigner
from gateway.app import GATEWAY_KEY, create_app
from gateway.event_producer import EventProducer
from gateway.reply_router import LATENCY_CONSUMER_CONFIG
from schemas.codec import default_codec
from schemas.events import SuggestionEvent, TranscriptSegment

SECRET = "bench-gateway-signing-secret-0123456789"
GAP_S = 0.003  # between lone messages, so each one travels alone


class Arrivals:
    """A consumer thread noting when each record (by a tag in its value) arrives."""

    def __init__(self, bootstrap: str, topic: str, tag_of: Callable[[bytes], str]) -> None:
        self._consumer = confluent_kafka.Consumer(
            {
                **LATENCY_CONSUMER_CONFIG,
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex}",
            }
        )
        _low, high = self._consumer.get_watermark_offsets(
            confluent_kafka.TopicPartition(topic, 0), timeout=10, cached=False
        )
        self._consumer.assign([confluent_kafka.TopicPartition(topic, 0, high)])
        self._tag_of = tag_of
        self._seen: dict[str, float] = {}
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            record = self._consumer.poll(0.05)
            if record is None or record.error() is not None:
                continue
            at = time.perf_counter()
            with self._arrived:
                self._seen[self._tag_of(record.value() or b"")] = at
                self._arrived.notify_all()

    async def wait(self, tag: str) -> float:
        def block() -> float:
            with self._arrived:
                if not self._arrived.wait_for(lambda: tag in self._seen, timeout=10):
                    raise TimeoutError(f"record {tag} never arrived")
                return self._seen.pop(tag)

        return await asyncio.to_thread(block)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


Row = dict[str, Any]


def summary(name: str, samples_s: list[float]) -> Row:
    ms = sorted(s * 1000 for s in samples_s)
    row = {
        "name": name,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(len(ms) * 0.9) - 1], 3),
        "p99_ms": round(ms[max(0, int(len(ms) * 0.99) - 1)], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }
    print(
        f"{name:<52} n={row['n']:<5} p50={row['p50_ms']:>8.3f}  p90={row['p90_ms']:>8.3f}  "
        f"p99={row['p99_ms']:>8.3f}  mean={row['mean_ms']:>8.3f} ms"
    )
    return row


def transcript_tag(value: bytes) -> str:
    event = default_codec().decode(value)
    return event.text if isinstance(event, TranscriptSegment) else ""


def reply_tag(value: bytes) -> str:
    event = default_codec().decode(value)
    return event.turn_id if isinstance(event, SuggestionEvent) else ""


class Setup:
    """An in-process gateway on its own topics, a bare producer, and a client token."""

    def __init__(self, bootstrap: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=f"bench{tag}",
            gateway_id=f"gw-bench-{tag}",
            partitions=1,
            secret=SecretStr(SECRET),
            data_dir=Path(tempfile.mkdtemp()),
            log_level="WARNING",
        )
        self.catalog = TopicCatalog.from_settings(self.settings)
        self.baseline_topic = TopicSpec(
            name=f"bench{tag}.baseline", event_type=TranscriptSegment, partitions=1
        )
        self.app = create_app(self.settings)
        self.gateway = self.app[GATEWAY_KEY]
        self.runner = web.AppRunner(self.app, handle_signals=False)
        self.url = ""
        self.token = TokenSigner(SECRET.encode()).issue("bench-conv", ttl_s=600)
        self.raw = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 0, "socket.nagle.disable": True}
        )
        self._stop_polling = threading.Event()
        self._poller = threading.Thread(target=self._serve_delivery_reports, daemon=True)

    def _serve_delivery_reports(self) -> None:
        while not self._stop_polling.is_set():
            self.raw.poll(0.05)

    async def start(self) -> None:
        admin = TopicAdmin(bootstrap_servers=self.bootstrap)
        await admin.ensure_topics([*self.catalog.shared_topics, self.baseline_topic])
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        await asyncio.wait_for(self.gateway.wait_ready(), 30)
        self._poller.start()

    async def stop(self) -> None:
        self._stop_polling.set()
        self._poller.join()
        self.raw.flush(10)
        await self.runner.cleanup()


async def inbound(setup: Setup, ws: aiohttp.ClientWebSocketResponse, count: int) -> list[Row]:
    """Client frame -> record visible to a consumer, against a bare producer's record."""
    codec = default_codec()
    via_gateway_arrivals = Arrivals(setup.bootstrap, setup.catalog.transcripts.name, transcript_tag)
    bare_arrivals = Arrivals(setup.bootstrap, setup.baseline_topic.name, transcript_tag)
    via_gateway: list[float] = []
    bare: list[float] = []
    for i in range(count):
        frame = json.dumps({"type": "transcript_chunk", "text": f"in-{i}"})
        start = time.perf_counter()
        await ws.send_str(frame)
        via_gateway.append(await via_gateway_arrivals.wait(f"in-{i}") - start)
        await asyncio.sleep(GAP_S)
        segment = TranscriptSegment(
            conversation_id="bench-conv", session_id="s", segment_id="x", text=f"b-{i}"
        )
        start = time.perf_counter()
        setup.raw.produce(setup.baseline_topic.name, key=segment.key, value=codec.encode(segment))
        bare.append(await bare_arrivals.wait(f"b-{i}") - start)
        await asyncio.sleep(GAP_S)
    via_gateway_arrivals.close()
    bare_arrivals.close()
    return [
        summary("in: client frame -> record consumed (via gateway)", via_gateway),
        summary("in: bare produce -> record consumed (no gateway)", bare),
    ]


async def outbound(setup: Setup, ws: aiohttp.ClientWebSocketResponse, count: int) -> list[Row]:
    """A worker's reply record -> the client's socket, against a bare consumer of it."""
    codec = default_codec()
    reply_topic = setup.gateway.reply_topic.name
    bare_arrivals = Arrivals(setup.bootstrap, reply_topic, reply_tag)
    to_socket: list[float] = []
    to_consumer: list[float] = []
    for i in range(count):
        event = SuggestionEvent(
            conversation_id="bench-conv", turn_id=f"t{i}", kind="delta", text="w", full_text="w"
        )
        start = time.perf_counter()
        setup.raw.produce(reply_topic, key=event.key, value=codec.encode(event))
        message = await ws.receive()
        to_socket.append(time.perf_counter() - start)
        assert json.loads(message.data)["turn_id"] == f"t{i}"
        to_consumer.append(await bare_arrivals.wait(f"t{i}") - start)
        await asyncio.sleep(GAP_S)
    bare_arrivals.close()
    return [
        summary("out: reply produced -> client socket (via gateway)", to_socket),
        summary("out: reply produced -> bare consumer (no gateway)", to_consumer),
    ]


def gateway_histograms(setup: Setup) -> list[Row]:
    rows: list[Row] = []
    registry = setup.gateway.metrics.registry
    for stage in ("gateway_produce", "gateway_deliver"):
        labels = {"stage": stage}
        total = registry.get_sample_value("teleprompter_stage_latency_seconds_sum", labels)
        n = registry.get_sample_value("teleprompter_stage_latency_seconds_count", labels)
        if total is not None and n:
            mean = total / n * 1000
            print(f"gateway histogram {stage:<34} n={int(n):<5} mean={mean:8.3f} ms")
            rows.append({"name": f"histogram {stage}", "n": int(n), "mean_ms": round(mean, 3)})
    return rows


async def bench(bootstrap: str, count: int, compare_aio: bool) -> list[Row]:
    setup = Setup(bootstrap)
    await setup.start()
    rows: list[Row] = []
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                f"{setup.url}/ws?conversation_id=bench-conv&token={setup.token}"
            )
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            rows += await inbound(setup, ws, count)
            rows += await outbound(setup, ws, count)
            await ws.close()
        rows += gateway_histograms(setup)
        if compare_aio:
            rows += await compare_producers(bootstrap, setup.catalog.transcripts.name, count)
    finally:
        await setup.stop()
    return rows


async def compare_producers(bootstrap: str, topic: str, count: int) -> list[Row]:
    """Produce -> ack of lone messages: our EventProducer against confluent-kafka's AIOProducer."""
    codec = default_codec()
    segment = TranscriptSegment(conversation_id="c", session_id="s", segment_id="x", text="hi")
    rows = []
    ours = EventProducer(bootstrap_servers=bootstrap, codec=codec)
    await ours.start()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await ours.produce(topic, segment)
        samples.append(time.perf_counter() - start)
        await asyncio.sleep(GAP_S)
    await ours.close()
    rows.append(summary("produce -> ack: EventProducer", samples))
    config = {"bootstrap.servers": bootstrap, "linger.ms": 0, "socket.nagle.disable": True}
    for label, batch_size in [("AIOProducer(batch_size=1)", 1), ("AIOProducer() defaults", 1000)]:
        producer = AIOProducer(dict(config), batch_size=batch_size)
        samples = []
        for _ in range(min(count, 30)):  # the defaults wait ~1 s per lone message
            start = time.perf_counter()
            delivered = await producer.produce(topic, value=codec.encode(segment), key=b"c")
            await asyncio.wait_for(delivered, timeout=10)
            samples.append(time.perf_counter() - start)
            await asyncio.sleep(GAP_S)
        await producer.close()
        rows.append(summary(f"produce -> ack: {label}", samples))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--bootstrap", default=None, help="an existing Kafka (default: embedded)")
    parser.add_argument("--compare-aio", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    broker: BrokerThread | None = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = BrokerThread(data_dir=Path(tempfile.mkdtemp()))
        broker.start()
        bootstrap = broker.bootstrap_servers
    try:
        rows = asyncio.run(bench(bootstrap, args.count, args.compare_aio))
    finally:
        if broker is not None:
            broker.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
