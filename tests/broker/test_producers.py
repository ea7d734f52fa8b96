"""Idempotent producers' sequence and epoch rules, and LogAppendTime, on the wire.

Shared: these run on the embedded broker and on Apache Kafka and expect the same answers.
Clients hide these errors behind their own retries, so the batches are sent as raw Produce
requests with the producer id InitProducerId hands out.
"""

from __future__ import annotations

import time

from aiokafka.protocol.produce import ProduceRequest_v3
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer
from confluent_kafka import TopicPartition as ConfluentPartition

from tests.broker.helpers import create_topic, raw_call, wait_for

NONE = 0
NOT_LEADER_OR_FOLLOWER = 6
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def _producer_id(bootstrap_servers: str) -> int:
    response = raw_call(bootstrap_servers, InitProducerIdRequest_v0(None, 60_000))
    assert response.error_code == NONE
    producer_id: int = response.producer_id
    return producer_id


def _batch(producer_id: int, epoch: int, sequence: int, *values: bytes, at_ms: int = 1) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        batch_size=1 << 20,
    )
    for delta, value in enumerate(values or (b"v",)):
        builder.append(delta, timestamp=at_ms, key=None, value=value, headers=[])
    return bytes(builder.build())


def _produce(bootstrap_servers: str, topic: str, batch: bytes) -> tuple[int, int, int]:
    """(error, base offset, log append time) of one batch to partition 0 (acks=all)."""
    request = ProduceRequest_v3(None, -1, 10_000, [(topic, [(0, batch)])])
    deadline = time.monotonic() + 20
    while True:
        (_, partitions) = raw_call(bootstrap_servers, request).topics[0]
        _, error, offset, append_time = partitions[0]
        # A fresh topic may not lead yet on Apache Kafka; clients retry this error.
        if error != NOT_LEADER_OR_FOLLOWER or time.monotonic() > deadline:
            return error, offset, append_time


def _end_offset(bootstrap_servers: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": topic})
    try:
        _, high = consumer.get_watermark_offsets(ConfluentPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        consumer.close()


def test_a_retried_batch_is_acknowledged_with_its_offset_and_not_written_again(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = _producer_id(bootstrap_servers)
    first = _batch(producer, 0, 0, b"a", b"b")

    assert _produce(bootstrap_servers, topic, first)[:2] == (NONE, 0)
    assert _produce(bootstrap_servers, topic, _batch(producer, 0, 2, b"c"))[:2] == (NONE, 2)
    assert _produce(bootstrap_servers, topic, first)[:2] == (NONE, 0)  # the retry
    assert _end_offset(bootstrap_servers, topic) == 3


def test_a_gap_in_sequences_is_out_of_order(bootstrap_servers: str, unique_name: str) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = _producer_id(bootstrap_servers)
    assert _produce(bootstrap_servers, topic, _batch(producer, 0, 0))[0] == NONE

    gap = _produce(bootstrap_servers, topic, _batch(producer, 0, 5))
    assert gap[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert _produce(bootstrap_servers, topic, _batch(producer, 0, 1))[:2] == (NONE, 1)
    assert _end_offset(bootstrap_servers, topic) == 2


def test_an_older_epoch_is_refused_and_a_newer_one_starts_at_zero(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = _producer_id(bootstrap_servers)
    assert _produce(bootstrap_servers, topic, _batch(producer, 0, 0))[0] == NONE

    assert _produce(bootstrap_servers, topic, _batch(producer, 1, 3))[0] == (
        OUT_OF_ORDER_SEQUENCE_NUMBER
    )
    assert _produce(bootstrap_servers, topic, _batch(producer, 1, 0))[0] == NONE
    assert _produce(bootstrap_servers, topic, _batch(producer, 0, 1))[0] == INVALID_PRODUCER_EPOCH
    assert _end_offset(bootstrap_servers, topic) == 2


def test_log_append_time_topics_stamp_batches_with_the_brokers_clock(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, config={"message.timestamp.type": "LogAppendTime"}
    )
    before_ms = int(time.time() * 1000)
    error, offset, append_time = _produce(bootstrap_servers, topic, _batch(-1, -1, -1, at_ms=42))
    after_ms = int(time.time() * 1000)
    assert (error, offset) == (NONE, 0)
    assert before_ms <= append_time <= after_ms

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name})
    consumer.assign([ConfluentPartition(topic, 0, 0)])
    received = []

    def consumed() -> bool:
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            received.append(message.timestamp())
        return bool(received)

    try:
        wait_for(consumed, what="the stamped record")
    finally:
        consumer.close()
    assert received == [(TIMESTAMP_LOG_APPEND_TIME, append_time)]


def test_create_time_topics_keep_the_producers_timestamp(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    assert _produce(bootstrap_servers, topic, _batch(-1, -1, -1, at_ms=42)) == (NONE, 0, -1)
