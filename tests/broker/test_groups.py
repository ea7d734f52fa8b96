"""Consumer groups with real clients: three members, one leaves, one joins, nothing is lost.

Each member commits synchronously after processing what it polled. A record may therefore
be delivered twice only when the commit covering its first delivery failed (a rebalance
overtook it); everything else is delivered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from confluent_kafka import Consumer, KafkaException, Producer

from broker.errors import ErrorCode
from broker.groups import GroupCoordinator, JoinResult
from broker.offsets import OffsetStore
from tests.broker.helpers import (
    AIOKAFKA_GROUP_SETTINGS,
    CONFLUENT_GROUP_SETTINGS,
    create_topic,
    wait_for,
)
from tests.waiting import wait_until

PARTITIONS = 6
PER_PHASE = 60


@dataclass
class Ledger:
    """Every delivery: which member got which record, and whether its commit succeeded."""

    deliveries: list[tuple[str, int, int, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, member: str, partition: int, offset: int, committed: bool) -> None:
        with self.lock:
            self.deliveries.append((member, partition, offset, committed))

    def seen(self) -> set[tuple[int, int]]:
        with self.lock:
            return {(p, o) for _, p, o, _ in self.deliveries}

    def members_that_received(self) -> set[str]:
        with self.lock:
            return {member for member, _, _, _ in self.deliveries}

    def check(self, expected: set[tuple[int, int]]) -> None:
        assert self.seen() == expected
        first: dict[tuple[int, int], bool] = {}
        for _, partition, offset, committed in self.deliveries:
            key = (partition, offset)
            if key in first:
                assert not first[key], f"record {key} delivered again after a successful commit"
            first[key] = committed


def _phases(
    produce: Callable[[int], None],
    start_member: Callable[[str], None],
    stop_member: Callable[[str], None],
    ledger: Ledger,
    wait: Callable[[Callable[[], bool], str], None],
) -> set[tuple[int, int]]:
    expected: set[tuple[int, int]] = set()

    def produce_phase(phase: int) -> None:
        produce(phase)
        for i in range(PER_PHASE):
            expected.add((i % PARTITIONS, phase * (PER_PHASE // PARTITIONS) + i // PARTITIONS))
        wait(lambda: expected <= ledger.seen(), f"phase {phase} consumed")

    for name in ("a", "b", "c"):
        start_member(name)
    produce_phase(0)
    stop_member("a")
    produce_phase(1)
    start_member("d")
    produce_phase(2)
    return expected


def test_confluent_group_rebalances_without_loss_or_committed_duplicates(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=PARTITIONS)
    ledger = Ledger()
    stops: dict[str, threading.Event] = {}
    threads: dict[str, threading.Thread] = {}
    assigned: dict[str, bool] = {}

    def member(name: str, stop: threading.Event) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": unique_name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **CONFLUENT_GROUP_SETTINGS,
            }
        )
        consumer.subscribe([topic], on_assign=lambda c, parts: assigned.__setitem__(name, True))
        try:
            while not stop.is_set():
                message = consumer.poll(0.05)
                if message is None or message.error():
                    continue
                try:
                    consumer.commit(message=message, asynchronous=False)
                    committed = True
                except KafkaException:
                    committed = False
                ledger.record(name, message.partition(), message.offset(), committed)
        finally:
            consumer.close()

    def start_member(name: str) -> None:
        stops[name] = threading.Event()
        threads[name] = threading.Thread(target=member, args=(name, stops[name]), daemon=True)
        threads[name].start()
        wait_for(lambda: assigned.get(name, False), what=f"member {name} assigned")

    def stop_member(name: str) -> None:
        stops[name].set()
        threads[name].join(30)

    producer = Producer({"bootstrap.servers": bootstrap_servers})

    def produce(phase: int) -> None:
        for i in range(PER_PHASE):
            producer.produce(topic, value=f"{phase}-{i}".encode(), partition=i % PARTITIONS)
        assert producer.flush(20) == 0

    try:
        expected = _phases(
            produce,
            start_member,
            stop_member,
            ledger,
            lambda condition, what: wait_for(condition, what=what, timeout_s=30),
        )
    finally:
        for name in list(threads):
            stop_member(name)

    ledger.check(expected)
    assert "d" in ledger.members_that_received()


async def test_aiokafka_group_rebalances_without_loss_or_committed_duplicates(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=PARTITIONS)
    ledger = Ledger()
    tasks: dict[str, asyncio.Task[None]] = {}
    consumers: dict[str, AIOKafkaConsumer] = {}

    async def member(name: str, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            delivered = [(tp.partition, m.offset) for tp, ms in batches.items() for m in ms]
            if not delivered:
                continue
            try:
                await consumer.commit()
                committed = True
            except (CommitFailedError, KafkaError):
                committed = False
            for partition, offset in delivered:
                ledger.record(name, partition, offset, committed)

    async def start_member(name: str) -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=unique_name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **AIOKAFKA_GROUP_SETTINGS,
        )
        await consumer.start()
        consumers[name] = consumer
        tasks[name] = asyncio.create_task(member(name, consumer))
        await wait_until(lambda: bool(consumer.assignment()), what=f"member {name} assigned")

    async def stop_member(name: str) -> None:
        tasks[name].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks.pop(name)
        await consumers.pop(name).stop()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    expected: set[tuple[int, int]] = set()

    async def produce_phase(phase: int) -> None:
        for i in range(PER_PHASE):
            await producer.send(topic, f"{phase}-{i}".encode(), partition=i % PARTITIONS)
            expected.add((i % PARTITIONS, phase * (PER_PHASE // PARTITIONS) + i // PARTITIONS))
        await producer.flush()
        await wait_until(lambda: expected <= ledger.seen(), timeout_s=30, what=f"phase {phase}")

    try:
        for name in ("a", "b", "c"):
            await start_member(name)
        await produce_phase(0)
        await stop_member("a")
        await produce_phase(1)
        await start_member("d")
        await produce_phase(2)
    finally:
        for name in list(tasks):
            await stop_member(name)
        await producer.stop()

    ledger.check(expected)
    assert "d" in ledger.members_that_received()


# --- the coordinator alone ------------------------------------------------------------------


async def _join(
    coordinator: GroupCoordinator,
    member_id: str = "",
    instance: str | None = None,
    *,
    require_known_member_id: bool = False,
    **overrides: int,
) -> JoinResult:
    return await coordinator.join(
        group_id="g",
        member_id=member_id,
        group_instance_id=instance,
        require_known_member_id=require_known_member_id,
        client_id="unit",
        client_host="127.0.0.1",
        session_timeout_ms=overrides.get("session_timeout_ms", 10_000),
        rebalance_timeout_ms=overrides.get("rebalance_timeout_ms", 10_000),
        protocol_type="consumer",
        protocols=[("range", b"meta")],
    )


async def test_a_silent_member_is_expired_after_its_session_timeout(tmp_path: Path) -> None:
    coordinator = GroupCoordinator(offsets=OffsetStore(tmp_path))
    coordinator.start()
    try:
        joined = await _join(coordinator, session_timeout_ms=300)
        assert joined.error == ErrorCode.NONE
        assert await coordinator.sync(
            group_id="g",
            generation=joined.generation,
            member_id=joined.member_id,
            assignments={joined.member_id: b"all"},
        ) == (ErrorCode.NONE, b"all")
        assert coordinator.describe("g").state == "Stable"

        await wait_until(lambda: coordinator.describe("g").state == "Empty", what="expiry")

        assert (
            coordinator.heartbeat(
                group_id="g", generation=joined.generation, member_id=joined.member_id
            )
            == ErrorCode.UNKNOWN_MEMBER_ID
        )
    finally:
        await coordinator.stop()


async def test_a_new_member_starts_a_rebalance_that_waits_for_the_others(tmp_path: Path) -> None:
    coordinator = GroupCoordinator(offsets=OffsetStore(tmp_path))
    coordinator.start()
    try:
        first = await _join(coordinator)
        await coordinator.sync(
            group_id="g", generation=first.generation, member_id=first.member_id, assignments={}
        )
        second_join = asyncio.create_task(_join(coordinator))
        await wait_until(
            lambda: coordinator.describe("g").state == "PreparingRebalance", what="rebalance"
        )
        # The first member learns of the rebalance from its heartbeat, then rejoins.
        assert (
            coordinator.heartbeat(
                group_id="g", generation=first.generation, member_id=first.member_id
            )
            == ErrorCode.REBALANCE_IN_PROGRESS
        )
        assert not second_join.done()
        rejoined = await _join(coordinator, member_id=first.member_id)
        second = await second_join

        assert rejoined.generation == second.generation == first.generation + 1
        assert rejoined.leader_id == first.member_id
        assert {m for m, _, _ in rejoined.members} == {first.member_id, second.member_id}
        assert second.members == []
        assert (
            coordinator.check_commit(
                group_id="g", generation=first.generation, member_id=first.member_id
            )
            == ErrorCode.REBALANCE_IN_PROGRESS
        )
    finally:
        await coordinator.stop()


async def test_a_restarted_static_member_fences_its_old_id_and_keeps_its_assignment(
    tmp_path: Path,
) -> None:
    coordinator = GroupCoordinator(offsets=OffsetStore(tmp_path))
    coordinator.start()
    try:
        old = await _join(coordinator, instance="worker-a")
        assert await coordinator.sync(
            group_id="g",
            generation=old.generation,
            member_id=old.member_id,
            group_instance_id="worker-a",
            assignments={old.member_id: b"partitions of a"},
        ) == (ErrorCode.NONE, b"partitions of a")

        new = await _join(coordinator, instance="worker-a")  # restarted: no member id yet

        assert new.error == ErrorCode.NONE
        assert new.generation == old.generation  # no rebalance
        assert new.member_id != old.member_id
        assert new.leader_id == old.member_id  # the old id: the new member does not reassign
        assert coordinator.describe("g").state == "Stable"
        assert await coordinator.sync(
            group_id="g",
            generation=new.generation,
            member_id=new.member_id,
            group_instance_id="worker-a",
            assignments={},
        ) == (ErrorCode.NONE, b"partitions of a")
        assert (
            coordinator.heartbeat(
                group_id="g",
                generation=old.generation,
                member_id=old.member_id,
                group_instance_id="worker-a",
            )
            == ErrorCode.FENCED_INSTANCE_ID
        )
        assert (await _join(coordinator, old.member_id, "worker-a")).error == (
            ErrorCode.FENCED_INSTANCE_ID
        )
    finally:
        await coordinator.stop()


async def test_a_static_member_that_stays_away_past_its_session_timeout_is_removed(
    tmp_path: Path,
) -> None:
    coordinator = GroupCoordinator(offsets=OffsetStore(tmp_path))
    coordinator.start()
    try:
        joined = await _join(coordinator, instance="worker-a", session_timeout_ms=300)
        await coordinator.sync(
            group_id="g", generation=joined.generation, member_id=joined.member_id, assignments={}
        )
        await wait_until(lambda: coordinator.describe("g").state == "Empty", what="expiry")
        assert coordinator.leave(group_id="g", member_id="", group_instance_id="worker-a") == (
            ErrorCode.UNKNOWN_MEMBER_ID
        )
    finally:
        await coordinator.stop()


async def test_join_group_v4_gives_a_new_dynamic_member_its_id_first(tmp_path: Path) -> None:
    coordinator = GroupCoordinator(offsets=OffsetStore(tmp_path))
    coordinator.start()
    try:
        first = await _join(coordinator, require_known_member_id=True)
        assert first.error == ErrorCode.MEMBER_ID_REQUIRED
        assert first.member_id
        joined = await _join(coordinator, first.member_id, require_known_member_id=True)
        assert (joined.error, joined.member_id) == (ErrorCode.NONE, first.member_id)
    finally:
        await coordinator.stop()
