"""`python -m broker.bench`: produce->consume latency and sustained throughput of the broker.

By default it starts the embedded broker in a child process (so the clients measured here do
not share its interpreter), or measures any Kafka given with --bootstrap-servers.

Latency: one record at a time at a light, steady rate; each record carries its send time and
the consumer (in the same process, same clock) records arrival minus send. Measured with
confluent-kafka (librdkafka) and with aiokafka, whose consumer here uses Faust's hard-coded
fetch_max_wait_ms=1500, so parked-fetch wake-up is what is measured.
Throughput: a batching confluent-kafka producer writing as fast as it can, then a consumer
reading everything back.
Under fuzz (`--under-fuzz`): the confluent-kafka latency pair runs once on a quiet broker and
once while other connections send hostile requests (broker/hostile.py: impossible array
counts, 32 MB frames, requests heavy with items, slowloris frames, metadata storms of unknown
topics); the two runs' percentiles and the hostile connections' outcomes are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker import hostile

logger = logging.getLogger(__name__)

_FAUST_FETCH_MAX_WAIT_MS: Final = 1500
_TIMEOUT_S: Final = 120.0


@contextmanager
def broker_process() -> Iterator[str]:
    """`python -m broker` on an ephemeral port in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="broker-bench-") as data_dir:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker", "--port", "0", "--data-dir", data_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert process.stdout is not None
            address = ""
            for line in process.stdout:
                found = re.search(r"listening on (\S+:\d+)", line)
                if found:
                    address = found.group(1)
                    break
            if not address:
                raise RuntimeError("the broker did not start")
            threading.Thread(target=process.stdout.read, daemon=True).start()
            yield address
        finally:
            process.terminate()
            process.wait(30)


def create_topic(bootstrap: str, partitions: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49], 3),
        "p90_ms": round(cuts[89], 3),
        "p99_ms": round(cuts[98], 3),
        "max_ms": round(ordered[-1], 3),
    }


# --- latency -----------------------------------------------------------------------------------


def confluent_latency(bootstrap: str, count: int, rate_per_s: float) -> dict[str, float]:
    topic = create_topic(bootstrap, 1)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([ConfluentPartition(topic, 0, 0)])
    latencies: list[float] = []
    done = threading.Event()

    def consume() -> None:
        received = 0
        while received < count + 1 and not done.is_set():
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                received += 1
                sent = int(message.value() or b"0")
                if sent:  # 0 marks the warm-up record
                    latencies.append((time.perf_counter_ns() - sent) / 1e6)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    producer.produce(topic, b"0")  # connections and metadata in place before measuring
    producer.flush(30)
    interval = 1.0 / rate_per_s
    for _ in range(count):
        producer.produce(topic, str(time.perf_counter_ns()).encode())
        producer.poll(0)
        time.sleep(interval)  # pacing the load, not synchronising
    producer.flush(30)
    reader.join(_TIMEOUT_S)
    done.set()
    consumer.close()
    return percentiles(latencies)


async def aiokafka_latency(bootstrap: str, count: int, rate_per_s: float) -> dict[str, float]:
    topic = create_topic(bootstrap, 1)
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=_FAUST_FETCH_MAX_WAIT_MS
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await consumer.start()
    await producer.start()
    latencies: list[float] = []
    try:
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        await producer.send_and_wait(topic, b"0")  # warm-up, not measured

        async def consume() -> None:
            while len(latencies) < count:
                record = await consumer.getone()
                assert record.value is not None
                sent = int(record.value)
                if sent:  # 0 marks the warm-up record
                    latencies.append((time.perf_counter_ns() - sent) / 1e6)

        reader = asyncio.create_task(consume())
        interval = 1.0 / rate_per_s
        for _ in range(count):
            await producer.send(topic, str(time.perf_counter_ns()).encode())
            await asyncio.sleep(interval)  # pacing the load, not synchronising
        await asyncio.wait_for(reader, _TIMEOUT_S)
    finally:
        await producer.stop()
        await consumer.stop()
    return percentiles(latencies)


# --- throughput --------------------------------------------------------------------------------


def confluent_throughput(bootstrap: str, count: int, size: int) -> dict[str, float]:
    topic = create_topic(bootstrap, 4)
    payload = b"x" * size
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 256 * 1024,
            "acks": "all",
            "queue.buffering.max.messages": 500_000,
        }
    )
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload, partition=i % 4)
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(_TIMEOUT_S) != 0:
        raise RuntimeError("producer did not deliver everything")
    produce_s = time.perf_counter() - started

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([ConfluentPartition(topic, p, 0) for p in range(4)])
    received = 0
    started = time.perf_counter()
    deadline = started + _TIMEOUT_S
    while received < count and time.perf_counter() < deadline:
        for message in consumer.consume(10_000, 0.5):
            if not message.error():
                received += 1
    consume_s = time.perf_counter() - started
    consumer.close()
    megabytes = count * size / 1e6
    return {
        "records": count,
        "record_bytes": size,
        "produce_msgs_per_s": round(count / produce_s),
        "produce_mb_per_s": round(megabytes / produce_s, 1),
        "consume_msgs_per_s": round(received / consume_s),
        "consume_mb_per_s": round(received * size / 1e6 / consume_s, 1),
    }


# --- under fuzz ----------------------------------------------------------------------------------


def _abuse_until(address: tuple[str, int], kind: str, stop: Any, results: Any) -> None:
    """One hostile connection after another until `stop` is set (in a child process, so the
    measuring process shares no interpreter with the abuse); puts how each one ended."""
    outcomes = {"sent": 0, "closed_by_broker": 0}
    payloads: dict[str, Callable[[], bytes]] = {
        "impossible_count": hostile.impossible_array_count,
        "frame_32mb": lambda: hostile.huge_array_frame(32 * 1024 * 1024),
        "item_heavy": lambda: hostile.item_heavy_request(400, 500),
        "metadata_storm": lambda: hostile.metadata_for_unknown_topics(2_000),
    }
    payload = payloads[kind]() if kind in payloads else b""
    while not stop.is_set():
        outcomes["sent"] += 1
        try:
            if kind == "slowloris":
                closed = hostile.slowloris(address, byte_every_s=1.0, timeout_s=60.0)
            elif kind == "metadata_storm":
                hostile.metadata_answer(address, payload, timeout_s=60.0)
                closed = False
            else:
                closed = hostile.send_and_watch(address, payload, timeout_s=60.0)
        except OSError:
            closed = True
        outcomes["closed_by_broker"] += int(closed)
    results.put((kind, outcomes))


_HOSTILE_KINDS: Final = (
    "impossible_count",
    "frame_32mb",
    "item_heavy",
    "metadata_storm",
    *["slowloris"] * 4,
)


def latency_under_fuzz(bootstrap: str, count: int, rate_per_s: float) -> dict[str, Any]:
    """The latency pair on a quiet broker, then again while hostile connections run."""
    quiet = confluent_latency(bootstrap, count, rate_per_s)
    host, port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    outcomes = context.Queue()
    abusers = [
        context.Process(target=_abuse_until, args=((host, int(port)), kind, stop, outcomes))
        for kind in _HOSTILE_KINDS
    ]
    for abuser in abusers:
        abuser.start()
    try:
        fuzzed = confluent_latency(bootstrap, count, rate_per_s)
        load_average = os.getloadavg()
    finally:
        stop.set()
        totals: dict[str, dict[str, int]] = {}
        for _ in abusers:
            kind, counted = outcomes.get(timeout=_TIMEOUT_S)
            total = totals.setdefault(kind, {"sent": 0, "closed_by_broker": 0})
            for key, value in counted.items():
                total[key] += value
        for abuser in abusers:
            abuser.join(_TIMEOUT_S)
    return {"quiet": quiet, "under_fuzz": fuzzed, "hostile": totals, "load_average": load_average}


def print_fuzz_table(results: dict[str, Any], rate: float) -> None:
    print(f"\nproduce -> consume latency, confluent-kafka, {rate:g} records/s (acks=all)")
    print(f"{'':<14}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for key in ("quiet", "under_fuzz"):
        row = results[key]
        print(
            f"{key:<14}{row['p50_ms']:>9.2f}{row['p90_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{row['max_ms']:>9.2f}"
        )
    print("\nhostile connections (sent / closed by the broker)")
    for kind, counted in results["hostile"].items():
        print(f"  {kind:<18}{counted['sent']:>6} / {counted['closed_by_broker']}")
    print(
        "load average during the fuzzed run: {:.2f} {:.2f} {:.2f}".format(*results["load_average"])
    )


# --- command line ------------------------------------------------------------------------------


def run(bootstrap: str, arguments: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"bootstrap_servers": bootstrap}
    rate = arguments.rate
    results["latency_confluent"] = confluent_latency(bootstrap, arguments.latency_count, rate)
    results["latency_aiokafka"] = asyncio.run(
        aiokafka_latency(bootstrap, arguments.latency_count, rate)
    )
    results["throughput_confluent"] = confluent_throughput(
        bootstrap, arguments.throughput_count, arguments.record_bytes
    )
    return results


def print_table(results: dict[str, Any], rate: float) -> None:
    print(f"\nproduce -> consume latency, one record at a time, {rate:g} records/s (acks=all)")
    print(f"{'client':<28}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for key, label in (
        ("latency_confluent", "confluent-kafka"),
        ("latency_aiokafka", f"aiokafka (fetch wait {_FAUST_FETCH_MAX_WAIT_MS} ms)"),
    ):
        row = results[key]
        print(
            f"{label:<28}{row['p50_ms']:>9.2f}{row['p90_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{row['max_ms']:>9.2f}"
        )
    t = results["throughput_confluent"]
    print(f"\nsustained throughput, confluent-kafka, {t['records']} x {t['record_bytes']} B")
    print(f"{'':<12}{'msgs/s':>12}{'MB/s':>9}")
    print(f"{'produce':<12}{t['produce_msgs_per_s']:>12,}{t['produce_mb_per_s']:>9.1f}")
    print(f"{'consume':<12}{t['consume_msgs_per_s']:>12,}{t['consume_mb_per_s']:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker.bench", description=__doc__)
    parser.add_argument("--bootstrap-servers", help="measure this Kafka instead of a new broker")
    parser.add_argument("--latency-count", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="records/s for latency")
    parser.add_argument("--throughput-count", type=int, default=200_000)
    parser.add_argument("--record-bytes", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--under-fuzz",
        action="store_true",
        help="latency on a quiet broker, then while hostile connections run (no throughput)",
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if arguments.under_fuzz:
        results = _under_fuzz(arguments)
        print_fuzz_table(results, arguments.rate)
    else:
        if arguments.bootstrap_servers:
            results = run(arguments.bootstrap_servers, arguments)
        else:
            with broker_process() as bootstrap:
                results = run(bootstrap, arguments)
            results["bootstrap_servers"] = "embedded (python -m broker, child process)"
        print_table(results, arguments.rate)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


def _under_fuzz(arguments: argparse.Namespace) -> dict[str, Any]:
    count, rate = arguments.latency_count, arguments.rate
    if arguments.bootstrap_servers:
        return latency_under_fuzz(arguments.bootstrap_servers, count, rate)
    with broker_process() as bootstrap:
        return latency_under_fuzz(bootstrap, count, rate)


if __name__ == "__main__":
    main()
