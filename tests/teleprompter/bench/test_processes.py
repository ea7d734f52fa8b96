"""CPU seconds and peak memory from /proc, for real processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from teleprompter.bench.processes import ProcessGoneError, ProcessSampler, cpu_seconds, peak_rss_mb


def test_this_process_has_cpu_time_and_memory() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn a little CPU to see the counter move
        pass
    assert cpu_seconds(os.getpid()) > before
    assert peak_rss_mb(os.getpid()) > 10


def test_a_process_that_does_not_exist_is_reported_as_gone() -> None:
    with pytest.raises(ProcessGoneError):
        cpu_seconds(2**22 + 12345)
    with pytest.raises(ProcessGoneError):
        peak_rss_mb(2**22 + 12345)


async def test_the_sampler_sees_a_busy_child_busy_and_an_idle_one_idle() -> None:
    busy = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    )
    idle = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(30)")
    try:
        sampler = ProcessSampler(pids={"busy": busy.pid, "idle": idle.pid}, interval_s=0.2)
        sampler.start()
        await asyncio.sleep(1.0)  # the measured window itself, not a synchronisation
        usage = {u.name: u for u in await sampler.stop()}
    finally:
        for child in (busy, idle):
            child.kill()
            await child.wait()
    assert usage["busy"].cpu_s > usage["idle"].cpu_s
    assert usage["busy"].cpu_share_peak > usage["idle"].cpu_share_peak
    assert usage["busy"].peak_rss_mb > 0
