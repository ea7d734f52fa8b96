"""Whether this worker's LLM endpoint answers: judged by real requests, and a probe while not."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from schemas.events import LlmState

logger = logging.getLogger(__name__)

FAILURES_TO_DEGRADE: Final = 2
PROBE_INTERVAL_S: Final = 5.0

Probe = Callable[[], Awaitable[None]]
OnChange = Callable[[LlmState, str], Coroutine[Any, Any, None]]


class LlmHealth:
    """ "ok" until `failures_to_degrade` requests fail in a row, then "degraded" until one succeeds.

    One failure is a bad request or a blip; two in a row is an outage worth telling the reps
    about. While degraded, `probe` (a one-token completion) runs every `probe_interval_s`, so
    recovery is noticed even when no customer is speaking. `on_change` hears every transition.
    """

    def __init__(
        self,
        *,
        probe: Probe,
        on_change: OnChange,
        failures_to_degrade: int = FAILURES_TO_DEGRADE,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._probe = probe
        self._on_change = on_change
        self._failures_to_degrade = failures_to_degrade
        self._probe_interval_s = probe_interval_s
        self._failures = 0
        self.state: LlmState = "ok"
        self.reason = ""
        self._prober: asyncio.Task[None] | None = None
        self._notices: set[asyncio.Task[None]] = set()

    def succeeded(self) -> None:
        self._failures = 0
        if self.state == "degraded":
            self._change("ok", "")

    def failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures >= self._failures_to_degrade:
            if self.state == "ok":
                self._change("degraded", reason)
            else:
                self.reason = reason

    async def close(self) -> None:
        tasks = [*self._notices, *([self._prober] if self._prober is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _change(self, state: LlmState, reason: str) -> None:
        self.state, self.reason = state, reason
        if state == "degraded":
            logger.warning("LLM degraded: %s", reason)
            if self._prober is None or self._prober.done():
                self._prober = asyncio.get_running_loop().create_task(self._probe_until_ok())
        else:
            logger.info("LLM ok again")
        notice = asyncio.get_running_loop().create_task(self._on_change(state, reason))
        self._notices.add(notice)
        notice.add_done_callback(self._notices.discard)
        notice.add_done_callback(_log_failure)

    async def _probe_until_ok(self) -> None:
        while self.state == "degraded":
            await asyncio.sleep(self._probe_interval_s)
            try:
                await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed(str(exc))
            else:
                self.succeeded()


def _log_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (exc := task.exception()) is not None:
            logger.warning("telling the gateways about the LLM failed: %s", exc)
