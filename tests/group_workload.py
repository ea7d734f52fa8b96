"""Real consumer groups on the session's Kafka: a topic with records, members that commit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.broker.helpers import CONFLUENT_GROUP_SETTINGS, create_topic, wait_for

PARTITIONS: Final = 3
RECORDS_PER_PARTITION: Final = 10
CLIENT_ID: Final = "tp-groups-test"


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A topic with records in every partition, and the group that will consume it."""

    bootstrap_servers: str
    topic: str
    group: str

    def produce(self, per_partition: int) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap_servers})
        for partition in range(PARTITIONS):
            for n in range(per_partition):
                producer.produce(self.topic, value=f"r{n}".encode(), partition=partition)
        assert producer.flush(20) == 0

    @contextlib.contextmanager
    def member(self) -> Iterator[Member]:
        """A consumer joined to the group, holding every partition, until the block ends."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group,
                "client.id": CLIENT_ID,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **CONFLUENT_GROUP_SETTINGS,
            }
        )
        consumer.subscribe([self.topic])

        def assigned() -> bool:
            consumer.poll(0.1)
            return len(consumer.assignment()) == PARTITIONS

        try:
            wait_for(assigned, timeout_s=60, what=f"{self.group} to be assigned {self.topic}")
            yield Member(consumer=consumer, topic=self.topic, member_id=consumer.memberid())
        finally:
            consumer.close()


@dataclass(frozen=True, kw_only=True)
class Member:
    consumer: Consumer
    topic: str
    member_id: str

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit these offsets by partition, synchronously."""
        self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
            asynchronous=False,
        )


@pytest.fixture
def workload(bootstrap_servers: str, unique_name: str) -> Workload:
    """A fresh topic of 3 partitions holding 10 records each; the group has not joined yet."""
    topic = create_topic(bootstrap_servers, unique_name, partitions=PARTITIONS)
    load = Workload(bootstrap_servers=bootstrap_servers, topic=topic, group=f"g-{unique_name}")
    load.produce(RECORDS_PER_PARTITION)
    return load
