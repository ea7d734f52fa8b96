"""CPU seconds and peak memory of the system's processes (and the bench's own), from /proc.

A process's CPU time is `utime + stime` in /proc/<pid>/stat (all its threads); its peak
resident memory is `VmHWM` in /proc/<pid>/status. Sampling once per interval also finds each
process's busiest interval: a Python process pinned near 1.0 core is the one saturating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from teleprompter.bench.report import ProcessUsage

logger = logging.getLogger(__name__)

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/<pid>/stat fields after the command name: utime and stime are the 12th and 13th.
_UTIME_INDEX: Final = 11
_STIME_INDEX: Final = 12


class ProcessGoneError(OSError):
    """The process has exited (or never existed): its /proc entry cannot be read."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far, all threads."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise ProcessGoneError(f"cannot read /proc/{pid}/stat: {exc}") from exc
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[_UTIME_INDEX]) + int(fields[_STIME_INDEX])) / _CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The most resident memory `pid` has had (VmHWM), in MiB; 0 where the kernel omits it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise ProcessGoneError(f"cannot read /proc/{pid}/status: {exc}") from exc
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(kw_only=True)
class _Track:
    pid: int
    start_cpu: float
    last_cpu: float
    last_at: float
    peak_share: float = 0.0
    peak_rss: float = 0.0


@dataclass(kw_only=True)
class ProcessSampler:
    """Samples named processes every `interval_s` between `start()` and `stop()`."""

    pids: Mapping[str, int]
    interval_s: float = 1.0
    _tracks: dict[str, _Track] = field(default_factory=dict)
    _started_at: float = 0.0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        now = time.monotonic()
        self._started_at = now
        for name, pid in self.pids.items():
            try:
                cpu = cpu_seconds(pid)
            except ProcessGoneError as exc:
                logger.warning("not measuring %s: %s", name, exc)
                continue
            self._tracks[name] = _Track(pid=pid, start_cpu=cpu, last_cpu=cpu, last_at=now)
        self._task = asyncio.create_task(self._sample_periodically(), name="process-sampler")

    async def stop(self) -> list[ProcessUsage]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample(final=True)
        wall = max(time.monotonic() - self._started_at, 1e-9)
        return [
            ProcessUsage(
                name=name,
                pid=track.pid,
                cpu_s=round(track.last_cpu - track.start_cpu, 2),
                cpu_share_mean=round((track.last_cpu - track.start_cpu) / wall, 3),
                cpu_share_peak=round(track.peak_share, 3),
                peak_rss_mb=round(track.peak_rss, 1),
            )
            for name, track in self._tracks.items()
        ]

    async def _sample_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._sample()

    def _sample(self, *, final: bool = False) -> None:
        now = time.monotonic()
        for track in self._tracks.values():
            try:
                cpu = cpu_seconds(track.pid)
                track.peak_rss = max(track.peak_rss, peak_rss_mb(track.pid))
            except ProcessGoneError:
                continue  # it exited; keep what was measured until then
            elapsed = now - track.last_at
            # Ticks are 10 ms: a share over a very short last interval is noise, not a peak.
            if elapsed > 0 and (elapsed >= self.interval_s / 2 or not final):
                track.peak_share = max(track.peak_share, (cpu - track.last_cpu) / elapsed)
            track.last_cpu, track.last_at = cpu, now
