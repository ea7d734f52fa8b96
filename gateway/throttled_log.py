"""A warning that repeats at most once per interval, counting what it held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

DEFAULT_INTERVAL_S: Final[float] = 5.0


class ThrottledWarning:
    """Logs one kind of trouble at most once per `interval_s`.

    An outage repeats the same failure for every message in flight; one line per interval, with
    the count of the ones not logged, says as much without flooding the log.
    """

    def __init__(
        self,
        what: str,
        *,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last = float("-inf")
        self._held_back = 0

    def note(self, error: BaseException | str | None = None) -> None:
        now = self._clock()
        if now - self._last < self._interval_s:
            self._held_back += 1
            return
        self._last = now
        detail = "" if error is None else f": {error}"
        more = f" (and {self._held_back} more since the last report)" if self._held_back else ""
        self._held_back = 0
        self._logger.warning("%s%s%s", self._what, detail, more)
