"""`groups list|describe`: sample groups over a window of offsets, then print state and status.

Without `--watch` a command takes `samples` snapshots `interval_s` apart (3 over 2 s by
default) before it answers, so that Burrow's window rules have something to judge; with one
sample only the current lag is judged. With `--watch` it samples every `interval_s` and
redraws, judging the last `window` samples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import click

from core.kafka.groups import GroupAdmin, UnknownGroupError
from teleprompter.consumer_groups import render
from teleprompter.consumer_groups.sampling import DEFAULT_WINDOW, GroupReport, GroupWindow

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S: Final = 1.0
DEFAULT_SAMPLES: Final = 3


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """How often and how long groups are sampled, and how they are shown."""

    interval_s: float = DEFAULT_INTERVAL_S
    samples: int = DEFAULT_SAMPLES
    window: int = DEFAULT_WINDOW
    watch: bool = False
    as_json: bool = False


async def inspect_groups(
    admin: GroupAdmin,
    *,
    group_ids: Sequence[str],
    detailed: bool,
    options: SamplingOptions,
    echo: Callable[[str], None] = click.echo,
) -> None:
    """Sample the named groups (all groups when none are named) and print them.

    Raises UnknownGroupError when a named group does not exist.
    """
    size = options.window if options.watch else max(options.window, options.samples)
    windows: dict[str, GroupWindow] = {}
    taken = 0
    while True:
        ids = list(group_ids) or await admin.list_groups()
        snapshots = await admin.snapshots(ids)
        if taken == 0:
            unknown = [g for g in group_ids if not snapshots[g].exists]
            if unknown:
                raise UnknownGroupError(
                    f"no such consumer group on {admin.bootstrap_servers}: {', '.join(unknown)}"
                )
        for gone in set(windows) - set(snapshots):
            del windows[gone]
        for group_id, snapshot in snapshots.items():
            windows.setdefault(group_id, GroupWindow(group_id=group_id, size=size)).observe(
                snapshot
            )
        taken += 1
        reports = [windows[g].report() for g in sorted(windows)]
        if options.watch:
            _redraw(reports, detailed=detailed, options=options, echo=echo)
        elif taken >= options.samples:
            echo(_shown(reports, detailed=detailed, as_json=options.as_json))
            return
        await asyncio.sleep(options.interval_s)


def _shown(reports: list[GroupReport], *, detailed: bool, as_json: bool) -> str:
    if as_json:
        if detailed:
            return json.dumps({"groups": [render.describe_json(r) for r in reports]})
        return json.dumps(render.list_json(reports))
    if detailed:
        return "\n\n\n".join(render.describe_text(r) for r in reports) or "no consumer groups"
    return render.list_table(reports)


def _redraw(
    reports: list[GroupReport],
    *,
    detailed: bool,
    options: SamplingOptions,
    echo: Callable[[str], None],
) -> None:
    if options.as_json:
        # One JSON document per line and sample: a stream other tools can follow.
        echo(_shown(reports, detailed=detailed, as_json=True))
        return
    if sys.stdout.isatty():
        click.clear()
    else:
        echo("")
    stamp = time.strftime("%H:%M:%S")
    echo(
        f"{stamp}  every {options.interval_s:g} s, judging the last {options.window} samples "
        "(Ctrl-C stops)\n"
    )
    echo(_shown(reports, detailed=detailed, as_json=False))
