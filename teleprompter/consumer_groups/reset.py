"""`groups reset-offsets`: where each partition moves, computed as kafka-consumer-groups.sh does.

Targets outside what the log still holds are clamped to it, as Kafka clamps them: below the
earliest offset becomes the earliest, beyond the log end becomes the log end. A time after the
last record resolves to the log end. Shifting needs a committed offset to shift from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import click

from core.kafka.groups import (
    GroupAdmin,
    GroupNotEmptyError,
    Partition,
    UnknownGroupError,
    UnknownTopicError,
)
from teleprompter.topic_commands import format_table

logger = logging.getLogger(__name__)

TargetKind = Literal["earliest", "latest", "datetime", "shift", "offset"]

RESET_COLUMNS: Final = ("GROUP", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET", "NOTE")


class ResetPlanError(ValueError):
    """The target cannot be applied to these partitions; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class ResetTarget:
    """One of kafka-consumer-groups' reset specifications; `value` for datetime, shift, offset."""

    kind: TargetKind
    value: int = 0

    def describe(self) -> str:
        if self.kind == "datetime":
            shown = datetime.fromtimestamp(self.value / 1000).astimezone().isoformat()
            return f"to the first offset at or after {shown}"
        return {
            "earliest": "to the earliest offset",
            "latest": "to the log end",
            "shift": f"by {self.value:+d}",
            "offset": f"to offset {self.value}",
        }[self.kind]


@dataclass(frozen=True, kw_only=True)
class PlannedReset:
    """One partition's committed offset now and after the reset."""

    topic: str
    partition: int
    current: int | None
    new: int
    note: str = ""


def parse_datetime(text: str) -> int:
    """ISO 8601 to epoch milliseconds; without a zone it is local time, as Kafka's tool reads it.

    Raises ValueError with a message fit to show.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: expected ISO 8601, e.g. 2025-01-31T09:30:00Z or "
            "2025-01-31T10:30:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local zone
    return int(moment.timestamp() * 1000)


def plan_reset(
    target: ResetTarget,
    *,
    partitions: Sequence[Partition],
    committed: Mapping[Partition, int],
    earliest: Mapping[Partition, int],
    latest: Mapping[Partition, int],
    at_time: Mapping[Partition, int | None] | None = None,
) -> list[PlannedReset]:
    """Each partition's new offset; ResetPlanError when the target cannot apply."""
    plans = []
    for tp in partitions:
        current = committed.get(tp)
        low, high = earliest[tp], latest[tp]
        match target.kind:
            case "earliest":
                wanted = low
            case "latest":
                wanted = high
            case "offset":
                wanted = target.value
            case "shift":
                if current is None:
                    raise ResetPlanError(
                        f"{tp[0]}[{tp[1]}] has no committed offset to shift from; "
                        "use --to-earliest, --to-latest, --to-datetime or --to-offset"
                    )
                wanted = current + target.value
            case "datetime":
                found = (at_time or {}).get(tp)
                wanted = high if found is None else found
        new, note = _clamped(wanted, low, high)
        plans.append(
            PlannedReset(topic=tp[0], partition=tp[1], current=current, new=new, note=note)
        )
    return plans


def _clamped(wanted: int, low: int, high: int) -> tuple[int, str]:
    if wanted < low:
        return low, f"{wanted} is before the earliest offset {low}: using {low}"
    if wanted > high:
        return high, f"{wanted} is past the log end {high}: using {high}"
    return wanted, ""


async def reset_offsets(
    admin: GroupAdmin,
    *,
    group_id: str,
    topics: Sequence[str],
    target: ResetTarget,
    execute: bool,
    as_json: bool = False,
    echo: Callable[[str], None] = click.echo,
) -> None:
    """Show the plan and, with `execute`, apply it.

    Raises UnknownGroupError, UnknownTopicError, ResetPlanError, and GroupNotEmptyError when
    `execute` meets a group with members (Kafka resets only empty groups).
    """
    (snapshot,) = (await admin.snapshots([group_id])).values()
    if not snapshot.exists:
        raise UnknownGroupError(f"no such consumer group on {admin.bootstrap_servers}: {group_id}")
    partitions = await _partitions(admin, topics)
    committed = {(p.topic, p.partition): p.committed for p in snapshot.partitions}
    at_time = None
    if target.kind == "datetime":
        at_time = await admin.offsets_at(partitions, timestamp_ms=target.value)
    plans = plan_reset(
        target,
        partitions=partitions,
        committed={tp: offset for tp, offset in committed.items() if offset is not None},
        earliest=await admin.start_offsets(partitions),
        latest=await admin.end_offsets(partitions),
        at_time=at_time,
    )
    members = snapshot.description.members
    if execute and members:
        raise GroupNotEmptyError(
            f"cannot reset the offsets of {group_id}: it has {len(members)} active member(s) "
            f"(state {snapshot.description.state}); Kafka resets only an empty group, "
            "so stop its consumers first"
        )
    if execute:
        await admin.reset_offsets(group_id, {(p.topic, p.partition): p.new for p in plans})
    if as_json:
        echo(json.dumps(reset_json(group_id, plans, executed=execute)))
        return
    echo(reset_table(group_id, plans))
    if execute:
        echo(f"\nreset {len(plans)} partition(s) of {group_id} {target.describe()}")
        return
    echo(f"\ndry run: nothing changed. Add --execute to reset {target.describe()}.")
    if members:
        echo(
            f"note: {group_id} has {len(members)} active member(s); --execute will be refused "
            "until they stop."
        )


def parse_topic(text: str) -> tuple[str, list[int] | None]:
    """`TOPIC` or `TOPIC:0,2`, as kafka-consumer-groups.sh takes them."""
    name, _, wanted = text.partition(":")
    if not name:
        raise ValueError(f"bad --topic {text!r}: expected TOPIC or TOPIC:PARTITION,...")
    if not wanted:
        return name, None
    try:
        return name, sorted({int(p) for p in wanted.split(",")})
    except ValueError:
        raise ValueError(
            f"bad --topic {text!r}: partitions must be numbers, e.g. {name}:0,2"
        ) from None


def reset_table(group_id: str, plans: Sequence[PlannedReset]) -> str:
    return format_table(
        RESET_COLUMNS,
        [
            (
                group_id,
                p.topic,
                str(p.partition),
                "-" if p.current is None else str(p.current),
                str(p.new),
                p.note,
            )
            for p in plans
        ],
    )


def reset_json(group_id: str, plans: Sequence[PlannedReset], *, executed: bool) -> dict[str, Any]:
    return {
        "group": group_id,
        "executed": executed,
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "old_offset": p.current,
                "new_offset": p.new,
                "note": p.note,
            }
            for p in plans
        ],
    }


async def _partitions(admin: GroupAdmin, topics: Sequence[str]) -> list[Partition]:
    partitions: list[Partition] = []
    for text in topics:
        name, wanted = parse_topic(text)
        existing = await admin.partitions_of(name)
        missing = sorted(set(wanted or []) - set(existing))
        if missing:
            raise UnknownTopicError(
                f"topic {name} on {admin.bootstrap_servers} has no partition "
                f"{', '.join(map(str, missing))} (it has {len(existing)})"
            )
        partitions.extend((name, p) for p in (wanted or existing))
    return list(dict.fromkeys(partitions))
