"""aiokafka (Faust's client) on static membership, LogAppendTime and transactions, both backends.

Static membership is what lets a restarted worker take its partitions back without a
rebalance, within its session timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import UnsupportedVersionError

from broker import BrokerThread
from tests.broker.helpers import create_topic

LOG_APPEND_TIME = 1


def _member(bootstrap_servers: str, group: str, instance: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        group_instance_id=instance,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=200,
        auto_offset_reset="earliest",
    )


async def _until(condition: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # group state offers no event to await


async def test_a_static_member_that_restarts_keeps_its_partitions(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=2)
    first = _member(bootstrap_servers, unique_name, "worker-a")
    other = _member(bootstrap_servers, unique_name, "worker-b")
    for consumer in (first, other):
        consumer.subscribe([topic])
        await consumer.start()
    restarted = None
    try:
        await _until(
            lambda: len(first.assignment()) == len(other.assignment()) == 1, "two members split"
        )
        kept, others = first.assignment(), other.assignment()
        generation = other._coordinator.generation  # no public accessor
        await first.stop()
        restarted = _member(bootstrap_servers, unique_name, "worker-a")
        restarted.subscribe([topic])
        await restarted.start()
        await _until(lambda: bool(restarted.assignment()), "the restarted member's assignment")
        assert restarted.assignment() == kept
        assert other.assignment() == others
        assert other._coordinator.generation == generation  # no rebalance
    finally:
        for consumer in (restarted, other):
            if consumer is not None:
                await consumer.stop()


async def test_log_append_time_is_the_records_timestamp_type(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, config={"message.timestamp.type": "LogAppendTime"}
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, b"stamp me", timestamp_ms=42)
    finally:
        await producer.stop()
    assert metadata.timestamp_type == LOG_APPEND_TIME
    assert metadata.timestamp > 42


async def test_transactions_work_on_apache_and_are_not_supported_embedded(
    bootstrap_servers: str, embedded_broker: BrokerThread | None
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, transactional_id=f"tx-{uuid.uuid4()}"
    )
    try:
        if embedded_broker is None:
            await producer.start()
            await producer.begin_transaction()
            await producer.abort_transaction()
            return
        with pytest.raises(UnsupportedVersionError):
            await producer.start()
    finally:
        await producer.stop()
