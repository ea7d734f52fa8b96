"""Runs decode jobs of every stream on a few threads: finals, then revisions, then partials."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core.token_bucket import TokenBucket
from streams.asr.audio import SAMPLE_RATE, Samples
from streams.asr.decoder import Transcription

logger = logging.getLogger(__name__)


class DecodePriority(enum.IntEnum):
    """An endpoint someone waits for goes first; a revision of a final already sent next; a
    partial nobody must have last."""

    FINAL = 0
    REVISION = 1
    PARTIAL = 2


Decode = Callable[..., Transcription]
"""`decode(audio, prompt, *, beam_size)`: `UtteranceDecoder.decode`, blocking."""
DecodeBatch = Callable[..., list[Transcription]]
"""`decode_batch(audios, prompts, *, beam_size)`: `UtteranceDecoder.decode_batch`, blocking."""


@dataclass
class DecodeTally:
    """What the decodes of one kind cost so far: jobs, calls (a batch is one), audio, time."""

    jobs: int = 0
    calls: int = 0
    audio_s: float = 0.0
    busy_s: float = 0.0
    """Wall time of the calls: with one single-threaded decode per core, about CPU time."""


class SchedulerClosedError(RuntimeError):
    """The scheduler was closed; no more decodes run."""


class SchedulerFullError(RuntimeError):
    """More decode jobs queued than the scheduler was sized for."""


@dataclass(eq=False)
class DecodeJob:
    """One decode request. Its audio may be swapped for newer audio until a worker takes it."""

    audio: Samples
    priority: DecodePriority
    future: asyncio.Future[Transcription]
    prompt: str = ""
    beam_size: int = 1
    speculative: bool = False
    """A final nobody waits for yet: it runs only when no other final waits."""
    started: bool = False
    cancelled: bool = False

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
    """Decode jobs served first come, first served by `workers` threads, finals first.

    Speculative finals come after the other finals: a speculation started and then dropped
    when speech resumes is a decode lost, so under load it waits until nothing firmer does,
    or until its endpoint confirms it; while threads are free it starts at once.

    Revisions and partials together may occupy at most `partial_workers` threads (by default
    all but one), so a final never waits behind them, only behind other finals: one stream's
    backlog of partials or revisions cannot delay another stream's endpoint. The queue holds
    at most `max_jobs`; callers keep a few jobs per stream outstanding, so that bound is never
    reached in normal operation.

    With `decode_batch`, a thread that finds more jobs of the same kind waiting takes up to
    `max_batch` of them in one call: when streams queue up, each decode costs less CPU. A
    lone job is decoded alone, so batching adds nothing to latency while there is no queue.

    With `partial_share`, partials together use at most that many seconds of decoding per
    second (saved up to `partial_burst_s`): one stream's partials every 700 ms take about a
    quarter of a core, so with many streams they would take every core left over, and the CPU
    the rest of the worker needs. Over budget, a partial waits in the queue, where its stream
    keeps giving it newer audio: partials get rarer under load, never stale. Finals and
    revisions are never limited, so the transcript does not depend on the budget.
    """

    def __init__(
        self,
        decode: Decode,
        *,
        workers: int = 2,
        partial_workers: int | None = None,
        max_jobs: int = 1024,
        decode_batch: DecodeBatch | None = None,
        max_batch: int = 4,
        partial_share: float | None = None,
        partial_burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._decode = decode
        self._decode_batch = decode_batch
        self._max_batch = max_batch if decode_batch is not None else 1
        self._partial_workers = partial_workers or max(1, workers - 1)
        self._max_jobs = max_jobs
        self._finals: deque[DecodeJob] = deque()
        self._revisions: deque[DecodeJob] = deque()
        self._partials: deque[DecodeJob] = deque()
        self._changed = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr-decode")
        self._tasks = [
            asyncio.create_task(self._serve(), name=f"asr-decode-{i}") for i in range(workers)
        ]
        self._closed = False
        self._partials_running = 0
        self._clock = clock
        self._partial_budget = (
            None
            if partial_share is None
            # Tokens are seconds of decoding; a decode is paid for once it ran (a debt).
            else TokenBucket(rate_per_s=partial_share, burst=partial_burst_s, clock=clock)
        )
        self._budget_timer: asyncio.TimerHandle | None = None
        self.decoded = {priority: DecodeTally() for priority in DecodePriority}
        self.busy = 0
        self.completed = 0
        self.batched = 0  # jobs decoded in a batch of more than one

    @property
    def queued(self) -> int:
        return len(self._finals) + len(self._revisions) + len(self._partials)

    def submit(
        self,
        audio: Samples,
        priority: DecodePriority,
        *,
        prompt: str = "",
        beam_size: int = 1,
        speculative: bool = False,
    ) -> DecodeJob:
        """Queue a decode of `audio`; await `job.future` for its transcription.

        A `speculative` final (decoded in case a pause is the endpoint) runs only when no
        other final waits; `confirm` it when someone waits for it, and it keeps its place.
        """
        if self._closed:
            raise SchedulerClosedError("decode scheduler is closed")
        if self.queued >= self._max_jobs:
            self._forget_cancelled()
            if self.queued >= self._max_jobs:
                raise SchedulerFullError(f"{self.queued} decode jobs already queued")
        job = DecodeJob(
            audio=audio,
            priority=priority,
            future=asyncio.get_running_loop().create_future(),
            prompt=prompt,
            beam_size=beam_size,
            speculative=speculative and priority is DecodePriority.FINAL,
        )
        self._queue(priority).append(job)
        self._changed.set()
        return job

    def confirm(self, job: DecodeJob) -> None:
        """Someone waits for this speculative final now: it runs as any final, in its place."""
        if job.speculative:
            job.speculative = False
            self._changed.set()

    async def close(self) -> None:
        """Stop the workers; jobs not yet started are cancelled, running ones finish."""
        self._closed = True
        if self._budget_timer is not None:
            self._budget_timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for queue in (self._finals, self._revisions, self._partials):
            for job in queue:
                job.cancel()
            queue.clear()
        # The executor's threads finish the decodes already running, then exit.
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _queue(self, priority: DecodePriority) -> deque[DecodeJob]:
        if priority is DecodePriority.FINAL:
            return self._finals
        return self._revisions if priority is DecodePriority.REVISION else self._partials

    def _forget_cancelled(self) -> None:
        for queue in (self._finals, self._revisions, self._partials):
            live = [job for job in queue if not job.cancelled]
            queue.clear()
            queue.extend(live)

    async def _next_job(self) -> DecodeJob:
        while True:
            for queue in (self._finals, self._revisions, self._partials):
                while queue and queue[0].cancelled:
                    queue.popleft()
            final = self._first(self._finals, speculative=False) or self._first(
                self._finals, speculative=True
            )
            if final is not None:
                self._finals.remove(final)
                return final
            if self._partials_running < self._partial_workers:
                if self._revisions:
                    return self._revisions.popleft()
                if self._partials and self._partial_allowed():
                    return self._partials.popleft()
            self._changed.clear()
            await self._changed.wait()

    @staticmethod
    def _first(queue: deque[DecodeJob], *, speculative: bool) -> DecodeJob | None:
        return next((j for j in queue if not j.cancelled and j.speculative == speculative), None)

    def _partial_allowed(self) -> bool:
        """Whether the partial budget has time left; if not, wake the workers when it will."""
        budget = self._partial_budget
        if budget is None or budget.tokens > 0:
            return True
        if self._budget_timer is None:
            self._budget_timer = asyncio.get_running_loop().call_later(
                budget.seconds_until(0.0) + 0.001, self._budget_refilled
            )
        return False

    def _budget_refilled(self) -> None:
        self._budget_timer = None
        self._changed.set()

    def _companions(self, first: DecodeJob) -> list[DecodeJob]:
        """Up to `max_batch - 1` more waiting jobs that can share `first`'s decode call."""
        queue = self._queue(first.priority)
        taken: list[DecodeJob] = []
        for job in list(queue):
            if len(taken) + 1 >= self._max_batch:
                break
            if (
                not job.cancelled
                and job.beam_size == first.beam_size
                and job.speculative == first.speculative
            ):
                queue.remove(job)
                taken.append(job)
        return taken

    def _call(self, jobs: list[DecodeJob]) -> Callable[[], list[Transcription]]:
        """The blocking call that decodes `jobs`, one alone or all in one batch."""
        first = jobs[0]
        if len(jobs) == 1:
            decode = self._decode
            return lambda: [decode(first.audio, first.prompt, beam_size=first.beam_size)]
        assert self._decode_batch is not None  # _companions finds none without it
        self.batched += len(jobs)
        return functools.partial(
            self._decode_batch,
            [job.audio for job in jobs],
            [job.prompt for job in jobs],
            beam_size=first.beam_size,
        )

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next_job()
            jobs = [first, *self._companions(first)]
            for job in jobs:
                job.started = True
            partial = first.priority is not DecodePriority.FINAL
            self._partials_running += int(partial)
            self.busy += 1
            started = self._clock()
            try:
                results = await loop.run_in_executor(self._executor, self._call(jobs))
            except asyncio.CancelledError:
                for job in jobs:
                    job.future.cancel()  # closing: whoever awaits the job must not wait forever
                raise
            except Exception as exc:
                logger.exception("decode of %d job(s) failed", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, result in zip(jobs, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
            finally:
                self._tally(jobs, self._clock() - started)
                self._partials_running -= int(partial)
                self.busy -= 1
                self.completed += len(jobs)
                self._changed.set()  # a partial slot may have opened

    def _tally(self, jobs: list[DecodeJob], elapsed_s: float) -> None:
        priority = jobs[0].priority
        tally = self.decoded[priority]
        tally.jobs += len(jobs)
        tally.calls += 1
        tally.audio_s += sum(len(job.audio) for job in jobs) / SAMPLE_RATE
        tally.busy_s += elapsed_s
        if priority is DecodePriority.PARTIAL and self._partial_budget is not None:
            self._partial_budget.take(elapsed_s)
