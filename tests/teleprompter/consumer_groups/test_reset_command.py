"""`teleprompter groups reset-offsets` against a real group: dry run, execute, refusal, errors."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import Result

from teleprompter.options import EXIT_FAILED, EXIT_USAGE
from tests.group_workload import PARTITIONS, Workload
from tests.teleprompter.consumer_groups.test_commands import committed, groups

START = {0: 5, 1: 5, 2: 5}


def reset(load: Workload, *args: str) -> Result:
    return groups(load.bootstrap_servers, "reset-offsets", load.group, "--topic", load.topic, *args)


def plan(result: Result) -> dict[int, tuple[int | None, int]]:
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    return {p["partition"]: (p["old_offset"], p["new_offset"]) for p in document["partitions"]}


@pytest.fixture
def left_at_five(workload: Workload) -> Workload:
    """The group committed offset 5 everywhere, then its only member left."""
    with workload.member() as member:
        member.commit(START)
    return workload


def test_a_dry_run_shows_old_and_new_offsets_and_changes_nothing(left_at_five: Workload) -> None:
    result = reset(left_at_five, "--to-earliest")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET", "NOTE"]
    assert [line.split()[2:5] for line in lines[1 : 1 + PARTITIONS]] == [
        ["0", "5", "0"],
        ["1", "5", "0"],
        ["2", "5", "0"],
    ]
    assert "dry run: nothing changed. Add --execute" in result.stdout
    assert committed(left_at_five) == START


def test_execute_applies_the_reset(left_at_five: Workload) -> None:
    result = reset(left_at_five, "--to-latest", "--execute")

    assert result.exit_code == 0, result.output
    assert (
        f"reset {PARTITIONS} partition(s) of {left_at_five.group} to the log end" in result.stdout
    )
    assert committed(left_at_five) == dict.fromkeys(range(PARTITIONS), 10)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--shift-by", "-2"), {0: (5, 3), 1: (5, 3), 2: (5, 3)}),
        (("--shift-by", "8"), {0: (5, 10), 1: (5, 10), 2: (5, 10)}),
        (("--to-offset", "7"), {0: (5, 7), 1: (5, 7), 2: (5, 7)}),
        (("--to-offset", "-3"), {0: (5, 0), 1: (5, 0), 2: (5, 0)}),
    ],
)
def test_shift_and_offset_targets_are_clamped_to_the_log(
    left_at_five: Workload, args: tuple[str, ...], expected: dict[int, tuple[int, int]]
) -> None:
    assert plan(reset(left_at_five, *args, "--json")) == expected


def test_to_datetime_finds_the_first_record_at_or_after_the_time(left_at_five: Workload) -> None:
    time.sleep(0.05)  # the broker stamps records in milliseconds: make "now" strictly later
    cut = time.time()
    time.sleep(0.05)
    left_at_five.produce(2)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut * 1000) % 1000:03d}Z"

    assert plan(reset(left_at_five, "--to-datetime", iso, "--json")) == dict.fromkeys(
        range(PARTITIONS), (5, 10)
    )
    future = "2999-01-01T00:00:00Z"
    assert plan(reset(left_at_five, "--to-datetime", future, "--json")) == dict.fromkeys(
        range(PARTITIONS), (5, 12)
    )


def test_one_partition_of_a_topic(left_at_five: Workload) -> None:
    result = groups(
        left_at_five.bootstrap_servers,
        "reset-offsets",
        left_at_five.group,
        "--topic",
        f"{left_at_five.topic}:1",
        "--to-offset",
        "2",
        "--execute",
    )

    assert result.exit_code == 0, result.output
    assert committed(left_at_five) == {0: 5, 1: 2, 2: 5}


def test_execute_is_refused_while_the_group_has_members(workload: Workload) -> None:
    with workload.member() as member:
        member.commit(START)

        dry = reset(workload, "--to-earliest")
        refused = reset(workload, "--to-earliest", "--execute")

        assert dry.exit_code == 0, dry.output
        assert "has 1 active member(s); --execute will be refused until they stop" in dry.stdout
        assert refused.exit_code == EXIT_FAILED
        assert refused.stderr == (
            f"teleprompter: cannot reset the offsets of {workload.group}: it has 1 active "
            "member(s) (state Stable); Kafka resets only an empty group, so stop its consumers "
            "first\n"
        )
        assert committed(workload) == START


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--to-datetime", "yesterday"), "bad time 'yesterday': expected ISO 8601"),
        (("--to-earliest", "--to-latest"), "give exactly one of --to-earliest, --to-latest"),
        ((), "give exactly one of"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(
    left_at_five: Workload, args: tuple[str, ...], message: str
) -> None:
    result = reset(left_at_five, *args)

    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith(f"teleprompter: {message}")
    assert result.stderr.count("\n") == 1
    assert committed(left_at_five) == START


def test_an_unknown_topic_or_partition_is_a_usage_error(left_at_five: Workload) -> None:
    bootstrap = left_at_five.bootstrap_servers
    unknown = groups(
        bootstrap, "reset-offsets", left_at_five.group, "--topic", "nope-nope", "--to-earliest"
    )
    no_partition = groups(
        bootstrap,
        "reset-offsets",
        left_at_five.group,
        "--topic",
        f"{left_at_five.topic}:7",
        "--to-earliest",
    )

    assert unknown.exit_code == EXIT_USAGE
    assert unknown.stderr == f"teleprompter: no such topic on {bootstrap}: nope-nope\n"
    assert no_partition.exit_code == EXIT_USAGE
    assert no_partition.stderr == (
        f"teleprompter: topic {left_at_five.topic} on {bootstrap} has no partition 7 (it has 3)\n"
    )


def test_an_unknown_group_is_a_usage_error(workload: Workload) -> None:
    result = reset(workload, "--to-earliest", "--execute")

    assert result.exit_code == EXIT_USAGE
    assert result.stderr == (
        f"teleprompter: no such consumer group on {workload.bootstrap_servers}: {workload.group}\n"
    )
