"""Three Apache Kafka brokers (KRaft) under the whole system while ten conversations talk.

Faults, in order: kill -9 the broker leading the conversations' transcript partitions, start it
again, then a rolling restart of all three (each stopped with SIGTERM, started, and caught up
before the next). Nothing the gateway acknowledged is lost or doubled on its way to the turns
topic, every turn ends (complete, cancelled or failed, with a reason), and suggestions resume
after each fault. How long they take to resume is printed, never asserted (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from schemas.events import SuggestionEvent, Turn
from teleprompter.apache_kafka.cluster import ApacheKafkaCluster
from teleprompter.local_system import LocalSystem
from tests.faults.workers import partition_of, read_topic
from tests.rep_client import RepClient
from tests.system_fixtures import system_settings
from tests.teleprompter.apache_kafka.jvms import jvms_under
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CONVERSATIONS: Final = 10
PARTITIONS: Final = 4
# Generous: a killed broker is fenced only after its session times out (9 s), and a node
# starting on a busy 2-core machine takes tens of seconds.
RESUME_TIMEOUT_S: Final = 180.0
OUTCOMES: Final = ("suggestion_complete", "suggestion_cancelled", "suggestion_failed")


@dataclass(kw_only=True)
class Talker:
    """One conversation's rep socket: says numbered sentences, each once the last is answered."""

    rep: RepClient
    sent_at: dict[int, float] = field(default_factory=dict)
    turn_of: dict[int, str] = field(default_factory=dict)
    """Sentence number -> the turn that answered it (the first turn id seen after it)."""
    # What the socket has said so far, indexed as it arrives (the waits poll it often).
    _read: int = 0
    _turns: list[str] = field(default_factory=list)
    _first_delta_at: dict[str, float] = field(default_factory=dict)
    _ended: set[str] = field(default_factory=set)
    _acked: set[int] = field(default_factory=set)
    _refused: set[int] = field(default_factory=set)

    @property
    def session_id(self) -> str:
        return str(self.rep.of_type("ready")[0]["session_id"])

    def acked(self) -> set[int]:
        self._index()
        return self._acked

    def first_suggestion_since(self, moment: float) -> float | None:
        """When the first suggestion to a sentence said at or after `moment` began to arrive."""
        self._index()
        for n, sent_at in self.sent_at.items():
            if sent_at >= moment and n in self.turn_of:
                arrived = self._first_delta_at.get(self.turn_of[n])
                if arrived is not None:
                    return arrived
        return None

    async def talk(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await self.say(n)

    async def say(self, n: int) -> None:
        """Sentence `n`, with seq `n`; returns once its turn has an outcome or it is refused."""
        self._index()
        seen = len(self._turns)
        self.sent_at[n] = time.monotonic()
        await self.rep.send(
            {
                "type": "transcript_chunk",
                "text": f"Question {n} from {self.rep.conversation_id}, can you confirm?",
                "seq": n,
            }
        )

        def answered() -> bool:
            self._index()
            return len(self._turns) > seen or n in self._refused

        try:
            await wait_until(
                answered,
                timeout_s=RESUME_TIMEOUT_S,
                what=f"{self.rep.conversation_id}: a turn for sentence {n}",
            )
        except TimeoutError as exc:
            acked = "acked" if n in self._acked else "never acked"
            raise TimeoutError(f"{exc} ({acked}; last: {self.rep.received[-3:]})") from None
        if n in self._refused:
            return
        turn_id = self._turns[seen]
        self.turn_of[n] = turn_id

        def ended() -> bool:
            self._index()
            return turn_id in self._ended

        await wait_until(
            ended,
            timeout_s=RESUME_TIMEOUT_S,
            what=f"{self.rep.conversation_id}: an outcome for turn {turn_id}",
        )

    def _index(self) -> None:
        received, arrived_at = self.rep.received, self.rep.arrived_at
        for message, at in zip(received[self._read :], arrived_at[self._read :], strict=True):
            kind, turn_id = message.get("type"), message.get("turn_id")
            if kind == "ack" and "seq" in message:
                self._acked.add(message["seq"])
            elif kind == "error" and "seq" in message:
                self._refused.add(message["seq"])
            if turn_id is None:
                continue
            if turn_id not in self._turns:
                self._turns.append(turn_id)
            if kind == "suggestion_delta":
                self._first_delta_at.setdefault(turn_id, at)
            elif kind in OUTCOMES:
                self._ended.add(turn_id)
        self._read = len(received)


@dataclass(kw_only=True)
class Conversations:
    """The talkers at work, and each fault's moment: when did suggestions resume after it?"""

    talkers: list[Talker]
    faults: list[tuple[str, float]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Conversations:
        self._tasks = [asyncio.create_task(t.talk(self._stop)) for t in self.talkers]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Each talker finishes the sentence in hand; on a failure, they are cut short."""
        self._stop.set()
        if exc_type is None:
            await asyncio.wait(self._tasks, timeout=RESUME_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        if exc_type is None:
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def resume_after(self, name: str, fault: Awaitable[None] | None = None) -> None:
        """Inflict `fault`, then wait until every conversation has a suggestion to a sentence
        said after it began."""
        moment = time.monotonic()
        self.faults.append((name, moment))
        if fault is not None:
            await fault
        await wait_until(
            lambda: (
                self._healthy()
                and all(t.first_suggestion_since(moment) is not None for t in self.talkers)
            ),
            timeout_s=RESUME_TIMEOUT_S,
            what=f"a suggestion in every conversation after {name}",
        )

    def report(self) -> list[str]:
        lines = []
        for name, moment in self.faults:
            resumed = [t.first_suggestion_since(moment) for t in self.talkers]
            delays = sorted(at - moment for at in resumed if at is not None)
            lines.append(
                f"{name}: first suggestion after {delays[0]:.2f} s, "
                f"in all {len(delays)} conversations after {delays[-1]:.2f} s"
            )
        return lines

    def _healthy(self) -> bool:
        """True while every talker talks; a talker's failure is raised with its own message."""
        for task in self._tasks:
            if task.done():
                task.result()
                raise AssertionError("a talker stopped talking")
        return True


async def conversations_led_by(
    cluster: ApacheKafkaCluster, system: LocalSystem
) -> tuple[int, list[str]]:
    """A broker and conversation ids whose transcript partitions it leads."""
    topic = TopicCatalog.from_settings(system.resolved).transcripts.name
    leaders = {p: await cluster.wait_for_leader(topic, p) for p in range(PARTITIONS)}
    broker = leaders[0]
    ids = (f"cluster-{n}" for n in range(10_000))
    chosen = [cid for cid in ids if leaders[partition_of(cid, PARTITIONS)] == broker]
    return broker, chosen[:CONVERSATIONS]


async def settled_turns(
    system: LocalSystem, catalog: TopicCatalog
) -> tuple[list[Turn], list[SuggestionEvent]]:
    """Turns and outcomes, once every turn on the turns topic has its outcome there too."""
    bootstrap = system.resolved.bootstrap_servers
    found: dict[str, Any] = {}

    async def read() -> bool:
        turns = await asyncio.to_thread(read_topic, bootstrap, catalog.turns.name)
        events = await asyncio.to_thread(read_topic, bootstrap, catalog.suggestions.name)
        found["turns"] = [e for e in turns if isinstance(e, Turn)]
        found["outcomes"] = [
            e
            for e in events
            if isinstance(e, SuggestionEvent) and e.kind in ("complete", "cancelled", "failed")
        ]
        ended = {e.turn_id for e in found["outcomes"]}
        return all(t.turn_id in ended for t in found["turns"])

    deadline = time.monotonic() + RESUME_TIMEOUT_S
    while not await read():
        if time.monotonic() > deadline:
            raise TimeoutError("some turns never got an outcome on the suggestions topic")
    return found["turns"], found["outcomes"]


async def test_nothing_acknowledged_is_lost_through_a_leader_kill_and_a_rolling_restart(
    tmp_path: Path,
) -> None:
    kafka_dir = tmp_path / "kafka"
    system_log = tmp_path / "system.log"
    print(f"\nthe system's output: {system_log}; Kafka's logs: {kafka_dir}/node-*/logs")
    async with (
        ApacheKafkaCluster(nodes=3, data_dir=kafka_dir, profile="quick-start") as cluster,
        _log_file(system_log) as echo,
        LocalSystem(settings=_settings(cluster, tmp_path), echo=echo) as system,
        _supervised(system),
        contextlib.AsyncExitStack() as reps,
    ):
        catalog = TopicCatalog.from_settings(system.resolved)
        admin = TopicAdmin(bootstrap_servers=cluster.bootstrap_servers)
        for topic in await admin.describe_topics([catalog.transcripts.name, catalog.turns.name]):
            assert (topic.replication_factor, topic.configs["min.insync.replicas"]) == (3, "2")
        leader, conversation_ids = await conversations_led_by(cluster, system)
        talkers = [
            Talker(rep=await reps.enter_async_context(_rep(system, cid)))
            for cid in conversation_ids
        ]
        async with Conversations(talkers=talkers) as talk:
            await talk.resume_after("the start")
            await talk.resume_after(
                f"kill -9 of broker {leader}, leader of the conversations' partitions",
                cluster.kill(leader),
            )
            await talk.resume_after(f"broker {leader} started again", cluster.start(leader))
            await cluster.wait_until_fully_replicated()
            for node in cluster.node_ids:
                await talk.resume_after(
                    f"rolling restart: broker {node} stopped (SIGTERM)", cluster.stop(node)
                )
                await talk.resume_after(
                    f"rolling restart: broker {node} started", cluster.start(node)
                )
                await cluster.wait_until_fully_replicated()

        turns, outcomes = await settled_turns(system, catalog)
    assert jvms_under(kafka_dir) == [], "a Kafka JVM outlived its cluster"
    crashes = [line for line in system_log.read_text().splitlines() if "restarting in" in line]
    resent = sum(Counter(t.turn_id for t in turns).values()) - len({t.turn_id for t in turns})
    print("\n".join([*talk.report(), *crashes, f"turns on the topic twice: {resent}"]))

    # Nothing acknowledged is lost or doubled: each acked chunk is in exactly one turn. A turn
    # may be on the topic twice, the same turn re-sent by a worker that restarted before it
    # knew its first send had landed: the suggester takes each turn id once.
    turn_ids_of: dict[str, set[str]] = {}
    for turn in turns:
        for segment in turn.segment_ids:
            turn_ids_of.setdefault(segment, set()).add(turn.turn_id)
    acked = {f"{t.session_id}:{seq}" for t in talkers for seq in t.acked()}
    assert len(acked) >= CONVERSATIONS * len(talk.faults)
    assert [s for s in acked if len(turn_ids_of.get(s, ())) != 1] == []
    assert {s: ids for s, ids in turn_ids_of.items() if len(ids) > 1} == {}

    # Every turn ended; a cancelled or failed one says why. A worker that died between sending
    # an outcome and recording it leaves the turn open, and the next owner adds `worker_lost`:
    # the only second outcome there may be (clients keep the first; docs/reliability.md).
    ends: dict[str, list[SuggestionEvent]] = {}
    for event in outcomes:
        ends.setdefault(event.turn_id, []).append(event)
    assert [t.turn_id for t in turns if t.turn_id not in ends] == []
    assert [e for e in outcomes if e.kind != "complete" and not e.reason] == []
    twice = {
        turn_id: [(e.kind, e.reason, e.event_time_ms) for e in events]
        for turn_id, events in ends.items()
        if any((e.kind, e.reason) != ("cancelled", "worker_lost") for e in events[1:])
    }
    print(f"turns answered twice: {twice}")
    # Known, and not this room's to fix: a worker that crashes while a changelog partition
    # changes leader may answer a turn it had answered already (docs/reliability.md). Without
    # a crash, a turn answered twice is a failure.
    if not crashes:
        assert twice == {}


def _settings(cluster: ApacheKafkaCluster, tmp_path: Path) -> Any:
    return system_settings(
        cluster.bootstrap_servers,
        tmp_path / "system",
        partitions=PARTITIONS,
        replication_factor=3,
        min_insync_replicas=2,
        llm_tokens_per_s=100.0,
    )


@contextlib.asynccontextmanager
async def _log_file(path: Path) -> AsyncIterator[Callable[[str], None]]:
    """An `echo` for LocalSystem: every child's output, stamped, to a file."""
    with path.open("a", buffering=1) as file:
        yield lambda line: print(f"{time.monotonic():.3f} {line}", file=file)


@contextlib.asynccontextmanager
async def _supervised(system: LocalSystem) -> AsyncIterator[None]:
    """Children that exit are restarted, as under `teleprompter up`."""
    supervisor = asyncio.create_task(system.supervise())
    try:
        yield
    finally:
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)


def _rep(system: LocalSystem, conversation_id: str) -> RepClient:
    return RepClient(
        ws_url=system.ws_url,
        conversation_id=conversation_id,
        token=system.token(conversation_id),
    )
