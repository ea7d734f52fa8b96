"""What every command shares: settings from flags and environment, common options, exit codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from core.settings import Settings, SettingsError, load_settings

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
# Bad settings, arguments or names (an unknown group, topic or conversation): the user's to fix.
EXIT_BAD_SETTINGS: Final = 2
EXIT_USAGE: Final = 2


def settings_from_flags(ctx: click.Context, **flags: Any) -> Settings:
    """Settings from the environment with this command's flags on top; bad values exit 2."""
    try:
        settings = load_settings(**flags)
    except SettingsError as exc:
        click.echo(f"teleprompter: {exc}", err=True)
        ctx.exit(EXIT_BAD_SETTINGS)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where state lives (default: .teleprompter, or TELEPROMPTER_DATA_DIR).",
    )(func)
