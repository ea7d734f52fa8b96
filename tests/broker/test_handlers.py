"""The broker's APIs through both clients' admin and consumer calls.

Topics, partitions and configs; consumer groups and their offsets (including an operator's
reset); offsets by timestamp; and the errors refused requests come back with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType
from aiokafka.protocol.produce import ProduceRequest_v3
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
)
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ResourceType,
)
from confluent_kafka.admin import (
    NewPartitions as ConfluentNewPartitions,
)
from confluent_kafka.admin import (
    NewTopic as ConfluentNewTopic,
)

from broker import BrokerThread
from broker.layouts import OFFSET_DELETE_V0
from tests.broker.helpers import CONFLUENT_GROUP_SETTINGS, create_topic, raw_call, wait_for

CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
MESSAGE_TOO_LARGE = 10
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40


# --- produce refusals --------------------------------------------------------------------------


def _batch(value: bytes) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=1, key=None, value=value, headers=[])
    return bytes(builder.build())


def test_corrupt_or_oversized_batches_are_refused_per_partition(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, partitions=3, config={"max.message.bytes": "2000"}
    )
    corrupt = bytearray(_batch(b"payload"))
    corrupt[-2] ^= 0xFF
    request = ProduceRequest_v3(
        None,
        1,
        10_000,
        [(topic, [(0, bytes(corrupt)), (1, _batch(b"x" * 5000)), (2, _batch(b"fine"))])],
    )

    errors = {}
    deadline = time.monotonic() + 20
    # A fresh topic's partitions may not lead yet on Apache Kafka (NOT_LEADER_OR_FOLLOWER,
    # which clients retry): send again until every partition has its own answer.
    while not errors or (NOT_LEADER_OR_FOLLOWER in errors.values() and time.monotonic() < deadline):
        (answered_topic, partitions) = raw_call(bootstrap_servers, request).topics[0]
        assert answered_topic == topic
        errors = {partition: error for partition, error, *_ in partitions}
    assert errors == {0: CORRUPT_MESSAGE, 1: MESSAGE_TOO_LARGE, 2: 0}


# --- topics -------------------------------------------------------------------------------------


def test_confluent_admin_manages_topics(bootstrap_servers: str, unique_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    new = ConfluentNewTopic(
        unique_name, num_partitions=2, replication_factor=1, config={"retention.ms": "3600000"}
    )
    admin.create_topics([new])[unique_name].result(20)

    # Apache Kafka's metadata shows a new topic a moment after CreateTopics answers.
    wait_for(
        lambda: len(admin.list_topics(unique_name, timeout=10).topics[unique_name].partitions) == 2,
        what="2 partitions",
    )
    resource = ConfigResource(ResourceType.TOPIC, unique_name)
    configs = admin.describe_configs([resource])[resource].result(20)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"

    with pytest.raises(KafkaException) as exists:
        admin.create_topics([ConfluentNewTopic(unique_name, 2, 1)])[unique_name].result(20)
    assert exists.value.args[0].code() == TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as replicated:
        admin.create_topics([ConfluentNewTopic(unique_name + "-rf", 1, 3)])[
            unique_name + "-rf"
        ].result(20)
    assert replicated.value.args[0].code() == INVALID_REPLICATION_FACTOR

    admin.create_partitions([ConfluentNewPartitions(unique_name, 5)])[unique_name].result(20)
    wait_for(
        lambda: len(admin.list_topics(unique_name, timeout=10).topics[unique_name].partitions) == 5,
        what="5 partitions",
    )
    with pytest.raises(KafkaException) as shrink:
        admin.create_partitions([ConfluentNewPartitions(unique_name, 3)])[unique_name].result(20)
    assert shrink.value.args[0].code() == INVALID_PARTITIONS

    admin.delete_topics([unique_name])[unique_name].result(20)
    wait_for(lambda: unique_name not in admin.list_topics(timeout=10).topics, what="topic deleted")


async def test_aiokafka_admin_manages_topics(bootstrap_servers: str, unique_name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        created = await admin.create_topics(
            [NewTopic(unique_name, 3, 1, topic_configs={"cleanup.policy": "compact"})]
        )
        assert [(t[0], t[1]) for t in created.topic_errors] == [(unique_name, 0)]
        bad = await admin.create_topics(
            [NewTopic(unique_name + "-x", 1, 1, topic_configs={"no.such": "1"})]
        )
        assert bad.topic_errors[0][1] == INVALID_CONFIG

        # Apache Kafka's metadata follows CreateTopics and CreatePartitions a moment later.
        await _eventually(lambda: _partition_count(admin, unique_name), 3)

        (response,) = await admin.describe_configs(
            [AioConfigResource(ConfigResourceType.TOPIC, unique_name)]
        )
        entries = {e[0]: e[1] for e in response.resources[0][4]}
        assert entries["cleanup.policy"] == "compact"

        (altered,) = await admin.alter_configs(
            [AioConfigResource(ConfigResourceType.TOPIC, unique_name, {"retention.ms": "1000"})]
        )
        assert altered.resources[0][0] == 0
        await _eventually(lambda: _retention_ms(admin, unique_name), [("retention.ms", "1000")])

        grown = await admin.create_partitions({unique_name: NewPartitions(4)})
        assert grown.topic_errors[0][1] == 0
        await _eventually(lambda: _partition_count(admin, unique_name), 4)

        deleted = await admin.delete_topics([unique_name, unique_name + "-missing"])
        assert sorted(deleted.topic_error_codes) == sorted(
            [(unique_name, 0), (unique_name + "-missing", UNKNOWN_TOPIC_OR_PARTITION)]
        )
        await _eventually(lambda: _is_listed(admin, unique_name), False)
    finally:
        await admin.close()


async def _partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    (described,) = await admin.describe_topics([topic])
    return len(described["partitions"]) if described["error_code"] == 0 else -1


async def _retention_ms(admin: AIOKafkaAdminClient, topic: str) -> list[tuple[str, str]]:
    (response,) = await admin.describe_configs(
        [AioConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
    )
    return [(e[0], e[1]) for e in response.resources[0][4]]


async def _is_listed(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()


async def _eventually(probe: Callable[[], Awaitable[object]], expected: object) -> None:
    deadline = time.monotonic() + 20
    while (found := await probe()) != expected:
        assert time.monotonic() < deadline, f"still {found!r}, expected {expected!r}"
        await asyncio.sleep(0.05)  # metadata offers no event to wait on


# --- offsets by timestamp -----------------------------------------------------------------------

STAMPS = [1_000, 2_000, 3_000, 4_000, 5_000]


def test_confluent_offsets_for_times(bootstrap_servers: str, unique_name: str) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 0})
    for stamp in STAMPS:
        producer.produce(topic, value=str(stamp).encode(), timestamp=stamp)
        producer.flush(10)  # one batch per record, so lookups must look inside batches too
    consumer = ConfluentConsumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name})
    try:
        for stamp, expected in [(0, 0), (2_000, 1), (2_500, 2), (5_000, 4), (9_999, -1)]:
            (found,) = consumer.offsets_for_times([ConfluentPartition(topic, 0, stamp)], 10)
            assert found.offset == expected, stamp
        low, high = consumer.get_watermark_offsets(ConfluentPartition(topic, 0), timeout=10)
        assert (low, high) == (0, 5)
    finally:
        consumer.close()


async def test_aiokafka_offsets_for_times(bootstrap_servers: str, unique_name: str) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    partition = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=50)
    await producer.start()
    try:
        for stamp in STAMPS:  # sent together: one batch holding every record
            await producer.send(topic, str(stamp).encode(), timestamp_ms=stamp)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        found = await consumer.offsets_for_times({partition: 2_500})
        assert found[partition] is not None
        assert (found[partition].offset, found[partition].timestamp) == (2, 3_000)
        assert (await consumer.offsets_for_times({partition: 9_999}))[partition] is None
        assert (await consumer.beginning_offsets([partition]))[partition] == 0
        assert (await consumer.end_offsets([partition]))[partition] == 5
    finally:
        await consumer.stop()


def test_retention_moves_the_log_start_that_clients_see(
    bootstrap_servers: str, embedded_broker: BrokerThread | None, unique_name: str
) -> None:
    if embedded_broker is None:
        pytest.skip("forcing a retention pass needs the embedded broker")
    topic = create_topic(
        bootstrap_servers,
        unique_name,
        config={"segment.bytes": "2048", "retention.bytes": "4096"},
    )
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 0})
    for i in range(100):
        producer.produce(topic, f"record-{i}".encode() * 10)
        producer.flush(10)  # one batch per record, so segments fill one by one

    removed = embedded_broker.call(embedded_broker.broker.enforce_retention)

    assert removed > 0
    consumer = ConfluentConsumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(ConfluentPartition(topic, 0), timeout=10)
        assert 0 < low < high == 100
        consumer.assign([ConfluentPartition(topic, 0, 0)])  # below the start: reset to earliest
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                first = message.offset()
        assert first == low
    finally:
        consumer.close()


# --- groups and their offsets -------------------------------------------------------------------


def test_confluent_admin_lists_describes_and_resets_a_group(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for i in range(10):
        producer.produce(topic, value=b"x", partition=i % 2)
    assert producer.flush(10) == 0
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    consumer = ConfluentConsumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **CONFLUENT_GROUP_SETTINGS,
        }
    )
    consumer.subscribe([topic])
    seen = 0

    def consumed_all() -> bool:
        nonlocal seen
        message = consumer.poll(0.05)
        if message is not None and not message.error():
            seen += 1
        return seen == 10

    wait_for(consumed_all, what="10 records")
    consumer.commit(asynchronous=False)

    listed = admin.list_consumer_groups().result(20).valid
    assert unique_name in {group.group_id for group in listed}
    described = admin.describe_consumer_groups([unique_name])[unique_name].result(20)
    assert described.state == ConsumerGroupState.STABLE
    assert len(described.members) == 1
    assigned = {(tp.topic, tp.partition) for tp in described.members[0].assignment.topic_partitions}
    assert assigned == {(topic, 0), (topic, 1)}
    offsets = _group_offsets(admin, unique_name)
    assert offsets == {(topic, 0): 5, (topic, 1): 5}

    # An operator resets the offsets; that needs the group to be inactive.
    consumer.close()
    wait_for(
        lambda: (
            admin.describe_consumer_groups([unique_name])[unique_name].result(20).state
            == ConsumerGroupState.EMPTY
        ),
        what="group empty",
    )
    reset = ConsumerGroupTopicPartitions(
        unique_name, [ConfluentPartition(topic, 0, 1), ConfluentPartition(topic, 1, 2)]
    )
    admin.alter_consumer_group_offsets([reset])[unique_name].result(20)
    assert _group_offsets(admin, unique_name) == {(topic, 0): 1, (topic, 1): 2}

    admin.delete_consumer_groups([unique_name])[unique_name].result(20)
    assert unique_name not in {g.group_id for g in admin.list_consumer_groups().result(20).valid}


def _group_offsets(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {(tp.topic, tp.partition): tp.offset for tp in result.result(20).topic_partitions}


async def test_aiokafka_lists_describes_and_resets_a_group(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    member = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=unique_name,
        enable_auto_commit=False,
        heartbeat_interval_ms=100,
    )
    await member.start()
    try:
        await member.getmany(timeout_ms=100)
        assert len(member.assignment()) == 2
        await member.commit({TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 4})

        assert (unique_name, "consumer") in await admin.list_consumer_groups()
        (response,) = await admin.describe_consumer_groups([unique_name])
        group = response.groups[0]
        assert (group[0], group[1], group[2], group[3]) == (0, unique_name, "Stable", "consumer")
        assert len(group[5]) == 1

        offsets = await admin.list_consumer_group_offsets(unique_name)
        assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 3, 1: 4}

        await member.stop()
        # Resetting offsets the way aiokafka can: a group-less commit once the group is idle.
        resetter = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=unique_name)
        await resetter.start()
        resetter.assign([TopicPartition(topic, 0)])
        await resetter.commit({TopicPartition(topic, 0): 0})
        await resetter.stop()
        offsets = await admin.list_consumer_group_offsets(unique_name)
        assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 0, 1: 4}
    finally:
        await member.stop()
        await admin.close()


def test_offset_delete_removes_offsets_of_unsubscribed_topics(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    committer = ConfluentConsumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name})
    committer.commit(offsets=[ConfluentPartition(topic, 0, 7)], asynchronous=False)
    committer.close()

    request = OFFSET_DELETE_V0(unique_name, [(topic, [(0,)])])
    response = raw_call(bootstrap_servers, request)

    assert response.error_code == 0
    assert response.topics == [(topic, [(0, 0)])]
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    assert _group_offsets(admin, unique_name) == {}
