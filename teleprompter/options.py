"""What every command shares: settings from flags and environment, common options, exit codes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import click

from core.data_dir import DataDirError, prepare_data_dir
from core.settings import Settings, SettingsError, load_settings
from core.tokens import SecretError

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


def fail(ctx: click.Context, message: str, *, code: int = EXIT_BAD_SETTINGS) -> NoReturn:
    """End the command with one line naming what is wrong."""
    click.echo(f"teleprompter: {message}", err=True)
    ctx.exit(code)


@contextlib.contextmanager
def one_line_errors(ctx: click.Context) -> Iterator[None]:
    """What a user can fix (a taken port, an unwritable folder, a bad secret) ends in one line.

    A port in use or a folder that cannot be written is the user's to fix, not a bug: it gets
    the one line the operating system gave, not a traceback.
    """
    try:
        yield
    except (SettingsError, SecretError, DataDirError) as exc:
        fail(ctx, str(exc))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        fail(ctx, f"{exc.strerror or exc}{where}")


def private_data_dir(ctx: click.Context, settings: Settings) -> Path:
    """The settings' data dir, created private and checked writable, or a one-line exit."""
    try:
        return prepare_data_dir(settings.data_dir)
    except DataDirError as exc:
        fail(ctx, str(exc))
