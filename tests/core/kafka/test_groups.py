"""GroupAdmin against the session's Kafka with a real member: what it reads, what Kafka refuses."""

from __future__ import annotations

import pytest

from core.kafka.groups import GroupAdmin, GroupNotEmptyError
from tests.group_workload import CLIENT_ID, PARTITIONS, Workload


@pytest.fixture
def admin(bootstrap_servers: str) -> GroupAdmin:
    return GroupAdmin(bootstrap_servers=bootstrap_servers)


async def test_a_snapshot_has_members_owners_and_offsets(
    admin: GroupAdmin, workload: Workload
) -> None:
    with workload.member() as member:
        member.commit({0: 3})

        snapshot = (await admin.snapshots([workload.group]))[workload.group]

    d = snapshot.description
    assert d.state == "Stable"
    [described] = d.members
    assert described.member_id == member.member_id
    assert described.client_id == CLIENT_ID
    assert described.assignment == tuple((workload.topic, p) for p in range(PARTITIONS))
    assert set(d.owners) == {(workload.topic, p) for p in range(PARTITIONS)}
    offsets = {p.partition: (p.committed, p.log_end, p.lag) for p in snapshot.partitions}
    assert offsets == {0: (3, 10, 7), 1: (None, 10, None), 2: (None, 10, None)}
    assert snapshot.exists


async def test_an_unknown_group_is_dead_and_empty(admin: GroupAdmin, unique_name: str) -> None:
    snapshot = (await admin.snapshots([unique_name]))[unique_name]

    assert snapshot.description.state == "Dead"
    assert snapshot.partitions == ()
    assert not snapshot.exists


async def test_kafka_itself_refuses_to_reset_a_group_with_members(
    admin: GroupAdmin, workload: Workload
) -> None:
    with workload.member() as member:
        member.commit({0: 3})

        with pytest.raises(GroupNotEmptyError, match="the group is not empty"):
            await admin.reset_offsets(workload.group, {(workload.topic, 0): 0})

        assert await admin.committed_offsets(workload.group) == {(workload.topic, 0): 3}
