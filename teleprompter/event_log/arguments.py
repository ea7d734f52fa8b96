"""What the analysts' commands share on the command line: TIME arguments, quiet settings, exit 2."""

from __future__ import annotations

import logging
import os
from typing import NoReturn

import click

from core.settings import Settings
from teleprompter.event_log.times import TimeFormatError, format_time, parse_time
from teleprompter.options import EXIT_USAGE, settings_from_flags

logger = logging.getLogger(__name__)


def quiet_settings(ctx: click.Context) -> Settings:
    """Settings for a tool whose output is the point: logs at WARNING unless
    TELEPROMPTER_LOG_LEVEL asks for more."""
    level = None if os.environ.get("TELEPROMPTER_LOG_LEVEL", "").strip() else "WARNING"
    return settings_from_flags(ctx, log_level=level)


def fail_usage(ctx: click.Context, message: str) -> NoReturn:
    """One line on stderr, exit 2: the user's to fix."""
    click.echo(f"teleprompter: {message}", err=True)
    ctx.exit(EXIT_USAGE)


def parse_times(
    ctx: click.Context, from_text: str | None, to_text: str | None
) -> tuple[int | None, int | None]:
    """`--from` and `--to` as epoch ms; a bad or backwards time exits 2 naming it."""
    parsed: list[int | None] = []
    for flag, text in (("--from", from_text), ("--to", to_text)):
        try:
            parsed.append(None if text is None else parse_time(text))
        except TimeFormatError as exc:
            fail_usage(ctx, f"bad {flag} time: {exc}")
    from_ms, to_ms = parsed
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        fail_usage(
            ctx,
            f"--from {format_time(from_ms)} is not before --to {format_time(to_ms)}",
        )
    return from_ms, to_ms
