"""A key's partition is where the system's producers put it, on either broker."""

from __future__ import annotations

import asyncio

import confluent_kafka
import pytest

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicSpec
from gateway.event_producer import LATENCY_PRODUCER_CONFIG
from schemas.events import Turn
from teleprompter.event_log.partitions import partition_for_key


def test_matches_where_the_gateways_producer_puts_each_key(
    bootstrap_servers: str, unique_name: str
) -> None:
    partitions = 7
    asyncio.run(
        TopicAdmin(bootstrap_servers=bootstrap_servers).ensure_topics(
            [TopicSpec(name=unique_name, event_type=Turn, partitions=partitions)]
        )
    )
    keys = [f"conv-{i}".encode() for i in range(40)] + ["é-日本".encode(), b"x", b""]
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "partitioner": LATENCY_PRODUCER_CONFIG["partitioner"],
        }
    )
    landed: dict[bytes, int] = {}

    def delivered(error: object, message: confluent_kafka.Message) -> None:
        assert error is None
        landed[message.key() or b""] = message.partition() or 0

    for key in keys:
        producer.produce(unique_name, value=b"v", key=key, on_delivery=delivered)
    assert producer.flush(30) == 0

    assert {key: partition_for_key(key, partitions) for key in keys} == landed
    assert len(set(landed.values())) > 1  # the keys spread: the test can tell partitions apart


def test_a_topic_has_partitions() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for_key(b"k", 0)
