"""Offset samples become Burrow commits: what counts as a commit, and the window's bounds."""

from __future__ import annotations

from core.kafka.groups import GroupDescription, GroupMember, GroupSnapshot, PartitionOffsets
from teleprompter.consumer_groups.sampling import GroupWindow

GROUP = "g"
TOPIC = "t"


def snapshot(at_s: float, committed: int | None, log_end: int, *, owned: bool) -> GroupSnapshot:
    members = (
        GroupMember(
            member_id="m-1", client_id="c", host="h", instance_id=None, assignment=((TOPIC, 0),)
        ),
    )
    return GroupSnapshot(
        description=GroupDescription(
            group_id=GROUP,
            state="Stable" if owned else "Empty",
            protocol="classic",
            assignor="range",
            coordinator=1,
            members=members if owned else (),
        ),
        partitions=(
            PartitionOffsets(topic=TOPIC, partition=0, committed=committed, log_end=log_end),
        ),
        taken_at_ms=at_s * 1000.0,
    )


def judged(window: GroupWindow) -> tuple[str, str]:
    (partition,) = window.report().partitions
    assert partition.verdict is not None
    return partition.verdict.status, partition.verdict.rule


def test_an_owned_partition_commits_every_sample_so_a_stuck_offset_stalls() -> None:
    window = GroupWindow(group_id=GROUP)
    for at_s, log_end in [(0, 15), (1, 20), (2, 25)]:
        window.observe(snapshot(at_s, 10, log_end, owned=True))

    assert judged(window) == ("STALL", "rule 4: offset stuck at 10 with lag 15")


def test_an_unowned_unchanged_offset_is_no_commit_so_the_partition_stops() -> None:
    window = GroupWindow(group_id=GROUP)
    for at_s in (0, 1, 2):
        window.observe(snapshot(at_s, 10, 15, owned=False))

    status, rule = judged(window)
    assert status == "STOP"
    assert rule == "rule 3: no commit seen for 2.0 s, longer than the window's 0.0 s"


def test_an_unowned_offset_that_moves_is_a_commit() -> None:
    window = GroupWindow(group_id=GROUP)
    for at_s, committed in [(0, 10), (1, 12), (2, 14)]:
        window.observe(snapshot(at_s, committed, 20, owned=False))

    assert judged(window) == ("OK", "offsets advance and lag decreases")


def test_the_window_keeps_the_last_size_samples() -> None:
    window = GroupWindow(group_id=GROUP, size=3)
    # Stuck for a while, then moving: once the stuck commits leave the window it is OK.
    for at_s, committed in [(0, 10), (1, 10), (2, 10), (3, 11), (4, 12), (5, 13)]:
        window.observe(snapshot(at_s, committed, 20, owned=True))

    report = window.report()
    assert report.samples == 3
    assert report.window_s == 2.0
    assert judged(window)[0] == "OK"


def test_a_partition_without_a_commit_has_no_verdict() -> None:
    window = GroupWindow(group_id=GROUP)
    window.observe(snapshot(0, None, 20, owned=True))
    window.observe(snapshot(1, None, 20, owned=True))

    report = window.report()
    (partition,) = report.partitions
    assert partition.verdict is None
    assert [m.member_id for m in partition.owners] == ["m-1"]
    assert report.verdict.status == "OK"
    assert report.verdict.rule == "no committed offsets to judge"
