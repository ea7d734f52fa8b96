"""`teleprompter topics create|list|describe` through the real CLI against the session's broker."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner, Result

from teleprompter.cli import main
from teleprompter.topic_commands import format_duration_ms, format_table

# These tests are synchronous on purpose: each command runs its own event loop (asyncio.run).


@pytest.fixture
def prefix(unique_name: str) -> str:
    return unique_name.replace("-", "_")[-40:]


def run(bootstrap_servers: str, prefix: str, *args: str, partitions: int = 3) -> Result:
    return CliRunner().invoke(
        main,
        ["topics", *args],
        env={
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "TELEPROMPTER_TOPIC_PREFIX": prefix,
            "TELEPROMPTER_PARTITIONS": str(partitions),
        },
    )


def rows(output: str) -> dict[str, list[str]]:
    """Table rows by their first cell."""
    return {line.split()[0]: line.split() for line in output.splitlines() if line.strip()}


def test_create_then_create_again(bootstrap_servers: str, prefix: str) -> None:
    first = run(bootstrap_servers, prefix, "create")

    assert first.exit_code == 0, first.output
    table = rows(first.stdout)
    assert table["TOPIC"] == ["TOPIC", "PARTITIONS", "CLEANUP", "RETENTION", "STATUS"]
    assert table[f"{prefix}.audio"] == [f"{prefix}.audio", "3", "delete", "1", "h", "created"]
    assert table[f"{prefix}.routes"] == [f"{prefix}.routes", "3", "compact", "-", "created"]
    assert "7 created, 0 already as specified" in first.stdout

    second = run(bootstrap_servers, prefix, "create")

    assert second.exit_code == 0, second.output
    assert rows(second.stdout)[f"{prefix}.turns"][-1] == "exists"
    assert "0 created, 7 already as specified" in second.stdout


def test_create_reports_differences_without_failing(bootstrap_servers: str, prefix: str) -> None:
    assert run(bootstrap_servers, prefix, "create", partitions=2).exit_code == 0

    result = run(bootstrap_servers, prefix, "create", partitions=4)

    assert result.exit_code == 0, result.output
    turns = next(line for line in result.stdout.splitlines() if line.startswith(f"{prefix}.turns "))
    assert turns.endswith("differs: partitions is 2, the catalog says 4")
    assert "7 differ, left unchanged" in result.stdout


def test_list_shows_what_exists(bootstrap_servers: str, prefix: str) -> None:
    before = run(bootstrap_servers, prefix, "list")
    assert before.exit_code == 0, before.output
    assert rows(before.stdout)[f"{prefix}.summaries"][4] == "missing"

    run(bootstrap_servers, prefix, "create")
    after = run(bootstrap_servers, prefix, "list")

    assert after.exit_code == 0, after.output
    assert rows(after.stdout)[f"{prefix}.summaries"][1:5] == ["3", "compact", "-", "exists"]


def test_describe_one_topic(bootstrap_servers: str, prefix: str) -> None:
    run(bootstrap_servers, prefix, "create")

    result = run(bootstrap_servers, prefix, "describe", f"{prefix}.routes")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{prefix}.routes - conversation -> gateway reply topic"
    assert "partitions 3, replication 1, offsets held 0" in lines[1]
    assert "cleanup.policy=compact" in lines[2]
    assert lines[3].split() == ["PARTITION", "LEADER", "REPLICAS", "IN", "SYNC", "START", "END"]
    assert [line.split()[0] for line in lines[4:]] == ["0", "1", "2"]


def test_describe_defaults_to_the_prefix_and_names_missing_topics(
    bootstrap_servers: str, prefix: str
) -> None:
    result = run(bootstrap_servers, prefix, "describe")

    assert result.exit_code == 0, result.output
    assert f"missing: {prefix}.audio, {prefix}.transcripts" in result.stdout


def test_describe_an_unknown_topic_fails(bootstrap_servers: str, prefix: str) -> None:
    result = run(bootstrap_servers, prefix, "describe", f"{prefix}.nope")

    assert result.exit_code == 1
    assert f"no such topic on {bootstrap_servers}: {prefix}.nope" in result.stderr


def test_unreachable_kafka_fails_with_a_clear_message(prefix: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        servers = f"127.0.0.1:{probe.getsockname()[1]}"

    result = run(servers, prefix, "list")

    assert result.exit_code == 1
    assert f"teleprompter: Kafka at {servers} did not answer within 10 s" in result.stderr
    assert result.stdout == ""


def test_format_table_pads_columns() -> None:
    assert format_table(("A", "BB"), [("xxx", "y"), ("z", "")]) == "A    BB\nxxx  y\nz"


@pytest.mark.parametrize(
    ("duration_ms", "shown"),
    [(3_600_000, "1 h"), (604_800_000, "7 d"), (90_000, "90 s"), (120_000, "2 min"), (5, "5 ms")],
)
def test_format_duration(duration_ms: int, shown: str) -> None:
    assert format_duration_ms(duration_ms) == shown
