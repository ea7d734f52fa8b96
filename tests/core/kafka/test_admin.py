"""TopicAdmin against the session's real broker: provisioning, differences, inspection, errors."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from core.kafka.admin import KafkaAdminError, TopicAdmin
from core.kafka.catalog import HOUR_MS, TopicCatalog, TopicSpec
from core.settings import Settings
from schemas.events import SuggestionEvent, Turn


@pytest.fixture
def admin(bootstrap_servers: str) -> TopicAdmin:
    return TopicAdmin(bootstrap_servers=bootstrap_servers)


def spec(name: str, **changes: Any) -> TopicSpec:
    values: dict[str, Any] = {
        "name": name,
        "event_type": Turn,
        "partitions": 3,
        "retention_ms": 2 * HOUR_MS,
    }
    values.update(changes)
    return TopicSpec(**values)


async def create_directly(bootstrap_servers: str, topic: NewTopic) -> None:
    """Make a topic with confluent-kafka itself, as an operator (or an older release) would."""
    client = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = client.create_topics([topic], request_timeout=10)
    await asyncio.wrap_future(futures[topic.topic])


async def configs_directly(bootstrap_servers: str, topic: str) -> dict[str, str]:
    client = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    entries = await asyncio.wrap_future(next(iter(futures.values())))
    return {name: entry.value for name, entry in entries.items()}


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- ensure_topics --------------------------------------------------------------------------


async def test_creates_the_whole_catalog(
    admin: TopicAdmin, bootstrap_servers: str, unique_name: str
) -> None:
    prefix = unique_name.replace("-", "_")[-40:]
    catalog = TopicCatalog.from_settings(Settings(topic_prefix=prefix, partitions=4))

    report = await admin.ensure_topics(catalog.shared_topics)

    assert report.created == tuple(spec.name for spec in catalog.shared_topics)
    assert report.ok
    topics = await admin.list_topics()
    for wanted in catalog.shared_topics:
        assert topics[wanted.name].partitions == 4
        assert topics[wanted.name].replication_factor == 1
        configs = await configs_directly(bootstrap_servers, wanted.name)
        for key, value in wanted.config.items():
            assert configs[key] == value, (wanted.name, key)


async def test_second_run_changes_nothing(admin: TopicAdmin, unique_name: str) -> None:
    specs = [spec(f"{unique_name}.a"), spec(f"{unique_name}.b", cleanup_policy="compact")]
    await admin.ensure_topics(specs)

    again = await admin.ensure_topics(specs)

    assert again.created == ()
    assert again.matching == (f"{unique_name}.a", f"{unique_name}.b")
    assert again.ok
    assert again.summary() == "0 created, 2 already as specified"


async def test_creates_only_what_is_missing(
    admin: TopicAdmin, bootstrap_servers: str, unique_name: str
) -> None:
    present = spec(f"{unique_name}.present")
    await create_directly(
        bootstrap_servers,
        NewTopic(present.name, num_partitions=3, replication_factor=1, config=present.config),
    )

    report = await admin.ensure_topics([present, spec(f"{unique_name}.absent")])

    assert report.created == (f"{unique_name}.absent",)
    assert report.matching == (present.name,)


async def test_differences_are_reported_and_left_alone(
    admin: TopicAdmin, bootstrap_servers: str, unique_name: str
) -> None:
    name = f"{unique_name}.drifted"
    await create_directly(
        bootstrap_servers,
        NewTopic(
            name,
            num_partitions=2,
            replication_factor=1,
            config={"cleanup.policy": "delete", "retention.ms": "60000"},
        ),
    )
    wanted = spec(name, partitions=5, retention_ms=3 * HOUR_MS)

    report = await admin.ensure_topics([wanted])

    assert not report.ok
    assert report.created == ()
    assert report.matching == ()
    found = {(d.setting, d.actual, d.expected) for d in report.differing[name]}
    assert found == {("partitions", "2", "5"), ("retention.ms", "60000", str(3 * HOUR_MS))}
    assert "partitions is 2, the catalog says 5" in report.status(name)
    assert name in report.summary()
    # Nothing was altered.
    assert (await admin.list_topics())[name].partitions == 2
    assert (await configs_directly(bootstrap_servers, name))["retention.ms"] == "60000"


async def test_a_compacted_topic_that_deletes_differs(
    admin: TopicAdmin, bootstrap_servers: str, unique_name: str
) -> None:
    name = f"{unique_name}.routes"
    await create_directly(bootstrap_servers, NewTopic(name, num_partitions=3, replication_factor=1))

    report = await admin.ensure_topics([spec(name, cleanup_policy="compact")])

    (difference,) = report.differing[name]
    assert (difference.setting, difference.actual, difference.expected) == (
        "cleanup.policy",
        "delete",
        "compact",
    )


async def test_concurrent_provisioning_creates_each_topic_once(
    bootstrap_servers: str, unique_name: str
) -> None:
    specs = [spec(f"{unique_name}.{n}") for n in range(4)]
    first, second = (TopicAdmin(bootstrap_servers=bootstrap_servers) for _ in range(2))

    reports = await asyncio.gather(first.ensure_topics(specs), second.ensure_topics(specs))

    created = [name for report in reports for name in report.created]
    assert sorted(created) == sorted(s.name for s in specs)
    for report in reports:
        assert report.ok
        assert sorted(report.created + report.matching) == sorted(s.name for s in specs)


async def test_conflicting_specs_for_one_topic_are_refused(
    admin: TopicAdmin, unique_name: str
) -> None:
    with pytest.raises(ValueError, match=f"{unique_name}.x"):
        await admin.ensure_topics(
            [spec(f"{unique_name}.x"), spec(f"{unique_name}.x", partitions=9)]
        )


# --- inspection -----------------------------------------------------------------------------


async def test_list_topics_shows_partitions(admin: TopicAdmin, unique_name: str) -> None:
    await admin.ensure_topics([spec(f"{unique_name}.listed", partitions=6)])

    topics = await admin.list_topics()

    assert topics[f"{unique_name}.listed"].partitions == 6
    assert not any(name.startswith("__") for name in topics)


async def test_describe_shows_offsets_and_configs(
    admin: TopicAdmin, bootstrap_servers: str, unique_name: str
) -> None:
    name = f"{unique_name}.described"
    await admin.ensure_topics([spec(name, event_type=SuggestionEvent, partitions=2)])
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for n in range(5):
        producer.produce(name, value=b"x", partition=n % 2)
    assert await asyncio.to_thread(producer.flush, 10.0) == 0

    (description,) = await admin.describe_topics([name])

    assert description.name == name
    assert [p.partition for p in description.partitions] == [0, 1]
    assert [(p.start_offset, p.end_offset) for p in description.partitions] == [(0, 3), (0, 2)]
    assert description.record_count == 5
    assert description.replication_factor == 1
    assert all(p.leader in p.replicas for p in description.partitions)
    assert description.configs["cleanup.policy"] == "delete"
    assert description.configs["retention.ms"] == str(2 * HOUR_MS)
    assert {"cleanup.policy", "retention.ms"} <= description.set_on_topic


async def test_describe_names_missing_topics(admin: TopicAdmin, unique_name: str) -> None:
    with pytest.raises(KafkaAdminError, match=f"no such topic .*{unique_name}.nothing"):
        await admin.describe_topics([f"{unique_name}.nothing"])


# --- errors ---------------------------------------------------------------------------------


async def test_unreachable_kafka_names_servers_and_timeout() -> None:
    servers = f"127.0.0.1:{closed_port()}"
    admin = TopicAdmin(bootstrap_servers=servers, timeout_s=1.0)

    with pytest.raises(KafkaAdminError, match=rf"Kafka at {servers} did not answer within 1 s"):
        await admin.ensure_topics([spec("never")])
    with pytest.raises(KafkaAdminError, match=servers):
        await admin.list_topics()


async def test_invalid_client_config_is_an_admin_error() -> None:
    with pytest.raises(KafkaAdminError, match=r"no\.such\.property"):
        TopicAdmin(bootstrap_servers="127.0.0.1:9", client_config={"no.such.property": "1"})


async def test_a_topic_kafka_refuses_names_the_topic(admin: TopicAdmin, unique_name: str) -> None:
    bad = spec(f"{unique_name}.bad", extra_config={"cleanup.policy": "shred"})

    with pytest.raises(KafkaAdminError, match=rf"could not create topics .*{unique_name}\.bad"):
        await admin.ensure_topics([bad])


# --- consumer groups ------------------------------------------------------------------------


async def test_unknown_group_is_not_stable(admin: TopicAdmin, unique_name: str) -> None:
    assert not await admin.group_is_stable(unique_name, members=1)


async def test_group_is_stable_once_its_members_have_joined(
    admin: TopicAdmin, bootstrap_servers: str, unique_name: str
) -> None:
    topic = f"{unique_name}.grouped"
    await admin.ensure_topics([spec(topic, partitions=2)])
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name,
            "heartbeat.interval.ms": 200,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30.0
        # The consumer joins while it polls; the group settles once the join completes.
        while not await admin.group_is_stable(unique_name, members=1):
            assert time.monotonic() < deadline, "group never became stable with one member"
            await asyncio.to_thread(consumer.poll, 0.1)

        assert not await admin.group_is_stable(unique_name, members=2)
    finally:
        await asyncio.to_thread(consumer.close)
