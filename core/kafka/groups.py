"""Consumer groups through confluent-kafka's AdminClient: members, committed offsets, resets.

`GroupAdmin` is `TopicAdmin` with the group requests added, sharing its client, its time-outs
and its off-the-loop futures. Only `reset_offsets` writes anything to Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import ConsumerGroupDescription, OffsetSpec

from core.kafka.admin import _EARLIEST, _LATEST, KafkaAdminError, TopicAdmin, _code, _reason

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
"""(topic, partition)"""

# Kafka's own names for group states, as kafka-consumer-groups.sh prints them.
_STATE_NAMES: Final[dict[object, str]] = {
    ConsumerGroupState.UNKNOWN: "Unknown",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.EMPTY: "Empty",
}
_TYPE_NAMES: Final[dict[object, str]] = {
    ConsumerGroupType.UNKNOWN: "unknown",
    ConsumerGroupType.CONSUMER: "consumer",
    ConsumerGroupType.CLASSIC: "classic",
}
# What a broker answers when an admin offset commit meets a group that has members.
_NOT_EMPTY: Final = frozenset({KafkaError.UNKNOWN_MEMBER_ID, KafkaError.NON_EMPTY_GROUP})
# librdkafka's "no committed offset" (OFFSET_INVALID).
_NO_OFFSET: Final = -1001


class UnknownGroupError(KafkaAdminError):
    """The cluster knows no consumer group by that name."""


class UnknownTopicError(KafkaAdminError):
    """The cluster has no topic by that name."""


class GroupNotEmptyError(KafkaAdminError):
    """Kafka changes a group's committed offsets only while the group has no members."""


@dataclass(frozen=True, kw_only=True)
class GroupMember:
    """One consumer in a group and the partitions assigned to it."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: tuple[Partition, ...]


@dataclass(frozen=True, kw_only=True)
class GroupDescription:
    """A group as its coordinator describes it."""

    group_id: str
    state: str
    protocol: str
    assignor: str
    coordinator: int | None
    members: tuple[GroupMember, ...]

    @property
    def owners(self) -> dict[Partition, tuple[GroupMember, ...]]:
        """The members each assigned partition is assigned to (Faust gives standbys too)."""
        owners: dict[Partition, tuple[GroupMember, ...]] = {}
        for member in self.members:
            for tp in member.assignment:
                owners[tp] = (*owners.get(tp, ()), member)
        return owners


@dataclass(frozen=True, kw_only=True)
class PartitionOffsets:
    """One partition a group consumes: its committed offset against the log end."""

    topic: str
    partition: int
    committed: int | None
    log_end: int

    @property
    def lag(self) -> int | None:
        """Records between the committed offset and the log end (None before a commit)."""
        return None if self.committed is None else max(0, self.log_end - self.committed)


@dataclass(frozen=True, kw_only=True)
class GroupSnapshot:
    """A group at one moment: its description and every partition it has offsets or owners on."""

    description: GroupDescription
    partitions: tuple[PartitionOffsets, ...]
    taken_at_ms: float

    @property
    def group_id(self) -> str:
        return self.description.group_id

    @property
    def exists(self) -> bool:
        """Kafka reports unknown groups as Dead, with no members and no offsets."""
        d = self.description
        return bool(d.members or self.partitions or d.state not in ("Dead", "Unknown"))


class GroupAdmin(TopicAdmin):
    """Lists, describes and resets consumer groups; every call awaitable, the loop left free."""

    async def list_groups(self) -> list[str]:
        """Every consumer group's id, sorted."""
        future = self._client.list_consumer_groups(request_timeout=self.timeout_s)
        (outcome,) = await self._gather([future])
        if isinstance(outcome, BaseException):
            raise KafkaAdminError(
                f"cannot list consumer groups on {self.bootstrap_servers}: {_reason(outcome)}"
            )
        if outcome.errors:
            logger.warning(
                "some brokers did not list their groups: %s",
                "; ".join(_reason(error) for error in outcome.errors),
            )
        return sorted(listing.group_id for listing in outcome.valid)

    async def describe_groups(self, group_ids: Iterable[str]) -> dict[str, GroupDescription]:
        """State, members and assignment of each group (unknown ones come back Dead)."""
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return {}
        futures = self._client.describe_consumer_groups(ids, request_timeout=self.timeout_s)
        outcomes = await self._gather(futures.values())
        descriptions: dict[str, GroupDescription] = {}
        failures = []
        for group_id, outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if _code(outcome) == KafkaError.GROUP_ID_NOT_FOUND:
                    descriptions[group_id] = _dead(group_id)
                else:
                    failures.append(f"{group_id}: {_reason(outcome)}")
            else:
                descriptions[group_id] = _description(outcome)
        if failures:
            raise KafkaAdminError(
                f"cannot describe groups on {self.bootstrap_servers}: " + "; ".join(failures)
            )
        return descriptions

    async def committed_offsets(self, group_id: str) -> dict[Partition, int]:
        """The group's committed offset on every partition it has committed to."""
        request = [ConsumerGroupTopicPartitions(group_id)]
        futures = self._client.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
        (outcome,) = await self._gather(futures.values())
        if isinstance(outcome, BaseException):
            if _code(outcome) == KafkaError.GROUP_ID_NOT_FOUND:
                return {}
            raise KafkaAdminError(
                f"cannot read the committed offsets of {group_id} on {self.bootstrap_servers}: "
                f"{_reason(outcome)}"
            )
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in outcome.topic_partitions or []
            if tp.error is None and tp.offset != _NO_OFFSET
        }

    async def snapshots(self, group_ids: Iterable[str]) -> dict[str, GroupSnapshot]:
        """Each group's description and offsets, with one log-end lookup for all of them."""
        ids = list(dict.fromkeys(group_ids))
        descriptions = await self.describe_groups(ids)
        committed = await asyncio.gather(*(self.committed_offsets(g) for g in ids))
        wanted: dict[str, set[Partition]] = {}
        for group_id, offsets in zip(ids, committed, strict=True):
            wanted[group_id] = set(offsets) | set(descriptions[group_id].owners)
        ends = await self.end_offsets(set().union(*wanted.values()))
        taken_at_ms = time.time() * 1000.0
        return {
            group_id: GroupSnapshot(
                description=descriptions[group_id],
                partitions=tuple(
                    PartitionOffsets(
                        topic=topic,
                        partition=partition,
                        committed=offsets.get((topic, partition)),
                        log_end=ends[(topic, partition)],
                    )
                    for topic, partition in sorted(wanted[group_id])
                    if (topic, partition) in ends
                ),
                taken_at_ms=taken_at_ms,
            )
            for group_id, offsets in zip(ids, committed, strict=True)
        }

    async def partitions_of(self, topic: str) -> list[int]:
        """The topic's partition numbers; UnknownTopicError when there is no such topic."""
        metadata = await self._metadata()
        if topic not in metadata.topics:
            raise UnknownTopicError(f"no such topic on {self.bootstrap_servers}: {topic}")
        return sorted(metadata.topics[topic].partitions)

    async def end_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Each partition's log-end offset (the offset the next record will get)."""
        return await self._offsets(_topic_partitions(partitions), _LATEST)

    async def start_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Each partition's earliest offset still held."""
        return await self._offsets(_topic_partitions(partitions), _EARLIEST)

    async def offsets_at(
        self, partitions: Iterable[Partition], *, timestamp_ms: int
    ) -> dict[Partition, int | None]:
        """The first offset at or after `timestamp_ms` per partition; None when none is."""
        found = await self._offsets(
            _topic_partitions(partitions),
            OffsetSpec.for_timestamp(timestamp_ms),
        )
        return {tp: (offset if offset >= 0 else None) for tp, offset in found.items()}

    async def reset_offsets(self, group_id: str, offsets: Mapping[Partition, int]) -> None:
        """Commit `offsets` for the group; GroupNotEmptyError while it has members."""
        request = [
            ConsumerGroupTopicPartitions(
                group_id,
                [
                    TopicPartition(topic, partition, offset)
                    for (topic, partition), offset in offsets.items()
                ],
            )
        ]
        futures = self._client.alter_consumer_group_offsets(request, request_timeout=self.timeout_s)
        (outcome,) = await self._gather(futures.values())
        if isinstance(outcome, BaseException):
            errors = [outcome]
        else:
            errors = [tp.error for tp in outcome.topic_partitions or [] if tp.error is not None]
        if not errors:
            logger.info("reset %d offsets of group %s", len(offsets), group_id)
            return
        codes = {_code_of(error) for error in errors}
        if codes & _NOT_EMPTY:
            raise GroupNotEmptyError(
                f"Kafka refused to reset the offsets of {group_id}: the group is not empty "
                f"({_reason_of(errors[0])}); stop its consumers first"
            )
        raise KafkaAdminError(
            f"cannot reset the offsets of {group_id} on {self.bootstrap_servers}: "
            + "; ".join(sorted({_reason_of(error) for error in errors}))
        )


def _description(group: ConsumerGroupDescription) -> GroupDescription:
    coordinator = getattr(group, "coordinator", None)
    return GroupDescription(
        group_id=group.group_id,
        state=_STATE_NAMES.get(group.state, str(group.state)),
        protocol=_TYPE_NAMES.get(getattr(group, "type", ConsumerGroupType.UNKNOWN), "unknown"),
        assignor=group.partition_assignor or "",
        coordinator=coordinator.id if coordinator is not None else None,
        members=tuple(
            GroupMember(
                member_id=member.member_id,
                client_id=member.client_id,
                host=member.host,
                instance_id=member.group_instance_id,
                assignment=tuple(
                    sorted(
                        (tp.topic, tp.partition)
                        for tp in (member.assignment.topic_partitions if member.assignment else [])
                    )
                ),
            )
            for member in sorted(group.members, key=lambda m: m.member_id)
        ),
    )


def _dead(group_id: str) -> GroupDescription:
    return GroupDescription(
        group_id=group_id,
        state="Dead",
        protocol="unknown",
        assignor="",
        coordinator=None,
        members=(),
    )


def _topic_partitions(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(set(partitions))]


def _code_of(error: BaseException | KafkaError) -> int | None:
    if isinstance(error, KafkaError):
        code: int = error.code()
        return code
    return _code(error)


def _reason_of(error: BaseException | KafkaError) -> str:
    if isinstance(error, KafkaError):
        return f"{error.str()} ({error.name()})"
    return _reason(error)
