"""Worker fault tests' helpers: which worker owns a conversation, killing it, reading topics."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import confluent_kafka
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka.admin import AdminClient

from core.kafka.catalog import TopicCatalog
from schemas.codec import default_codec
from schemas.events import Event
from teleprompter.local_system import LocalSystem
from tests.waiting import wait_until


def partition_of(conversation_id: str, partitions: int) -> int:
    """The partition Faust, the gateway and Java clients all put a conversation on (murmur2)."""
    key = conversation_id.encode()
    return int(DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))))


def worker_assignments(system: LocalSystem) -> dict[str, set[int]]:
    """Transcript partitions by worker child name (`worker`, `worker-1`, ...), from the group."""
    s = system.resolved
    group = f"{s.topic_prefix}-worker"
    transcripts = TopicCatalog.from_settings(s).transcripts.name
    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
    [description] = [f.result(timeout=10) for f in admin.describe_consumer_groups([group]).values()]
    owned: dict[str, set[int]] = {}
    for member in description.members:
        # The worker's client id names it even where the broker drops the static member id.
        instance = member.group_instance_id or member.client_id.removeprefix("teleprompter-")
        name = instance.removeprefix(f"{s.topic_prefix}-")
        owned[name] = {
            tp.partition for tp in member.assignment.topic_partitions if tp.topic == transcripts
        }
    return owned


async def conversation_owned_by(system: LocalSystem, worker: str, *, prefix: str) -> str:
    """A fresh conversation id whose partition `worker` owns now."""
    owned = await asyncio.to_thread(worker_assignments, system)
    partitions = system.resolved.partitions
    for n in range(10_000):
        cid = f"{prefix}-{n}"
        if partition_of(cid, partitions) in owned.get(worker, set()):
            return cid
    raise AssertionError(f"{worker} owns no partition: {owned}")


async def kill_worker(system: LocalSystem, name: str) -> float:
    """kill -9 one worker; returns the monotonic time of the kill."""
    os.kill(system.child_pids()[name], signal.SIGKILL)
    killed_at = time.monotonic()
    await wait_until(lambda: name in system.dead_children(), what=f"{name} to die")
    return killed_at


def read_topic(bootstrap_servers: str, topic: str, *, timeout_s: float = 20.0) -> list[Event]:
    """Every record of `topic` from the beginning, decoded (blocking: run it in a thread)."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    codec = default_codec()
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in partitions
            ]
        )
        events: list[Event] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None:
                continue
            if record.error() is not None:
                if record.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(record.partition())
                continue
            events.append(codec.decode(record.value() or b"", topic=topic, offset=record.offset()))
        return events
    finally:
        consumer.close()


def produce(bootstrap_servers: str, topic: str, events: list[Event]) -> None:
    """Write `events` keyed by conversation, as the gateway does (blocking)."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap_servers, "partitioner": "murmur2_random"}
    )
    codec = default_codec()
    for event in events:
        producer.produce(topic, key=event.key, value=codec.encode(event))
    assert producer.flush(20) == 0


def first(messages: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]) -> Any:
    return next((m for m in messages if predicate(m)), None)
