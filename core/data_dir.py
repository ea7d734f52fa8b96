"""The data directory: created private (0700), checked writable, and files in it private (0600).

It holds call audio, transcripts, offsets and the token signing secret, so nothing in it is for
other users. Every process that writes under it calls `prepare_data_dir` first; the command line
also sets a 077 umask (`private_file_mode`) so that files the libraries create (broker segments,
Faust's state) are 0600 without each of them being told.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

DIR_MODE: Final = 0o700
PRIVATE_UMASK: Final = 0o077


class DataDirError(OSError):
    """The data directory cannot be created or written; the message names it and why."""


def prepare_data_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700, check it is writable; returns it resolved.

    A directory that already exists keeps its owner's choice of mode unless it is one this
    project made (it holds a `secret` or a `broker` folder): those are tightened to 0700.
    """
    path = path.expanduser()
    try:
        existed = path.is_dir()
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        resolved = path.resolve()
        if not existed or _holds_our_state(resolved):
            _tighten(resolved)
        _check_writable(resolved)
    except DataDirError:
        raise
    except OSError as exc:
        raise DataDirError(f"cannot use data dir {path}: {exc.strerror or exc}") from None
    return resolved


def private_file_mode() -> None:
    """Files and folders this process creates from now on are for its user only (umask 077)."""
    os.umask(PRIVATE_UMASK)


def _holds_our_state(path: Path) -> bool:
    return (path / "secret").exists() or (path / "broker").is_dir()


def _tighten(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(DIR_MODE)
        logger.info("data dir %s was mode %o; made it %o", path, mode, DIR_MODE)


def _check_writable(path: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise DataDirError(f"data dir {path} is not writable: {exc.strerror or exc}") from None
