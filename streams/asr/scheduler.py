"""Runs decode jobs of every stream on a few worker threads, finals before partials."""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from streams.asr.audio import Samples
from streams.asr.decoder import Transcription

logger = logging.getLogger(__name__)


class DecodePriority(enum.IntEnum):
    """Lower runs first. An endpoint someone waits for beats a partial nobody must have."""

    FINAL = 0
    PARTIAL = 1


class SchedulerClosedError(RuntimeError):
    """The scheduler was closed; no more decodes run."""


@dataclass(eq=False)
class DecodeJob:
    """One decode request. Its audio may be swapped for newer audio until a worker takes it."""

    audio: Samples
    priority: DecodePriority
    future: asyncio.Future[Transcription]
    started: bool = False
    cancelled: bool = False
    queued_at: float = field(default=0.0)

    @property
    def pending(self) -> bool:
        """Queued and not yet taken by a worker."""
        return not self.started and not self.cancelled

    def cancel(self) -> None:
        """Drop the job if no worker has taken it yet (a running decode cannot be stopped)."""
        if self.pending:
            self.cancelled = True
            self.future.cancel()


class DecodeScheduler:
    """A priority queue of decode jobs served by `workers` threads.

    Finals go before partials, and within a priority first come first served, so one stream's
    backlog never delays another stream's endpoint by more than the decodes already running.
    The queue holds at most `max_jobs`; callers keep at most a few jobs per stream
    outstanding, so that bound is never reached in normal operation.
    """

    def __init__(
        self,
        decode: Callable[[Samples], Transcription],
        *,
        workers: int = 2,
        max_jobs: int = 1024,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._decode = decode
        self._queue: asyncio.PriorityQueue[tuple[int, int, DecodeJob]] = asyncio.PriorityQueue(
            maxsize=max_jobs
        )
        self._order = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr-decode")
        self._tasks = [
            asyncio.create_task(self._serve(), name=f"asr-decode-{i}") for i in range(workers)
        ]
        self._closed = False
        self.busy = 0
        self.completed = 0

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def submit(self, audio: Samples, priority: DecodePriority) -> DecodeJob:
        """Queue a decode of `audio`; await `job.future` for its transcription."""
        if self._closed:
            raise SchedulerClosedError("decode scheduler is closed")
        loop = asyncio.get_running_loop()
        job = DecodeJob(
            audio=audio, priority=priority, future=loop.create_future(), queued_at=loop.time()
        )
        self._queue.put_nowait((int(priority), next(self._order), job))
        return job

    async def close(self) -> None:
        """Stop the workers; jobs not yet started are cancelled, running ones finish."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            _, _, job = self._queue.get_nowait()
            job.cancel()
        # The executor's threads finish the decodes already running, then exit.
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, _, job = await self._queue.get()
            if job.cancelled:
                continue
            job.started = True
            self.busy += 1
            try:
                result = await loop.run_in_executor(self._executor, self._decode, job.audio)
            except asyncio.CancelledError:
                job.future.cancel()  # closing: whoever awaits the job must not wait forever
                raise
            except Exception as exc:
                logger.exception("decode of %d samples failed", len(job.audio))
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self.busy -= 1
                self.completed += 1
