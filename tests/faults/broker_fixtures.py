"""A broker of its own for each broker fault test module, and a client that must keep working."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition

from broker import BrokerThread
from tests.broker.helpers import create_topic


def start_broker(data_dir: Path, **limits: object) -> Iterator[BrokerThread]:
    """An embedded broker with the given limits (EmbeddedBroker's keyword arguments)."""
    runner = BrokerThread(data_dir=data_dir, **limits)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def address(runner: BrokerThread) -> tuple[str, int]:
    host, port = runner.bootstrap_servers.rsplit(":", 1)
    return host, int(port)


class Bystander:
    """An honest producer and consumer on one topic: `round_trip()` proves it is still served."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.topic = create_topic(bootstrap_servers, f"bystander-{uuid.uuid4().hex[:8]}")
        self._producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 0})
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": f"bystander-{uuid.uuid4()}"}
        )
        self._consumer.assign([ConfluentPartition(self.topic, 0, 0)])
        self.delivered = 0

    def round_trip(self, *, timeout_s: float = 30.0) -> None:
        """Produce one record and consume it back; fail naming what did not happen."""
        value = uuid.uuid4().bytes
        self._producer.produce(self.topic, value)
        assert self._producer.flush(timeout_s) == 0, "the bystander's record was not acknowledged"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is not None and not message.error() and message.value() == value:
                self.delivered += 1
                return
        pytest.fail("the bystander's record was not consumed")

    def close(self) -> None:
        self._consumer.close()
