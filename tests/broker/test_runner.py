"""Restarts: committed offsets survive a clean restart, and records survive a kill -9.

These run their own broker (a thread, or `python -m broker` in a child process for kill -9),
so they cannot run against an external Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition

from broker import BrokerThread
from tests.broker.helpers import BrokerProcess, create_topic, wait_for
from tests.conftest import external_bootstrap_servers

pytestmark = pytest.mark.skipif(
    external_bootstrap_servers() is not None, reason="restarts need the embedded broker"
)


def _read_all(bootstrap: str, topic: str, partitions: int) -> dict[tuple[int, int], bytes]:
    """Every record of a topic, by (partition, offset), read without a group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader"})
    ends = {}
    for partition in range(partitions):
        _, high = consumer.get_watermark_offsets(ConfluentPartition(topic, partition), timeout=10)
        ends[partition] = high
    consumer.assign([ConfluentPartition(topic, p, 0) for p in range(partitions)])
    records: dict[tuple[int, int], bytes] = {}

    def everything_read() -> bool:
        for message in consumer.consume(1000, 0.1):
            if not message.error():
                records[(message.partition(), message.offset())] = message.value()
        return all(
            sum(1 for (p, _) in records if p == partition) >= end for partition, end in ends.items()
        )

    try:
        # Failing here means the records could not be read back in time, not that they are lost:
        # the log end offsets (`ends`) already say what survived the crash.
        wait_for(everything_read, timeout_s=120, what=f"every stored record (log ends {ends})")
    finally:
        consumer.close()
    return records


def test_committed_offsets_survive_a_restart_confluent(tmp_path: Path) -> None:
    runner = BrokerThread(data_dir=tmp_path)
    runner.start()
    try:
        bootstrap = runner.bootstrap_servers
        topic = create_topic(bootstrap, "restart-confluent", partitions=2)
        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(20):
            producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
        assert producer.flush(10) == 0
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "keeper", "enable.auto.commit": False}
        )
        consumer.assign([ConfluentPartition(topic, 0, 0), ConfluentPartition(topic, 1, 0)])
        consumer.commit(
            offsets=[ConfluentPartition(topic, 0, 4), ConfluentPartition(topic, 1, 7)],
            asynchronous=False,
        )
        consumer.close()
    finally:
        runner.stop()

    restarted = BrokerThread(data_dir=tmp_path)
    restarted.start()
    try:
        consumer = Consumer(
            {"bootstrap.servers": restarted.bootstrap_servers, "group.id": "keeper"}
        )
        committed = consumer.committed(
            [ConfluentPartition(topic, 0), ConfluentPartition(topic, 1)], timeout=10
        )
        assert [(tp.partition, tp.offset) for tp in committed] == [(0, 4), (1, 7)]
        consumer.subscribe([topic])
        first: dict[int, int] = {}
        wait_for(
            lambda: _poll_into(consumer, first) and len(first) == 2, what="resumed consumption"
        )
        assert first == {0: 4, 1: 7}
        consumer.close()
    finally:
        restarted.stop()


def _poll_into(consumer: Consumer, first: dict[int, int]) -> bool:
    message = consumer.poll(0.05)
    if message is not None and not message.error():
        first.setdefault(message.partition(), message.offset())
    return True


async def test_committed_offsets_survive_a_restart_aiokafka(tmp_path: Path) -> None:
    runner = BrokerThread(data_dir=tmp_path)
    runner.start()
    topic = "restart-aiokafka"
    partition = TopicPartition(topic, 0)
    try:
        create_topic(runner.bootstrap_servers, topic)
        producer = AIOKafkaProducer(bootstrap_servers=runner.bootstrap_servers)
        await producer.start()
        for i in range(10):
            await producer.send(topic, f"v{i}".encode())
        await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=runner.bootstrap_servers,
            group_id="keeper",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        seen = 0
        while seen < 6:
            message = await asyncio.wait_for(consumer.getone(), 20)
            seen += 1
        await consumer.commit({partition: message.offset + 1})
        await consumer.stop()
    finally:
        await asyncio.to_thread(runner.stop)

    restarted = BrokerThread(data_dir=tmp_path)
    restarted.start()
    try:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=restarted.bootstrap_servers, group_id="keeper"
        )
        await consumer.start()
        try:
            assert await consumer.committed(partition) == 6
            message = await asyncio.wait_for(consumer.getone(), 20)
            assert (message.offset, message.value) == (6, b"v6")
        finally:
            await consumer.stop()
    finally:
        await asyncio.to_thread(restarted.stop)


def test_kill_9_loses_no_acknowledged_record_confluent(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path)
    bootstrap = broker.start()
    acknowledged: dict[tuple[int, int], bytes] = {}
    try:
        topic = create_topic(bootstrap, "crash-confluent", partitions=3)
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 1,
                "message.timeout.ms": 2000,
            }
        )

        def delivered(error: object, message: object) -> None:
            if error is None:
                acknowledged[(message.partition(), message.offset())] = message.value()  # type: ignore[attr-defined]

        stop = threading.Event()

        def keep_producing() -> None:
            i = 0
            while not stop.is_set():
                producer.produce(topic, value=f"r{i}".encode(), on_delivery=delivered)
                producer.poll(0)
                i += 1
                if i % 100 == 0:
                    producer.flush(0.01)

        worker = threading.Thread(target=keep_producing, daemon=True)
        worker.start()
        wait_for(lambda: len(acknowledged) >= 2000, what="2000 acknowledged records")
        committer = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-group"})
        committer.commit(
            offsets=[ConfluentPartition("crash-confluent", 0, 123)], asynchronous=False
        )
        committer.close()
        broker.kill()  # mid-stream: the producer is still sending
        stop.set()
        worker.join(10)
        producer.flush(3)  # let the producer settle what it has (failures are not acked)
    finally:
        broker.kill()

    restarted = BrokerProcess(tmp_path)
    bootstrap = restarted.start()
    try:
        stored = _read_all(bootstrap, "crash-confluent", 3)
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-group"})
        (committed,) = reader.committed([ConfluentPartition("crash-confluent", 0)], timeout=10)
        reader.close()
        assert committed.offset == 123
    finally:
        assert restarted.terminate() == 0
    missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {list(missing)[:5]}"


async def test_kill_9_loses_no_acknowledged_record_aiokafka(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path)
    bootstrap = await asyncio.to_thread(broker.start)
    acknowledged: dict[tuple[int, int], bytes] = {}
    try:
        await asyncio.to_thread(create_topic, bootstrap, "crash-aiokafka", partitions=3)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=1, request_timeout_ms=2000
        )
        await producer.start()
        i = 0
        pending: set[asyncio.Future[object]] = set()
        try:
            while len(acknowledged) < 2000:
                value = f"r{i}".encode()
                future = await producer.send("crash-aiokafka", value)
                future.add_done_callback(_recorder(acknowledged, value))
                pending.add(future)
                i += 1
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let deliveries complete
            broker.kill()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            # The broker is gone: records still unsent were never acknowledged.
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.stop(), 10)
    finally:
        broker.kill()

    restarted = BrokerProcess(tmp_path)
    bootstrap = await asyncio.to_thread(restarted.start)
    try:
        stored = await asyncio.to_thread(_read_all, bootstrap, "crash-aiokafka", 3)
    finally:
        assert await asyncio.to_thread(restarted.terminate) == 0
    missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {list(missing)[:5]}"


def _recorder(acknowledged: dict[tuple[int, int], bytes], value: bytes) -> object:
    def done(future: asyncio.Future[object]) -> None:
        if not future.cancelled() and future.exception() is None:
            metadata = future.result()
            acknowledged[(metadata.partition, metadata.offset)] = value  # type: ignore[attr-defined]

    return done
