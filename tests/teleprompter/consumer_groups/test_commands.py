"""`teleprompter groups ...` through the real CLI, with real consumers in a real group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

import pytest
from click.testing import CliRunner, Result

from core.kafka.groups import GroupAdmin
from teleprompter.cli import main
from teleprompter.options import EXIT_USAGE
from tests.group_workload import CLIENT_ID, PARTITIONS, Workload
from tests.signals import interruptible

# Synchronous on purpose: each command runs its own event loop (asyncio.run).
FAST = ("--interval", "0.2")


def groups(bootstrap_servers: str, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["groups", *args], env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    )


def describe_json(load: Workload, *args: str) -> dict[str, Any]:
    result = groups(load.bootstrap_servers, "describe", load.group, "--json", *FAST, *args)
    assert result.exit_code == 0, result.output
    (group,) = json.loads(result.stdout)["groups"]
    assert isinstance(group, dict)
    return group


def by_partition(group: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["partition"]: p for p in group["partitions"]}


def committed(load: Workload) -> dict[int, int]:
    import asyncio  # noqa: PLC0415  # only this helper needs a loop of its own

    admin = GroupAdmin(bootstrap_servers=load.bootstrap_servers)
    offsets = asyncio.run(admin.committed_offsets(load.group))
    return {partition: offset for (_, partition), offset in offsets.items()}


# --- describe -------------------------------------------------------------------------------
def test_describe_shows_members_assignment_and_the_kafka_columns(workload: Workload) -> None:
    with workload.member() as member:
        member.commit({0: 10, 1: 4, 2: 0})

        result = groups(workload.bootstrap_servers, "describe", workload.group, "--samples", "1")

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"group {workload.group}: Stable, 1 member(s), protocol classic" in text
    header = next(line for line in text.splitlines() if line.startswith("GROUP "))
    assert header.split() == [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
        "STATUS",
        "RULE",
    ]
    rows = {
        int(line.split()[2]): line.split()
        for line in text.splitlines()
        if line.split()[:1] == [workload.group]
    }
    assert sorted(rows) == [0, 1, 2]
    assert rows[1][:9] == [
        workload.group,
        workload.topic,
        "1",
        "4",
        "10",
        "6",
        member.member_id,
        rows[1][7],
        CLIENT_ID,
    ]
    assert "127.0.0.1" in rows[1][7]
    assert rows[0][5] == "0" and rows[0][9] == "OK"
    members_line = next(line for line in text.splitlines() if line.startswith(member.member_id))
    assert members_line.split()[2:4] == [CLIENT_ID, str(PARTITIONS)]
    assert f"{workload.topic}(0,1,2)" in members_line


def test_describe_json_carries_the_same_facts(workload: Workload) -> None:
    with workload.member() as member:
        member.commit({0: 10, 1: 4, 2: 0})
        group = describe_json(workload, "--samples", "1")

    assert group["state"] == "Stable"
    [described] = group["members"]
    assert described["consumer_id"] == member.member_id
    assert described["client_id"] == CLIENT_ID
    assert sorted(a["partition"] for a in described["assignment"]) == [0, 1, 2]
    partitions = by_partition(group)
    assert partitions[1]["current_offset"] == 4
    assert partitions[1]["log_end_offset"] == 10
    assert partitions[1]["lag"] == 6
    assert partitions[1]["consumers"] == [
        {"consumer_id": member.member_id, "host": described["host"], "client_id": CLIENT_ID}
    ]
    # One sample judges only the current lag: a lagging partition waits for a window.
    assert partitions[1]["status"] == "OK"
    assert "rules 2-5 need 2 or more" in partitions[1]["rule"]


def test_a_member_that_stops_progressing_with_lag_is_stalled(workload: Workload) -> None:
    with workload.member() as member:
        member.commit({0: 10, 1: 3, 2: 10})
        group = describe_json(workload, "--samples", "3")

    partitions = by_partition(group)
    assert partitions[1]["status"] == "STALL"
    assert partitions[1]["rule"].startswith("rule 4: offset stuck at 3")
    assert partitions[0]["status"] == "OK"
    assert group["status"] == "ERR"
    assert group["rule"].startswith(f"{workload.topic}[1] STALL")


def test_a_group_whose_consumers_left_with_lag_is_stopped(workload: Workload) -> None:
    with workload.member() as member:
        member.commit({0: 5, 1: 10, 2: 10})

    group = describe_json(workload, "--samples", "2")

    assert group["state"] == "Empty"
    assert group["members"] == []
    partitions = by_partition(group)
    assert partitions[0]["status"] == "STOP"
    assert partitions[0]["rule"].startswith("rule 3: no commit seen for")
    assert partitions[0]["consumers"] == []
    assert partitions[1]["status"] == "OK"
    assert group["status"] == "ERR"


def test_a_group_that_has_caught_up_is_ok(workload: Workload) -> None:
    with workload.member() as member:
        member.commit(dict.fromkeys(range(PARTITIONS), 10))
        group = describe_json(workload, "--samples", "2")

    assert group["status"] == "OK"
    assert {p["status"] for p in group["partitions"]} == {"OK"}
    assert group["samples"] == 2


def test_list_shows_the_group_with_state_lag_and_status(workload: Workload) -> None:
    with workload.member() as member:
        member.commit({0: 10, 1: 10, 2: 7})
        result = groups(workload.bootstrap_servers, "list", "--json", "--samples", "1")

    assert result.exit_code == 0, result.output
    listed = {g["group"]: g for g in json.loads(result.stdout)["groups"]}
    assert listed[workload.group] == {
        "group": workload.group,
        "state": "Stable",
        "members": 1,
        "partitions": PARTITIONS,
        "lag": 3,
        "status": "OK",
        "rule": "every partition OK",
    }


def test_watch_redraws_until_interrupted(workload: Workload) -> None:
    with workload.member() as member:
        member.commit(dict.fromkeys(range(PARTITIONS), 10))
    command = interruptible("teleprompter", "groups", "describe", workload.group)
    process = subprocess.Popen(
        [*command, "--watch", "--json", *FAST],
        # A hang is then diagnosable: SIGABRT prints every thread's stack.
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": workload.bootstrap_servers,
            "PYTHONFAULTHANDLER": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        samples = [json.loads(process.stdout.readline())["groups"][0]["samples"] for _ in range(3)]
        process.send_signal(signal.SIGINT)
        # communicate, not wait: it drains both pipes, so a full pipe cannot block the exit.
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate()
            pytest.fail(f"still running 30 s after Ctrl-C; stderr:\n{stderr}")
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert samples == [1, 2, 3]


# --- errors ---------------------------------------------------------------------------------
def test_an_unknown_group_is_a_one_line_usage_error(bootstrap_servers: str) -> None:
    result = groups(bootstrap_servers, "describe", "no-such-group-anywhere", "--samples", "1")

    assert result.exit_code == EXIT_USAGE
    assert result.stderr == (
        f"teleprompter: no such consumer group on {bootstrap_servers}: no-such-group-anywhere\n"
    )
    assert result.stdout == ""
