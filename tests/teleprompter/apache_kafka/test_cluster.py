"""ApacheKafkaCluster: real Kafka nodes that serve, survive kill -9 and leave nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.membership import broker_session_floor_s
from teleprompter.apache_kafka.cluster import ApacheKafkaCluster, ClusterLayout, DataDirError
from tests.teleprompter.apache_kafka.jvms import jvms_under, port_open

# C1-only JIT: the nodes start on a fraction of the CPU (see teleprompter/apache_kafka/jvm.py).
QUICK: Final = "quick-start"


async def test_one_node_serves_survives_kill_9_and_stops_without_a_trace(tmp_path: Path) -> None:
    async with ApacheKafkaCluster(nodes=1, data_dir=tmp_path, profile=QUICK) as cluster:
        assert cluster.node_ids == (1,)
        (address,) = cluster.bootstrap_servers.split(",")
        assert address.startswith("127.0.0.1:")
        assert jvms_under(tmp_path) == [cluster.pid(1)]
        # Workers' 3 s session timeout is allowed, not raised to Kafka's default 6 s floor.
        assert await asyncio.to_thread(broker_session_floor_s, cluster.bootstrap_servers) == 2.0
        topic = await _create_topic(cluster, "events", replicas=1)
        await _produce(cluster.bootstrap_servers, topic, [b"before the crash"])

        await cluster.kill(1)

        assert not cluster.is_running(1)
        assert jvms_under(tmp_path) == []
        await cluster.start(1)
        await _produce(cluster.bootstrap_servers, topic, [b"after the restart"])
        assert await _read(cluster.bootstrap_servers, topic, 2) == [
            b"before the crash",
            b"after the restart",
        ]
        port = int(address.rsplit(":", 1)[1])

    assert jvms_under(tmp_path) == []
    assert not await port_open(port)
    assert (tmp_path / "node-1" / "logs" / "server.log").stat().st_size > 0


async def test_a_data_dir_of_another_size_is_refused_before_any_jvm_starts(
    tmp_path: Path,
) -> None:
    ClusterLayout.new(1).save(tmp_path / "cluster.json")

    with pytest.raises(DataDirError, match="holds a 1-node Apache Kafka cluster, not 3"):
        async with ApacheKafkaCluster(nodes=3, data_dir=tmp_path):
            pass

    assert not (tmp_path / "node-1").exists()


# --- helpers --------------------------------------------------------------------------------
async def _create_topic(
    cluster: ApacheKafkaCluster, name: str, *, replicas: int, min_insync: int = 1
) -> str:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    new = NewTopic(
        name,
        num_partitions=1,
        replication_factor=replicas,
        config={"min.insync.replicas": str(min_insync)},
    )
    admin.create_topics([new])[name].result(timeout=30)
    await cluster.wait_for_leader(name, 0)
    return name


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        while len(values) < count:
            batch = await consumer.getmany(partition, timeout_ms=30_000)
            assert batch, f"no more records after {values}"
            values += [record.value for record in batch[partition] if record.value is not None]
        return values
    finally:
        await consumer.stop()
