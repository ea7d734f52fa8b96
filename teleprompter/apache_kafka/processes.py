"""Children that cannot outlive this process: Kafka's JVMs and Maven die with us, however we die."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG: Final = 1


def _resolve_prctl() -> Callable[[int, int], int] | None:
    # Resolved here, in the parent: the child runs between fork and exec, where loading a
    # library could wait forever on a lock another thread (librdkafka's) held at the fork.
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children are stopped by us only
        return None
    return prctl


_PRCTL: Final = _resolve_prctl()


def die_with_parent_kill() -> None:
    """A `preexec_fn`: the kernel SIGKILLs the child when the thread that started it dies.

    SIGKILL rather than SIGTERM: a Kafka node told to shut down cleanly waits for its
    controllers, which are dying too, and would outlive us by minutes. Kafka recovers an
    unclean shutdown from its logs on the next start.
    """
    if _PRCTL is not None:
        with contextlib.suppress(OSError):
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
