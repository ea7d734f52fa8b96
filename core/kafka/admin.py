"""Topic provisioning and inspection through confluent-kafka's AdminClient, off the event loop.

`ensure_topics` creates the topics that are missing and compares the ones that exist with their
spec; it reports differences and never alters an existing topic, since changing partitions or
cleanup policy under a running system reorders or deletes data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from confluent_kafka import (
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from core.kafka.catalog import TopicSpec

logger = logging.getLogger(__name__)
_librdkafka_logger = logger.getChild("librdkafka")

T = TypeVar("T")
K = TypeVar("K")

# confluent-kafka leaves these two class methods unannotated.
_EARLIEST: Final[OffsetSpec] = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: Final[OffsetSpec] = OffsetSpec.latest()  # type: ignore[no-untyped-call]

DEFAULT_TIMEOUT_S: Final = 10.0
# librdkafka may take a moment past its own deadline to fail a request; ours fires only if the
# client never answers at all.
_GRACE_S: Final = 5.0
# Errors that mean "this topic's partitions are not served yet": a real cluster answers
# CreateTopics once the controller has the topic, before every broker serves it.
_TOPIC_NOT_READY: Final = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
_RETRY_S: Final = 0.05
# Errors that mean "this group has not formed yet", not "Kafka is broken".
_GROUP_NOT_READY: Final = frozenset(
    {
        KafkaError.GROUP_ID_NOT_FOUND,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
    }
)


class KafkaAdminError(RuntimeError):
    """A Kafka admin request failed; the message names the cluster and what was asked."""


@dataclass(frozen=True, kw_only=True)
class TopicDifference:
    """One way an existing topic differs from its spec."""

    topic: str
    setting: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.setting} is {self.actual}, the catalog says {self.expected}"


@dataclass(frozen=True, kw_only=True)
class ProvisionReport:
    """What `ensure_topics` did: topics created, already as specified, and differing."""

    created: tuple[str, ...] = ()
    matching: tuple[str, ...] = ()
    differing: Mapping[str, tuple[TopicDifference, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every topic now exists as specified."""
        return not self.differing

    def status(self, topic: str) -> str:
        if topic in self.created:
            return "created"
        if topic in self.differing:
            return "differs: " + "; ".join(str(d) for d in self.differing[topic])
        return "exists"

    def summary(self) -> str:
        text = f"{len(self.created)} created, {len(self.matching)} already as specified"
        if self.differing:
            text += f", {len(self.differing)} differ, left unchanged: {', '.join(self.differing)}"
        return text


@dataclass(frozen=True, kw_only=True)
class TopicInfo:
    """A topic as the cluster's metadata shows it."""

    name: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True, kw_only=True)
class PartitionState:
    """One partition: where it lives and which offsets it holds."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]
    start_offset: int
    end_offset: int


@dataclass(frozen=True, kw_only=True)
class TopicDescription:
    """A topic in detail: partitions with offsets, and its configuration."""

    name: str
    partitions: tuple[PartitionState, ...]
    configs: Mapping[str, str]
    set_on_topic: frozenset[str]

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0

    @property
    def record_count(self) -> int:
        """Offsets currently held (an upper bound on records, for compacted topics)."""
        return sum(p.end_offset - p.start_offset for p in self.partitions)


class TopicAdmin:
    """Creates, lists and describes topics; every call is awaitable and leaves the loop free."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client_config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap_servers,
            "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
            **(client_config or {}),
        }
        try:
            self._client = AdminClient(config, logger=_DemotedLog())
        except KafkaException as exc:
            raise KafkaAdminError(
                f"cannot create a Kafka admin client for {bootstrap_servers}: {_reason(exc)}"
            ) from exc

    # --- provisioning -----------------------------------------------------------------------
    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> ProvisionReport:
        """Create the topics that are missing; compare the rest with their spec."""
        wanted = _unique(specs)
        metadata = await self._metadata()
        missing = [spec for name, spec in wanted.items() if name not in metadata.topics]
        created, raced = await self._create(missing)
        if raced:
            # Someone else created these between our look and our create: compare them too.
            metadata = await self._metadata()
        existing = [spec for name, spec in wanted.items() if name not in created]
        differing = await self._compare(existing, metadata)
        report = ProvisionReport(
            created=tuple(created),
            matching=tuple(spec.name for spec in existing if spec.name not in differing),
            differing=differing,
        )
        for topic, differences in differing.items():
            for difference in differences:
                logger.warning("topic %s differs from the catalog: %s", topic, difference)
        logger.info("topics on %s: %s", self.bootstrap_servers, report.summary())
        return report

    async def _create(self, specs: list[TopicSpec]) -> tuple[list[str], list[str]]:
        """Returns (created, already existing); raises naming every topic that failed."""
        if not specs:
            return [], []
        futures = self._client.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=spec.config,
                )
                for spec in specs
            ],
            operation_timeout=self.timeout_s,
            request_timeout=self.timeout_s,
        )
        outcomes = await self._gather(futures.values())
        created: list[str] = []
        raced: list[str] = []
        failures: list[str] = []
        for name, outcome in zip(futures, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                created.append(name)
            elif _code(outcome) == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)
            else:
                failures.append(f"{name}: {_reason(outcome)}")
        if failures:
            raise KafkaAdminError(
                f"could not create topics on {self.bootstrap_servers}: " + "; ".join(failures)
            )
        for name in created:
            logger.debug("created topic %s", name)
        await self._wait_for_leaders(created)
        return created, raced

    async def _wait_for_leaders(self, names: list[str]) -> None:
        """Until every partition of these topics has a leader, so that whoever uses them next
        (a producer, `topics describe`) is served rather than told they do not exist yet."""
        deadline = time.monotonic() + self.timeout_s
        while names:
            metadata = await self._metadata()
            names = [name for name in names if not _all_led(metadata, name)]
            if names and time.monotonic() > deadline:
                raise KafkaAdminError(
                    f"topics created on {self.bootstrap_servers} have partitions without a "
                    f"leader after {self.timeout_s:g} s: {', '.join(names)}"
                )
            if names:
                await asyncio.sleep(_RETRY_S)

    async def _compare(
        self, specs: list[TopicSpec], metadata: ClusterMetadata
    ) -> dict[str, tuple[TopicDifference, ...]]:
        configs = await self._configs([spec.name for spec in specs])
        differing: dict[str, tuple[TopicDifference, ...]] = {}
        for spec in specs:
            partitions = list(metadata.topics[spec.name].partitions.values())
            actual: dict[str, str] = {
                "partitions": str(len(partitions)),
                "replication.factor": str(len(partitions[0].replicas) if partitions else 0),
            }
            actual.update(configs[spec.name])
            expected = {
                "partitions": str(spec.partitions),
                "replication.factor": str(spec.replication_factor),
                **spec.config,
            }
            differences = tuple(
                TopicDifference(
                    topic=spec.name,
                    setting=setting,
                    expected=value,
                    actual=actual.get(setting, "(not reported)"),
                )
                for setting, value in expected.items()
                if actual.get(setting) != value
            )
            if differences:
                differing[spec.name] = differences
        return differing

    # --- inspection -------------------------------------------------------------------------
    async def list_topics(self) -> dict[str, TopicInfo]:
        """Every topic on the cluster by name (internal `__` topics left out)."""
        metadata = await self._metadata()
        topics: dict[str, TopicInfo] = {}
        for name, topic in sorted(metadata.topics.items()):
            if name.startswith("__"):
                continue
            partitions = list(topic.partitions.values())
            topics[name] = TopicInfo(
                name=name,
                partitions=len(partitions),
                replication_factor=len(partitions[0].replicas) if partitions else 0,
            )
        return topics

    async def describe_topics(self, names: Iterable[str]) -> list[TopicDescription]:
        """Partitions (leaders, replicas, start and end offsets) and configs of each topic."""
        names = list(dict.fromkeys(names))
        metadata = await self._metadata()
        absent = [name for name in names if name not in metadata.topics]
        if absent:
            raise KafkaAdminError(f"no such topic on {self.bootstrap_servers}: {', '.join(absent)}")
        partitions = [
            TopicPartition(name, partition)
            for name in names
            for partition in sorted(metadata.topics[name].partitions)
        ]
        configs, set_on_topic = await self._configs_with_sources(names)
        starts = await self._offsets(partitions, _EARLIEST)
        ends = await self._offsets(partitions, _LATEST)
        descriptions = []
        for name in names:
            states = tuple(
                PartitionState(
                    partition=p.id,
                    leader=p.leader,
                    replicas=tuple(p.replicas),
                    in_sync=tuple(p.isrs),
                    start_offset=starts[(name, p.id)],
                    end_offset=ends[(name, p.id)],
                )
                for p in sorted(metadata.topics[name].partitions.values(), key=lambda p: p.id)
            )
            descriptions.append(
                TopicDescription(
                    name=name,
                    partitions=states,
                    configs=configs[name],
                    set_on_topic=set_on_topic[name],
                )
            )
        return descriptions

    async def group_is_stable(self, group_id: str, *, members: int) -> bool:
        """Whether a consumer group has settled with exactly `members` members."""
        futures = self._client.describe_consumer_groups([group_id], request_timeout=self.timeout_s)
        (outcome,) = await self._gather(futures.values())
        if isinstance(outcome, BaseException):
            if _code(outcome) in _GROUP_NOT_READY:
                return False
            raise KafkaAdminError(
                f"cannot describe group {group_id} on {self.bootstrap_servers}: {_reason(outcome)}"
            )
        return bool(outcome.state == ConsumerGroupState.STABLE and len(outcome.members) == members)

    # --- requests ---------------------------------------------------------------------------
    async def _metadata(self) -> ClusterMetadata:
        # list_topics blocks its caller until the cluster answers: run it on a worker thread.
        try:
            return await self._bounded(
                asyncio.to_thread(self._client.list_topics, timeout=self.timeout_s)
            )
        except KafkaException as exc:
            raise KafkaAdminError(
                f"Kafka at {self.bootstrap_servers} did not answer within {self.timeout_s:g} s: "
                f"{_reason(exc)}"
            ) from exc

    async def _configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        configs, _ = await self._configs_with_sources(names)
        return configs

    async def _configs_with_sources(
        self, names: list[str]
    ) -> tuple[dict[str, dict[str, str]], dict[str, frozenset[str]]]:
        """Each topic's config values, and which of them were set on the topic itself."""
        if not names:
            return {}, {}
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        futures, outcomes = await self._until_served(
            resources,
            lambda some: self._client.describe_configs(some, request_timeout=self.timeout_s),
        )
        configs: dict[str, dict[str, str]] = {}
        set_on_topic: dict[str, frozenset[str]] = {}
        failures = []
        for resource, outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failures.append(f"{resource.name}: {_reason(outcome)}")
                continue
            entries: dict[str, ConfigEntry] = outcome
            configs[resource.name] = {
                name: entry.value for name, entry in entries.items() if entry.value is not None
            }
            set_on_topic[resource.name] = frozenset(
                name for name, entry in entries.items() if _is_set_on_topic(entry)
            )
        if failures:
            raise KafkaAdminError(
                f"cannot read topic configs from {self.bootstrap_servers}: " + "; ".join(failures)
            )
        return configs, set_on_topic

    async def _offsets(
        self, partitions: list[TopicPartition], spec: OffsetSpec
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures, outcomes = await self._until_served(
            partitions,
            lambda some: self._client.list_offsets(
                {partition: spec for partition in some}, request_timeout=self.timeout_s
            ),
        )
        offsets: dict[tuple[str, int], int] = {}
        failures = []
        for partition, outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failures.append(f"{partition.topic}[{partition.partition}]: {_reason(outcome)}")
            else:
                offsets[(partition.topic, partition.partition)] = outcome.offset
        if failures:
            raise KafkaAdminError(
                f"cannot list offsets on {self.bootstrap_servers}: " + "; ".join(failures)
            )
        return offsets

    async def _until_served(
        self, keys: list[K], request: Callable[[list[K]], dict[K, Future[Any]]]
    ) -> tuple[list[K], list[Any]]:
        """One request per key, asked again for the keys whose topic is not served yet (see
        _TOPIC_NOT_READY) until `timeout_s`; returns the keys and their outcomes, in order."""
        outcomes: dict[K, Any] = {}
        pending = keys
        deadline = time.monotonic() + self.timeout_s
        while pending:
            futures = request(pending)
            for key, outcome in zip(futures, await self._gather(futures.values()), strict=True):
                outcomes[key] = outcome
            pending = [
                key
                for key in pending
                if isinstance(outcomes[key], BaseException)
                and _code(outcomes[key]) in _TOPIC_NOT_READY
            ]
            if pending and time.monotonic() > deadline:
                break
            if pending:
                await asyncio.sleep(_RETRY_S)
        return keys, [outcomes[key] for key in keys]

    async def _gather(self, futures: Iterable[Future[Any]]) -> list[Any]:
        """Await confluent-kafka's thread futures; each outcome is a result or an exception."""
        wrapped = [asyncio.wrap_future(future) for future in futures]
        return await self._bounded(asyncio.gather(*wrapped, return_exceptions=True))

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s + _GRACE_S):
                return await awaitable
        except TimeoutError:
            raise KafkaAdminError(
                f"Kafka at {self.bootstrap_servers} did not answer within "
                f"{self.timeout_s + _GRACE_S:g} s"
            ) from None


class _DemotedLog:
    """librdkafka's own log lines, at DEBUG: every admin failure reaches the caller as a
    KafkaAdminError, and librdkafka's reconnect attempts would otherwise bury that message."""

    def log(self, level: int, message: str, *args: object) -> None:
        _librdkafka_logger.debug(message, *args)


def _all_led(metadata: ClusterMetadata, topic: str) -> bool:
    found = metadata.topics.get(topic)
    return (
        found is not None
        and found.error is None
        and bool(found.partitions)
        and all(p.leader >= 0 and p.error is None for p in found.partitions.values())
    )


def _is_set_on_topic(entry: ConfigEntry) -> bool:
    # Annotated as a ConfigSource, the source arrives as the plain int that enum wraps.
    source: object = entry.source
    return source in (ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DYNAMIC_TOPIC_CONFIG.value)


def _unique(specs: Iterable[TopicSpec]) -> dict[str, TopicSpec]:
    wanted: dict[str, TopicSpec] = {}
    for spec in specs:
        if wanted.setdefault(spec.name, spec) != spec:
            raise ValueError(f"two different specs for topic {spec.name}")
    return wanted


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        code: int = exc.args[0].code()
        return code
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return f"{error.str()} ({error.name()})"
    return f"{type(exc).__name__}: {exc}"
