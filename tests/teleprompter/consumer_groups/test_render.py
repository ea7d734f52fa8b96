"""How a group prints: a row per member a partition is assigned to, as kafka-consumer-groups.sh."""

from __future__ import annotations

from core.kafka.groups import GroupDescription, GroupMember, GroupSnapshot, PartitionOffsets
from teleprompter.consumer_groups.render import describe_json, describe_text
from teleprompter.consumer_groups.sampling import GroupWindow


def member(n: int) -> GroupMember:
    # Faust assigns a table's changelog to every worker: the active one and its standbys.
    return GroupMember(
        member_id=f"m-{n}",
        client_id="faust",
        host=f"/10.0.0.{n}",
        instance_id=None,
        assignment=(("t-changelog", 0), ("t", n)),
    )


def test_a_partition_assigned_to_two_members_shows_both() -> None:
    window = GroupWindow(group_id="g")
    window.observe(
        GroupSnapshot(
            description=GroupDescription(
                group_id="g",
                state="Stable",
                protocol="classic",
                assignor="faust",
                coordinator=1,
                members=(member(1), member(2)),
            ),
            partitions=(
                PartitionOffsets(topic="t", partition=1, committed=5, log_end=5),
                PartitionOffsets(topic="t-changelog", partition=0, committed=None, log_end=9),
            ),
            taken_at_ms=0.0,
        )
    )
    report = window.report()

    rows = [line.split() for line in describe_text(report).splitlines() if line.startswith("g ")]
    assert [row[1:3] + row[6:8] for row in rows] == [
        ["t", "1", "m-1", "/10.0.0.1"],
        ["t-changelog", "0", "m-1", "/10.0.0.1"],
        ["t-changelog", "0", "m-2", "/10.0.0.2"],
    ]
    changelog = describe_json(report)["partitions"][1]
    assert [c["consumer_id"] for c in changelog["consumers"]] == ["m-1", "m-2"]
    assert changelog["status"] is None
    assert changelog["rule"] == "no committed offset"
