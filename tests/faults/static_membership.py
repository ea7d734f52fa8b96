"""Does the broker honour static membership? A member stops without leaving; its id rejoins.

    python -m tests.faults.static_membership [BOOTSTRAP]      # no argument: the embedded broker

With static membership honoured, the group still lists the stopped member by its
`group.instance.id`, and the new member is assigned partitions at once; without it, the new
member waits for the stopped one's session timeout (30 s here).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from confluent_kafka.admin import AdminClient, NewTopic

from broker import BrokerThread

SESSION_TIMEOUT_MS = 30_000


async def join(
    bootstrap: str, group: str, topic: str, instance: str
) -> tuple[AIOKafkaConsumer, float]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        group_instance_id=instance,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=3_000,
        rebalance_timeout_ms=SESSION_TIMEOUT_MS,
    )
    started = time.monotonic()
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    return consumer, time.monotonic() - started


async def check(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic, group = f"static-check-{uuid.uuid4().hex[:6]}", f"static-check-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    first, _ = await join(bootstrap, group, topic, "worker-x")
    await first.stop()  # a static member does not send LeaveGroup: for the group, it is lost
    described = admin.describe_consumer_groups([group])[group].result(30)
    members = [m.group_instance_id for m in described.members]
    print(f"after the stop: {described.state}, members by instance id {members}")
    second, took = await join(bootstrap, group, topic, "worker-x")
    print(
        f"the same id rejoined in {took:.2f} s (session timeout {SESSION_TIMEOUT_MS / 1000:.0f} s)"
    )
    await second.stop()
    admin.delete_topics([topic])


def main() -> None:
    if len(sys.argv) > 1:
        asyncio.run(check(sys.argv[1]))
        return
    broker = BrokerThread(data_dir=Path(tempfile.mkdtemp(prefix="static-check-")))
    broker.start()
    try:
        asyncio.run(check(broker.bootstrap_servers))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
