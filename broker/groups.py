"""The group coordinator: Kafka's classic consumer-group protocol, with real rebalancing.

States follow Kafka's GroupCoordinator: Empty -> PreparingRebalance (members (re)join; the
join completes when every known member has rejoined, or when the longest rebalance timeout
passes, dropping those that did not) -> CompletingRebalance (the leader's SyncGroup carries the
assignment) -> Stable. Members that stop heartbeating for their session timeout are removed,
which starts a rebalance. Membership is not persisted: after a broker restart members get
UNKNOWN_MEMBER_ID and rejoin, which every client handles; committed offsets are persisted
(see offsets.py).

Static members (KIP-345, group.instance.id, JoinGroup v5+) keep their place across restarts:
one that joins again with its instance id within its session timeout gets a new member id,
fences the old one (FENCED_INSTANCE_ID) and, in a Stable group, its old assignment back
without a rebalance. Static members send no LeaveGroup on close; their session timeout is
what ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from typing import Final, Literal

from aiokafka.protocol.types import Array, Int16, Schema, String

from broker.errors import ErrorCode
from broker.offsets import OffsetStore

logger = logging.getLogger(__name__)

GroupState = Literal["Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"]

_EXPIRY_CHECK_S: Final = 0.1
# The start of a "consumer" protocol subscription; the rest (user data) is not needed here.
_SUBSCRIPTION: Final = Schema(("version", Int16), ("topics", Array(String("utf-8"))))


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: ErrorCode
    generation: int = -1
    protocol: str = ""
    leader_id: str = ""
    member_id: str = ""
    # (member id, group instance id, metadata) of every member: the leader's answer only
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: GroupState
    protocol_type: str
    protocol: str
    members: list[MemberDescription]


@dataclass(eq=False, slots=True)
class _Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_s: float
    rebalance_timeout_s: float
    protocols: list[tuple[str, bytes]]
    last_seen: float = field(default_factory=time.monotonic)
    assignment: bytes = b""
    join_waiter: asyncio.Future[JoinResult] | None = None
    sync_waiter: asyncio.Future[tuple[ErrorCode, bytes]] | None = None

    def metadata(self, protocol: str) -> bytes:
        return next((meta for name, meta in self.protocols if name == protocol), b"")

    @property
    def awaiting_join(self) -> bool:
        return self.join_waiter is not None and not self.join_waiter.done()


@dataclass(eq=False, slots=True)
class _Group:
    group_id: str
    state: GroupState = "Empty"
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""
    leader_id: str = ""
    members: dict[str, _Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending_members: dict[str, float] = field(default_factory=dict)  # member id -> deadline
    join_deadline: asyncio.TimerHandle | None = None


class GroupCoordinator:
    """Every consumer group on this broker (the broker coordinates all of them)."""

    def __init__(
        self,
        *,
        offsets: OffsetStore,
        min_session_timeout_ms: int = 100,
        max_session_timeout_ms: int = 1_800_000,
    ) -> None:
        self._offsets = offsets
        self._min_session_s = min_session_timeout_ms / 1000
        self._max_session_s = max_session_timeout_ms / 1000
        self._groups: dict[str, _Group] = {}
        self._expiry_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._expiry_task = asyncio.get_running_loop().create_task(self._expire_members())

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        for group in self._groups.values():
            if group.join_deadline is not None:
                group.join_deadline.cancel()
            for member in group.members.values():
                _resolve_waiters(member, ErrorCode.COORDINATOR_NOT_AVAILABLE)

    # --- JoinGroup / SyncGroup / Heartbeat / LeaveGroup --------------------------------------

    async def join(
        self,
        *,
        group_id: str,
        member_id: str,
        group_instance_id: str | None = None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool = False,
    ) -> JoinResult:
        """JoinGroup, as Kafka's classic coordinator answers it (KIP-345 static members too).

        `require_known_member_id` (JoinGroup v4+) makes a new dynamic member fetch its id with
        a first MEMBER_ID_REQUIRED round trip, as Kafka does.
        """
        session_s = session_timeout_ms / 1000
        group, refusal = self._group_to_join(group_id, session_s, protocol_type, protocols)
        if group is None or refusal is not None:
            return JoinResult(refusal or ErrorCode.INVALID_GROUP_ID, member_id=member_id)
        timeouts = (
            session_s,
            rebalance_timeout_ms / 1000 if rebalance_timeout_ms > 0 else session_s,
        )
        known_id = group.static_members.get(group_instance_id or "")
        if known_id is not None and member_id != known_id:
            return await self._static_member_returns(
                group, member_id, known_id, protocols, timeouts
            )
        if member_id in group.pending_members:
            del group.pending_members[member_id]
        elif member_id and member_id not in group.members:
            return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id)
        member = group.members.get(member_id)
        if member is None:
            new_id = member_id or f"{group_instance_id or client_id or 'member'}-{uuid.uuid4()}"
            if require_known_member_id and not member_id and group_instance_id is None:
                group.pending_members[new_id] = time.monotonic() + session_s
                return JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id=new_id)
            member = _Member(
                new_id, group_instance_id, client_id, client_host, *timeouts, protocols
            )
            self._add_member(group, member)
        elif (
            group.state == "Stable"
            and member.member_id != group.leader_id
            and member.protocols == protocols
        ):
            # A follower rejoining with nothing new: answer with the current generation.
            member.last_seen = time.monotonic()
            return JoinResult(
                ErrorCode.NONE, group.generation, group.protocol, group.leader_id, member.member_id
            )
        member.protocols = protocols
        member.session_timeout_s, member.rebalance_timeout_s = timeouts
        group.protocol_type = protocol_type
        return await self._join_and_wait(group, member)

    async def _static_member_returns(
        self,
        group: _Group,
        member_id: str,
        known_id: str,
        protocols: list[tuple[str, bytes]],
        timeouts: tuple[float, float],
    ) -> JoinResult:
        """A join naming a known instance id under another member id than the one it holds."""
        if member_id:  # an older incarnation still running: the newer one holds the instance
            return JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=member_id)
        member = self._replace_static_member(group, known_id)
        member.session_timeout_s, member.rebalance_timeout_s = timeouts
        answer = self._stable_answer(group, member, known_id, protocols)
        if answer is not None:
            return answer
        return await self._join_and_wait(group, member)

    def _group_to_join(
        self,
        group_id: str,
        session_s: float,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> tuple[_Group | None, ErrorCode | None]:
        if not group_id:
            return None, ErrorCode.INVALID_GROUP_ID
        if not self._min_session_s <= session_s <= self._max_session_s:
            return None, ErrorCode.INVALID_SESSION_TIMEOUT
        group = self._groups.get(group_id)
        if group is None or group.state == "Dead":
            group = self._groups[group_id] = _Group(group_id)
        if not protocols or (
            group.members and not self._compatible(group, protocol_type, protocols)
        ):
            return group, ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return group, None

    @staticmethod
    def _add_member(group: _Group, member: _Member) -> None:
        group.members[member.member_id] = member
        if member.group_instance_id is not None:
            group.static_members[member.group_instance_id] = member.member_id
        logger.info("group %s: member %s joins", group.group_id, member.member_id)

    @staticmethod
    def _replace_static_member(group: _Group, old_id: str) -> _Member:
        """A known static member is back under a new member id (it restarted): the old id is
        fenced, and the member keeps its place, leadership and assignment."""
        member = group.members.pop(old_id)
        _resolve_waiters(member, ErrorCode.FENCED_INSTANCE_ID)
        assert member.group_instance_id is not None
        member.member_id = f"{member.group_instance_id}-{uuid.uuid4()}"
        group.members[member.member_id] = member
        group.static_members[member.group_instance_id] = member.member_id
        if group.leader_id == old_id:
            group.leader_id = member.member_id
        member.last_seen = time.monotonic()
        logger.info(
            "group %s: static member %s is back as %s",
            group.group_id,
            member.group_instance_id,
            member.member_id,
        )
        return member

    @staticmethod
    def _stable_answer(
        group: _Group, member: _Member, old_id: str, protocols: list[tuple[str, bytes]]
    ) -> JoinResult | None:
        """The no-rebalance answer to a returning static member, when Kafka gives one.

        In a Stable group whose protocol would not change, the member gets the current
        generation and the *old* leader id (Kafka's choice), so even a restarted leader does
        not reassign: it syncs and fetches the assignment it had.
        """
        previous_leader = old_id if group.leader_id == member.member_id else group.leader_id
        member.protocols = protocols
        if group.state != "Stable" or _choose_protocol([*group.members.values()]) != group.protocol:
            return None
        return JoinResult(
            ErrorCode.NONE, group.generation, group.protocol, previous_leader, member.member_id
        )

    async def _join_and_wait(self, group: _Group, member: _Member) -> JoinResult:
        member.last_seen = time.monotonic()
        if member.join_waiter is not None and not member.join_waiter.done():
            member.join_waiter.set_result(JoinResult(ErrorCode.REBALANCE_IN_PROGRESS))
        waiter: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        member.join_waiter = waiter
        if group.state != "PreparingRebalance":
            self._prepare_rebalance(group, reason=f"member {member.member_id} joined")
        self._maybe_complete_join(group)
        return await waiter

    async def sync(
        self,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        assignments: dict[str, bytes],
        group_instance_id: str | None = None,
    ) -> tuple[ErrorCode, bytes]:
        group = self._groups.get(group_id)
        refusal = _check_member(group, member_id, group_instance_id)
        if refusal is not None:
            return refusal, b""
        assert group is not None
        member = group.members[member_id]
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION, b""
        if group.state == "PreparingRebalance":
            return ErrorCode.REBALANCE_IN_PROGRESS, b""
        member.last_seen = time.monotonic()
        if group.state == "Stable":
            return ErrorCode.NONE, member.assignment
        waiter: asyncio.Future[tuple[ErrorCode, bytes]] = asyncio.get_running_loop().create_future()
        member.sync_waiter = waiter
        if member_id == group.leader_id:
            group.state = "Stable"
            for each in group.members.values():
                each.assignment = assignments.get(each.member_id, b"")
                if each.sync_waiter is not None and not each.sync_waiter.done():
                    each.sync_waiter.set_result((ErrorCode.NONE, each.assignment))
                each.sync_waiter = None
            logger.info(
                "group %s: generation %d stable with %d member(s)",
                group_id,
                group.generation,
                len(group.members),
            )
        return await waiter

    def heartbeat(
        self,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        group_instance_id: str | None = None,
    ) -> ErrorCode:
        group = self._groups.get(group_id)
        refusal = _check_member(group, member_id, group_instance_id)
        if refusal is not None:
            return refusal
        assert group is not None
        group.members[member_id].last_seen = time.monotonic()
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state == "PreparingRebalance":
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(
        self, *, group_id: str, member_id: str, group_instance_id: str | None = None
    ) -> ErrorCode:
        """LeaveGroup for one member: a dynamic one by member id, a static one by instance id
        (an empty member id then means "whichever member holds it", as an admin removal)."""
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group_instance_id is not None:
            known_id = group.static_members.get(group_instance_id)
            if known_id is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if member_id and member_id != known_id:
                return ErrorCode.FENCED_INSTANCE_ID
            member_id = known_id
        elif member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove_member(group, member_id, reason="left the group")
        return ErrorCode.NONE

    # --- offsets ---------------------------------------------------------------------------

    def check_commit(
        self,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        group_instance_id: str | None = None,
    ) -> ErrorCode:
        """May this member commit offsets for the group now (Kafka's rules)?"""
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None or not group.members:
            # Commits outside group management (admin tools, manual assignment).
            return ErrorCode.NONE if generation < 0 else ErrorCode.ILLEGAL_GENERATION
        refusal = _check_member(group, member_id, group_instance_id)
        if refusal is not None:
            return refusal
        if group.state == "CompletingRebalance":
            return ErrorCode.REBALANCE_IN_PROGRESS
        member = group.members[member_id]
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        member.last_seen = time.monotonic()
        return ErrorCode.NONE

    # --- admin -------------------------------------------------------------------------------

    def describe(self, group_id: str) -> GroupDescription:
        group = self._groups.get(group_id)
        if group is None:
            state: GroupState = "Empty" if self._offsets.of_group(group_id) else "Dead"
            return GroupDescription(group_id, state, "", "", [])
        members = [
            MemberDescription(
                member.member_id,
                member.group_instance_id,
                member.client_id,
                member.client_host,
                member.metadata(group.protocol),
                member.assignment if group.state == "Stable" else b"",
            )
            for member in group.members.values()
        ]
        return GroupDescription(group_id, group.state, group.protocol_type, group.protocol, members)

    def list_groups(self) -> list[tuple[str, str, GroupState]]:
        """(group id, protocol type, state) of every group with members or committed offsets."""
        found: dict[str, tuple[str, GroupState]] = {
            gid: (g.protocol_type, g.state) for gid, g in self._groups.items() if g.state != "Dead"
        }
        for group_id in self._offsets.groups():
            found.setdefault(group_id, ("", "Empty"))
        return [(gid, kind, state) for gid, (kind, state) in sorted(found.items())]

    def has_members(self, group_id: str) -> bool:
        group = self._groups.get(group_id)
        return bool(group and group.members)

    def subscribed_topics(self, group_id: str) -> set[str] | None:
        """Topics the group's members subscribe to; None when that cannot be known."""
        group = self._groups.get(group_id)
        if group is None or not group.members:
            return set()
        if group.protocol_type != "consumer":
            return None
        topics: set[str] = set()
        for member in group.members.values():
            decoded = _subscription_topics(member.metadata(group.protocol))
            if decoded is None:
                return None
            topics.update(decoded)
        return topics

    def delete_group(self, group_id: str) -> ErrorCode:
        group = self._groups.get(group_id)
        if group is not None and group.members:
            return ErrorCode.NON_EMPTY_GROUP
        if group is None and not self._offsets.of_group(group_id):
            return ErrorCode.GROUP_ID_NOT_FOUND
        self._groups.pop(group_id, None)
        self._offsets.delete_group(group_id)
        logger.info("group %s deleted", group_id)
        return ErrorCode.NONE

    # --- the state machine ---------------------------------------------------------------

    @staticmethod
    def _compatible(group: _Group, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        if protocol_type != group.protocol_type:
            return False
        offered = {name for name, _ in protocols}
        return all(
            offered & {name for name, _ in member.protocols} for member in group.members.values()
        )

    def _prepare_rebalance(self, group: _Group, *, reason: str) -> None:
        logger.info("group %s: rebalancing (%s)", group.group_id, reason)
        for member in group.members.values():
            if member.sync_waiter is not None and not member.sync_waiter.done():
                member.sync_waiter.set_result((ErrorCode.REBALANCE_IN_PROGRESS, b""))
            member.sync_waiter = None
        group.state = "PreparingRebalance"
        timeout_s = max((m.rebalance_timeout_s for m in group.members.values()), default=0.0)
        if group.join_deadline is not None:
            group.join_deadline.cancel()
        group.join_deadline = asyncio.get_running_loop().call_later(
            timeout_s, self._complete_join, group
        )

    def _maybe_complete_join(self, group: _Group) -> None:
        if group.state == "PreparingRebalance" and all(
            member.awaiting_join for member in group.members.values()
        ):
            self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        if group.state != "PreparingRebalance":
            return
        if group.join_deadline is not None:
            group.join_deadline.cancel()
            group.join_deadline = None
        for member in [m for m in group.members.values() if not m.awaiting_join]:
            logger.info(
                "group %s: member %s did not rejoin in time", group.group_id, member.member_id
            )
            del group.members[member.member_id]
            if member.group_instance_id is not None:
                group.static_members.pop(member.group_instance_id, None)
        group.generation += 1
        if not group.members:
            group.state = "Empty"
            group.protocol = ""
            group.leader_id = ""
            return
        group.protocol = _choose_protocol(list(group.members.values()))
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.state = "CompletingRebalance"
        everyone = [
            (m.member_id, m.group_instance_id, m.metadata(group.protocol))
            for m in group.members.values()
        ]
        now = time.monotonic()
        for member in group.members.values():
            member.last_seen = now
            member.assignment = b""
            is_leader = member.member_id == group.leader_id
            result = JoinResult(
                ErrorCode.NONE,
                group.generation,
                group.protocol,
                group.leader_id,
                member.member_id,
                everyone if is_leader else [],
            )
            if member.join_waiter is not None and not member.join_waiter.done():
                member.join_waiter.set_result(result)
            member.join_waiter = None
        logger.info(
            "group %s: generation %d formed with %d member(s), protocol %s",
            group.group_id,
            group.generation,
            len(group.members),
            group.protocol,
        )

    def _remove_member(self, group: _Group, member_id: str, *, reason: str) -> None:
        member = group.members.pop(member_id)
        if member.group_instance_id is not None:
            group.static_members.pop(member.group_instance_id, None)
        logger.info("group %s: member %s %s", group.group_id, member_id, reason)
        _resolve_waiters(member, ErrorCode.UNKNOWN_MEMBER_ID)
        if group.state in ("Stable", "CompletingRebalance"):
            self._prepare_rebalance(group, reason=f"member {member_id} {reason}")
        self._maybe_complete_join(group)

    async def _expire_members(self) -> None:
        while True:
            await asyncio.sleep(_EXPIRY_CHECK_S)
            now = time.monotonic()
            for group in list(self._groups.values()):
                for pending_id, deadline in list(group.pending_members.items()):
                    if now > deadline:
                        del group.pending_members[pending_id]
                for member in list(group.members.values()):
                    if (
                        not member.awaiting_join
                        and now - member.last_seen > member.session_timeout_s
                    ):
                        self._remove_member(group, member.member_id, reason="session timed out")


def _check_member(
    group: _Group | None, member_id: str, instance_id: str | None
) -> ErrorCode | None:
    """Why a request naming this member is refused (Kafka's validateCurrentMember), if it is."""
    if group is None:
        return ErrorCode.UNKNOWN_MEMBER_ID
    if instance_id is not None:
        known_id = group.static_members.get(instance_id)
        if known_id is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if known_id != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
    if member_id not in group.members:
        return ErrorCode.UNKNOWN_MEMBER_ID
    return None


def _resolve_waiters(member: _Member, error: ErrorCode) -> None:
    if member.join_waiter is not None and not member.join_waiter.done():
        member.join_waiter.set_result(JoinResult(error, member_id=member.member_id))
    if member.sync_waiter is not None and not member.sync_waiter.done():
        member.sync_waiter.set_result((error, b""))


def _choose_protocol(members: list[_Member]) -> str:
    """Kafka's rule: among protocols every member supports, the one most members prefer."""
    common = set.intersection(*({name for name, _ in m.protocols} for m in members))
    votes: Counter[str] = Counter()
    for member in members:
        votes[next(name for name, _ in member.protocols if name in common)] += 1
    ordered = [name for name, _ in members[0].protocols if name in common]
    return max(ordered, key=lambda name: (votes[name], -ordered.index(name)))


def _subscription_topics(metadata: bytes) -> list[str] | None:
    """Topics in a consumer-protocol subscription (version, topics, user data)."""
    try:
        _, topics = _SUBSCRIPTION.decode(BytesIO(metadata))
    except (ValueError, TypeError):
        return None
    return [str(topic) for topic in topics or []]
