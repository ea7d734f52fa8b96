"""confluent-kafka (librdkafka) on the divergences issue 10 lists, on both backends.

Static membership, group states in ListGroups, LogAppendTime, idempotent producers,
DeleteRecords, IncrementalAlterConfigs, and what a client is told about transactions and
SASL. Where the embedded broker deliberately lacks a feature (transactions) the test states
both answers: Apache Kafka's success, and the embedded broker's "not supported".
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from broker import BrokerThread
from tests.broker.helpers import create_topic, wait_for

SESSION_TIMEOUT_MS = 10_000
STABLE = ConsumerGroupState.STABLE
SET, APPEND = AlterConfigOpType.SET, AlterConfigOpType.APPEND


class Member:
    """A consumer-group member that records every assignment and revocation it is told of."""

    def __init__(self, bootstrap_servers: str, group: str, topic: str, instance: str) -> None:
        self.assignments: list[set[int]] = []
        self.revocations = 0
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group,
                "group.instance.id": instance,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 200,
                "partition.assignment.strategy": "range",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignments.append({p.partition for p in partitions})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.revocations += 1

    @property
    def partitions(self) -> set[int]:
        return self.assignments[-1] if self.assignments else set()


def _poll_all(*members: Member) -> None:
    for member in members:
        member.consumer.poll(0.05)


def test_a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=2)
    first = Member(bootstrap_servers, unique_name, topic, "worker-a")
    other = Member(bootstrap_servers, unique_name, topic, "worker-b")

    def both_assigned() -> bool:
        _poll_all(first, other)
        return len(first.partitions) == len(other.partitions) == 1

    wait_for(both_assigned, timeout_s=60, what="two members sharing two partitions")
    kept = first.partitions
    assignments_before, revocations_before = len(other.assignments), other.revocations

    first.consumer.close()  # a static member sends no LeaveGroup: it keeps its place
    restarted = Member(bootstrap_servers, unique_name, topic, "worker-a")

    def reassigned() -> bool:
        _poll_all(restarted, other)
        return bool(restarted.assignments)

    try:
        wait_for(reassigned, timeout_s=60, what="the restarted member's assignment")
        assert restarted.partitions == kept
        # Had the group rebalanced, the other member would have had to give up its partition
        # and rejoin before the restarted one could be assigned anything.
        assert (len(other.assignments), other.revocations) == (
            assignments_before,
            revocations_before,
        )
    finally:
        restarted.consumer.close()
        other.consumer.close()


def test_group_states_are_listed_and_filtered(bootstrap_servers: str, unique_name: str) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    member = Member(bootstrap_servers, unique_name, topic, "lister")
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def listed_as(states: set[ConsumerGroupState] | None) -> dict[str, ConsumerGroupState]:
        listing = admin.list_consumer_groups(states=states).result(20)
        return {group.group_id: group.state for group in listing.valid}

    try:
        wait_for(
            lambda: (
                _polled(member) and listed_as(None).get(unique_name) == ConsumerGroupState.STABLE
            ),
            timeout_s=60,
            what="the group listed as STABLE",
        )
        assert unique_name in listed_as({ConsumerGroupState.STABLE})
        assert unique_name not in listed_as({ConsumerGroupState.EMPTY})
    finally:
        member.consumer.close()


def _polled(member: Member) -> bool:
    member.consumer.poll(0.05)
    return True


def test_log_append_time_reaches_the_producers_delivery_report(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, config={"message.timestamp.type": "LogAppendTime"}
    )
    reports: list[tuple[int, int]] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        reports.append(message.timestamp())

    producer = Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(topic, b"stamp me", timestamp=42, on_delivery=delivered)
    assert producer.flush(20) == 0
    (kind, stamp) = reports[0]
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert stamp > 42


def test_an_idempotent_producer_delivers_each_record_once_in_order(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "linger.ms": 2}
    )
    for index in range(500):
        producer.produce(topic, str(index).encode())
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []

    def everything() -> bool:
        values.extend(m.value() for m in consumer.consume(500, 0.2) if not m.error())
        return len(values) >= 500

    try:
        wait_for(everything, what="500 records")
    finally:
        consumer.close()
    assert values == [str(index).encode() for index in range(500)]


def test_delete_records_moves_the_log_start(bootstrap_servers: str, unique_name: str) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for index in range(10):
        producer.produce(topic, str(index).encode())
    assert producer.flush(20) == 0
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    (deleted,) = admin.delete_records([TopicPartition(topic, 0, 4)]).values()
    assert deleted.result(20).low_watermark == 4
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (4, 10)
    finally:
        consumer.close()
    with pytest.raises(KafkaException) as beyond:
        (past_end,) = admin.delete_records([TopicPartition(topic, 0, 11)]).values()
        past_end.result(20)
    assert beyond.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE


def test_incremental_alter_configs_sets_appends_and_deletes(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, config={"retention.ms": "3600000"})
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    changes = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("segment.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry(
                "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND
            ),
        ],
    )
    for future in admin.incremental_alter_configs([changes]).values():
        future.result(20)

    def described() -> dict[str, Any]:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        return {
            k: v.value for k, v in admin.describe_configs([resource])[resource].result(20).items()
        }

    wanted = {
        "segment.ms": "7200000",
        "retention.ms": "604800000",
        "cleanup.policy": "delete,compact",
    }
    wait_for(
        lambda: {key: described()[key] for key in wanted} == wanted, what="the altered configs"
    )


def test_transactions_work_on_apache_and_are_not_supported_embedded(
    bootstrap_servers: str, embedded_broker: BrokerThread | None
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "transactional.id": f"tx-{uuid.uuid4()}"}
    )
    if embedded_broker is None:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.abort_transaction(30)
        return
    # librdkafka retries this answer until init_transactions' timeout, then raises it.
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(3)
    assert refused.value.args[0].code() == KafkaError.UNSUPPORTED_VERSION


def test_sasl_on_the_plaintext_listener_fails_the_same_way(bootstrap_servers: str) -> None:
    errors: list[str] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "rep",
            "sasl.password": "secret",
            "error_cb": lambda error: errors.append(error.str()),
        }
    )
    wait_for(lambda: producer.poll(0.1) >= 0 and bool(errors), what="an authentication error")
    assert "Request not valid in current SASL state" in errors[0]
