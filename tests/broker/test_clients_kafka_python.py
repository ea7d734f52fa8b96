"""kafka-python on the divergences issue 10 lists, on both backends.

kafka-python reported an authorization failure for transactions before; it now gets
UNSUPPORTED_VERSION from the embedded broker (and works on Apache Kafka).
"""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, UnsupportedVersionError
from kafka.errors import KafkaTimeoutError as KafkaPythonTimeout

from broker import BrokerThread
from tests.broker.helpers import create_topic, wait_for

LOG_APPEND_TIME = 1


@pytest.fixture
def admin(bootstrap_servers: str) -> KafkaAdminClient:
    client = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    yield client
    client.close()


def _consumer(bootstrap_servers: str, group: str, **options: object) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=200,
        **options,
    )


def test_a_static_member_that_restarts_keeps_its_partitions(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=2)
    first = _consumer(bootstrap_servers, unique_name, group_instance_id="worker-a")
    other = _consumer(bootstrap_servers, unique_name, group_instance_id="worker-b")
    first.subscribe([topic])
    other.subscribe([topic])

    def split() -> bool:
        first.poll(50)
        other.poll(50)
        return len(first.assignment()) == len(other.assignment()) == 1

    wait_for(split, timeout_s=60, what="two static members sharing two partitions")
    kept = first.assignment()
    others = other.assignment()
    first.close()
    restarted = _consumer(bootstrap_servers, unique_name, group_instance_id="worker-a")
    restarted.subscribe([topic])
    try:

        def back() -> bool:
            restarted.poll(50)
            other.poll(50)
            return bool(restarted.assignment())

        wait_for(back, timeout_s=60, what="the restarted member's assignment")
        assert restarted.assignment() == kept
        assert other.assignment() == others
    finally:
        restarted.close()
        other.close()


def test_groups_are_listed_with_their_state(
    bootstrap_servers: str, unique_name: str, admin: KafkaAdminClient
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    member = _consumer(bootstrap_servers, unique_name)
    member.subscribe([topic])
    try:

        def stable() -> bool:
            member.poll(50)
            return any(
                _group_id(g) == unique_name for g in admin.list_groups(states_filter=["Stable"])
            )

        wait_for(stable, timeout_s=60, what="the group listed as Stable")
        assert not any(
            _group_id(g) == unique_name for g in admin.list_groups(states_filter=["Empty"])
        )
    finally:
        member.close()


def _group_id(listed: dict[str, str]) -> str:
    return listed["group_id"]


def test_log_append_time_is_the_records_timestamp_type(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, config={"message.timestamp.type": "LogAppendTime"}
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
    producer.send(topic, b"stamp me", timestamp_ms=42).get(20)
    producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    records = []
    try:
        wait_for(
            lambda: bool(
                records.extend(r for rs in consumer.poll(200).values() for r in rs) or records
            ),
            what="the stamped record",
        )
    finally:
        consumer.close()
    assert records[0].timestamp_type == LOG_APPEND_TIME
    assert records[0].timestamp > 42


def test_delete_records_moves_the_log_start(
    bootstrap_servers: str, unique_name: str, admin: KafkaAdminClient
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers)
    for index in range(10):
        producer.send(topic, str(index).encode())
    producer.flush(20)
    producer.close()

    admin.delete_records({TopicPartition(topic, 0): 6})
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        partition = TopicPartition(topic, 0)
        assert consumer.beginning_offsets([partition])[partition] == 6
    finally:
        consumer.close()


def test_incremental_alter_configs(
    bootstrap_servers: str, unique_name: str, admin: KafkaAdminClient
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    admin.alter_configs(
        [
            ConfigResource(
                ConfigResourceType.TOPIC, topic, configs={"retention.ms": ("SET", "5000")}
            )
        ],
        incremental=True,
    )

    def retention() -> str:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return str(described["topic"][topic].get("retention.ms"))

    wait_for(lambda: "5000" in retention(), what="retention.ms set to 5000")


def test_transactions_work_on_apache_and_are_not_supported_embedded(
    bootstrap_servers: str, embedded_broker: BrokerThread | None
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers, transactional_id=f"tx-{uuid.uuid4()}"
    )
    try:
        if embedded_broker is None:
            producer.init_transactions()
            producer.begin_transaction()
            producer.abort_transaction()
            return
        with pytest.raises(KafkaError) as refused:
            producer.init_transactions()
        assert "UnsupportedVersionError" in str(refused.value) or isinstance(
            refused.value, UnsupportedVersionError
        )
    finally:
        producer.close(timeout=5)


def test_sasl_on_the_plaintext_listener_fails_the_same_way(bootstrap_servers: str) -> None:
    with pytest.raises(KafkaPythonTimeout):
        KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="rep",
            sasl_plain_password="secret",
            bootstrap_timeout_ms=3000,
        )
