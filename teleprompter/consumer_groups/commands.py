"""`teleprompter groups list|describe|reset-offsets`: consumer groups for operators.

Exit codes: 0 done; 2 an unknown group or topic, or a bad argument (`EXIT_USAGE`); 1 Kafka
could not be asked, or refused (a reset while the group has members).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click

from teleprompter.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, settings_from_flags

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@click.group("groups")
def groups() -> None:
    """Consumer groups: state, members, lag with a Burrow status, and offset resets."""


def _sampling_options(func: F) -> F:
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables."),
        click.option(
            "--watch", is_flag=True, help="Sample every --interval seconds and redraw until Ctrl-C."
        ),
        click.option(
            "--interval",
            type=click.FloatRange(min=0.1),
            default=1.0,
            show_default=True,
            help="Seconds between samples.",
        ),
        click.option(
            "--samples",
            type=click.IntRange(min=1),
            default=3,
            show_default=True,
            help="Samples taken before answering (without --watch); 1 judges the current lag only.",
        ),
        click.option(
            "--window",
            type=click.IntRange(min=2),
            default=10,
            show_default=True,
            help="Samples the status is judged over under --watch (Burrow's intervals).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@groups.command("list")
@_sampling_options
@click.pass_context
def list_groups(
    ctx: click.Context, as_json: bool, watch: bool, interval: float, samples: int, window: int
) -> None:
    """Every consumer group: state, members, partitions, total lag and status."""
    _inspect(
        ctx,
        (),
        detailed=False,
        as_json=as_json,
        watch=watch,
        interval=interval,
        samples=samples,
        window=window,
    )


@groups.command("describe")
@click.argument("group_ids", metavar="[GROUP]...", nargs=-1)
@_sampling_options
@click.pass_context
def describe_groups(
    ctx: click.Context,
    group_ids: tuple[str, ...],
    as_json: bool,
    watch: bool,
    interval: float,
    samples: int,
    window: int,
) -> None:
    """Members, assignment and per-partition offsets, lag and status (default: every group)."""
    _inspect(
        ctx,
        group_ids,
        detailed=True,
        as_json=as_json,
        watch=watch,
        interval=interval,
        samples=samples,
        window=window,
    )


@groups.command("reset-offsets")
@click.argument("group_id", metavar="GROUP")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    required=True,
    help="TOPIC, or TOPIC:0,2 for some partitions; repeatable.",
)
@click.option("--to-earliest", is_flag=True, help="The earliest offset still held.")
@click.option("--to-latest", is_flag=True, help="The log end (skip everything unread).")
@click.option("--to-datetime", metavar="ISO", help="The first offset at or after this time.")
@click.option("--shift-by", type=int, metavar="N", help="The committed offset plus N (may be < 0).")
@click.option("--to-offset", type=int, metavar="N", help="This offset.")
@click.option("--execute", is_flag=True, help="Apply the reset (default: show it only).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def reset_offsets(
    ctx: click.Context,
    group_id: str,
    topics: tuple[str, ...],
    to_earliest: bool,
    to_latest: bool,
    to_datetime: str | None,
    shift_by: int | None,
    to_offset: int | None,
    execute: bool,
    as_json: bool,
) -> None:
    """Move a group's committed offsets: a dry run unless --execute; refused with members."""
    from teleprompter.consumer_groups.reset import (  # noqa: PLC0415  # loads Kafka
        ResetTarget,
        parse_datetime,
        reset_offsets,
    )

    given = {
        "--to-earliest": to_earliest or None,
        "--to-latest": to_latest or None,
        "--to-datetime": to_datetime,
        "--shift-by": shift_by,
        "--to-offset": to_offset,
    }
    chosen = [flag for flag, value in given.items() if value is not None]
    if len(chosen) != 1:
        _fail(ctx, f"give exactly one of {', '.join(given)} (got {len(chosen)})", EXIT_USAGE)
    settings = settings_from_flags(ctx)
    try:
        if to_datetime is not None:
            target = ResetTarget(kind="datetime", value=parse_datetime(to_datetime))
        elif shift_by is not None:
            target = ResetTarget(kind="shift", value=shift_by)
        elif to_offset is not None:
            target = ResetTarget(kind="offset", value=to_offset)
        else:
            target = ResetTarget(kind="earliest" if to_earliest else "latest")
    except ValueError as exc:
        _fail(ctx, str(exc), EXIT_USAGE)

    async def run() -> None:
        from core.kafka.groups import GroupAdmin  # noqa: PLC0415  # loads Kafka

        await reset_offsets(
            GroupAdmin(bootstrap_servers=settings.bootstrap_servers),
            group_id=group_id,
            topics=topics,
            target=target,
            execute=execute,
            as_json=as_json,
        )

    ctx.exit(_outcome(ctx, run))


def _inspect(
    ctx: click.Context,
    group_ids: tuple[str, ...],
    *,
    detailed: bool,
    as_json: bool,
    watch: bool,
    interval: float,
    samples: int,
    window: int,
) -> None:
    from core.kafka.groups import GroupAdmin  # noqa: PLC0415  # loads Kafka
    from teleprompter.consumer_groups.inspection import (  # noqa: PLC0415  # loads Kafka
        SamplingOptions,
        inspect_groups,
    )

    settings = settings_from_flags(ctx)
    options = SamplingOptions(
        interval_s=interval, samples=samples, window=window, watch=watch, as_json=as_json
    )

    async def run() -> None:
        await inspect_groups(
            GroupAdmin(bootstrap_servers=settings.bootstrap_servers),
            group_ids=group_ids,
            detailed=detailed,
            options=options,
        )

    ctx.exit(_outcome(ctx, run))


def _outcome(ctx: click.Context, run: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run to completion; errors become one line on stderr and an exit code."""
    from core.kafka.admin import KafkaAdminError  # noqa: PLC0415  # loads Kafka
    from core.kafka.groups import UnknownGroupError, UnknownTopicError  # noqa: PLC0415
    from teleprompter.consumer_groups.reset import ResetPlanError  # noqa: PLC0415

    try:
        asyncio.run(run())
    except KeyboardInterrupt:  # Ctrl-C ends --watch: that is how it is meant to stop
        return EXIT_OK
    except (UnknownGroupError, UnknownTopicError, ResetPlanError, ValueError) as exc:
        _fail(ctx, str(exc), EXIT_USAGE)
    except KafkaAdminError as exc:
        _fail(ctx, str(exc), EXIT_FAILED)
    return EXIT_OK


def _fail(ctx: click.Context, message: str, code: int) -> NoReturn:
    click.echo(f"teleprompter: {message}", err=True)
    ctx.exit(code)
