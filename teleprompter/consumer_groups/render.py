"""How `groups list|describe` print: kafka-consumer-groups.sh tables with Burrow status, or JSON."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from core.kafka.groups import GroupMember
from teleprompter.consumer_groups.sampling import GroupReport, PartitionReport
from teleprompter.topic_commands import format_table

logger = logging.getLogger(__name__)

NONE: Final = "-"

PARTITION_COLUMNS: Final = (
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
)
MEMBER_COLUMNS: Final = ("CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT")
LIST_COLUMNS: Final = ("GROUP", "STATE", "MEMBERS", "PARTITIONS", "LAG", "STATUS", "RULE")


# --- tables ---------------------------------------------------------------------------------
def list_table(reports: Sequence[GroupReport]) -> str:
    if not reports:
        return "no consumer groups"
    return format_table(
        LIST_COLUMNS,
        [
            (
                r.snapshot.group_id,
                r.snapshot.description.state,
                str(len(r.snapshot.description.members)),
                str(len(r.snapshot.partitions)),
                _cell(total_lag(r)),
                r.verdict.status,
                r.verdict.rule,
            )
            for r in reports
        ],
    )


def describe_text(report: GroupReport) -> str:
    d = report.snapshot.description
    header = (
        f"group {d.group_id}: {d.state}, {len(d.members)} member(s), "
        f"protocol {d.protocol}, assignor {d.assignor or NONE}, "
        f"coordinator {NONE if d.coordinator is None else d.coordinator}"
    )
    status = (
        f"status {report.verdict.status} ({report.verdict.rule}); "
        f"judged over {report.samples} sample(s) in {report.window_s:.1f} s"
    )
    members = d.members
    blocks = [header, status]
    if members:
        blocks.append(format_table(MEMBER_COLUMNS, [_member_row(m) for m in members]))
    if report.partitions:
        blocks.append(
            format_table(
                PARTITION_COLUMNS,
                [row for p in report.partitions for row in _partition_rows(d.group_id, p)],
            )
        )
    else:
        blocks.append("no partitions: the group has committed no offsets and owns none")
    return "\n\n".join(blocks)


# --- JSON -----------------------------------------------------------------------------------
def list_json(reports: Sequence[GroupReport]) -> dict[str, Any]:
    return {
        "groups": [
            {
                "group": r.snapshot.group_id,
                "state": r.snapshot.description.state,
                "members": len(r.snapshot.description.members),
                "partitions": len(r.snapshot.partitions),
                "lag": total_lag(r),
                "status": r.verdict.status,
                "rule": r.verdict.rule,
            }
            for r in reports
        ]
    }


def describe_json(report: GroupReport) -> dict[str, Any]:
    d = report.snapshot.description
    return {
        "group": d.group_id,
        "state": d.state,
        "protocol": d.protocol,
        "assignor": d.assignor,
        "coordinator": d.coordinator,
        "status": report.verdict.status,
        "rule": report.verdict.rule,
        "samples": report.samples,
        "window_s": round(report.window_s, 3),
        "taken_at_ms": int(report.snapshot.taken_at_ms),
        "members": [
            {
                "consumer_id": m.member_id,
                "host": m.host,
                "client_id": m.client_id,
                "instance_id": m.instance_id,
                "assignment": [{"topic": t, "partition": p} for t, p in m.assignment],
            }
            for m in d.members
        ],
        "partitions": [_partition_json(p) for p in report.partitions],
    }


def total_lag(report: GroupReport) -> int | None:
    lags = [p.offsets.lag for p in report.partitions if p.offsets.lag is not None]
    return sum(lags) if lags else None


# --- cells ----------------------------------------------------------------------------------
def _member_row(member: GroupMember) -> tuple[str, ...]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in member.assignment:
        by_topic.setdefault(topic, []).append(partition)
    assignment = ", ".join(
        f"{topic}({','.join(map(str, parts))})" for topic, parts in sorted(by_topic.items())
    )
    return (
        member.member_id,
        member.host,
        member.client_id,
        str(len(member.assignment)),
        assignment or NONE,
    )


def _partition_rows(group_id: str, p: PartitionReport) -> list[tuple[str, ...]]:
    """One row per member the partition is assigned to, as kafka-consumer-groups.sh prints."""
    offsets = (
        group_id,
        p.offsets.topic,
        str(p.offsets.partition),
        _cell(p.offsets.committed),
        str(p.offsets.log_end),
        _cell(p.offsets.lag),
    )
    judged = (
        p.verdict.status if p.verdict else NONE,
        p.verdict.rule if p.verdict else "no committed offset",
    )
    consumers = [(m.member_id, m.host, m.client_id) for m in p.owners] or [(NONE, NONE, NONE)]
    return [(*offsets, *consumer, *judged) for consumer in consumers]


def _partition_json(p: PartitionReport) -> dict[str, Any]:
    return {
        "topic": p.offsets.topic,
        "partition": p.offsets.partition,
        "current_offset": p.offsets.committed,
        "log_end_offset": p.offsets.log_end,
        "lag": p.offsets.lag,
        "consumers": [
            {"consumer_id": m.member_id, "host": m.host, "client_id": m.client_id} for m in p.owners
        ],
        "status": p.verdict.status if p.verdict else None,
        "rule": p.verdict.rule if p.verdict else "no committed offset",
    }


def _cell(value: int | None) -> str:
    return NONE if value is None else str(value)
