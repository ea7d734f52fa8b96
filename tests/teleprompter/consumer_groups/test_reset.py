"""Reset planning as kafka-consumer-groups.sh plans it: targets, clamping, times, topics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from teleprompter.consumer_groups.reset import (
    PlannedReset,
    ResetPlanError,
    ResetTarget,
    parse_datetime,
    parse_topic,
    plan_reset,
)

TP = ("t", 0)


def one(
    target: ResetTarget, *, current: int | None = 50, at_time: int | None = None
) -> PlannedReset:
    (planned,) = plan_reset(
        target,
        partitions=[TP],
        committed={} if current is None else {TP: current},
        earliest={TP: 20},
        latest={TP: 100},
        at_time={TP: at_time},
    )
    return planned


@pytest.mark.parametrize(
    ("target", "new"),
    [
        (ResetTarget(kind="earliest"), 20),
        (ResetTarget(kind="latest"), 100),
        (ResetTarget(kind="offset", value=70), 70),
        (ResetTarget(kind="shift", value=-10), 40),
        (ResetTarget(kind="shift", value=25), 75),
    ],
)
def test_targets_within_the_log(target: ResetTarget, new: int) -> None:
    assert one(target) == PlannedReset(topic="t", partition=0, current=50, new=new)


def test_targets_outside_the_log_are_clamped_with_a_note() -> None:
    assert one(ResetTarget(kind="offset", value=5)).new == 20
    assert one(ResetTarget(kind="offset", value=5)).note == (
        "5 is before the earliest offset 20: using 20"
    )
    assert one(ResetTarget(kind="shift", value=500)).new == 100
    assert (
        one(ResetTarget(kind="shift", value=500)).note == "550 is past the log end 100: using 100"
    )


def test_a_time_after_the_last_record_means_the_log_end() -> None:
    assert one(ResetTarget(kind="datetime", value=1), at_time=60).new == 60
    assert one(ResetTarget(kind="datetime", value=1), at_time=None).new == 100


def test_shifting_needs_a_committed_offset() -> None:
    with pytest.raises(ResetPlanError, match=r"t\[0\] has no committed offset to shift from"):
        one(ResetTarget(kind="shift", value=1), current=None)
    assert one(ResetTarget(kind="earliest"), current=None).current is None


def test_times_are_iso_8601_and_local_without_a_zone() -> None:
    assert parse_datetime("2025-01-31T09:30:00Z") == 1738315800000
    assert parse_datetime("2025-01-31T10:30:00.250+01:00") == 1738315800250
    naive = datetime(2025, 1, 31, 9, 30).astimezone()
    assert parse_datetime("2025-01-31T09:30:00") == int(naive.timestamp() * 1000)
    assert datetime.fromtimestamp(1738315800, UTC).isoformat() == "2025-01-31T09:30:00+00:00"
    with pytest.raises(ValueError, match="bad time 'last tuesday': expected ISO 8601"):
        parse_datetime("last tuesday")


def test_topics_with_or_without_partitions() -> None:
    assert parse_topic("tp.turns") == ("tp.turns", None)
    assert parse_topic("tp.turns:2,0,2") == ("tp.turns", [0, 2])
    with pytest.raises(ValueError, match="partitions must be numbers"):
        parse_topic("tp.turns:x")
