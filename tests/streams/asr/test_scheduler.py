"""Decode jobs: finals before revisions before partials, cancellation, closing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from streams.asr.audio import Samples
from streams.asr.decoder import Transcription
from streams.asr.scheduler import DecodePriority, DecodeScheduler, SchedulerClosedError
from tests.manual_clock import ManualClock


class RecordingDecode:
    """A decode function that records what it was asked and can be held at a gate."""

    def __init__(self) -> None:
        self.order: list[float] = []
        self.started: list[float] = []
        self.settings: dict[float, tuple[str, int]] = {}
        self._progress = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def wait_started(self, marker: float) -> None:
        with self._progress:
            assert self._progress.wait_for(lambda: marker in self.started, timeout=10)

    def __call__(self, audio: Samples, prompt: str = "", *, beam_size: int = 1) -> Transcription:
        with self._progress:
            self.started.append(float(audio[0]))
            self._progress.notify_all()
        self.entered.set()
        self.gate.wait(timeout=10)
        self.order.append(float(audio[0]))
        self.settings[float(audio[0])] = (prompt, beam_size)
        return Transcription(
            text=f"audio {audio[0]:.0f}",
            no_speech_prob=0.0,
            avg_logprob=0.0,
            audio_s=len(audio) / 16000,
            decode_ms=0.0,
            is_speech=True,
        )


def audio(marker: float) -> Samples:
    return np.full(160, marker, dtype=np.float32)


async def hold_the_worker(
    decode: RecordingDecode, scheduler: DecodeScheduler
) -> asyncio.Future[Transcription]:
    decode.gate.clear()
    decode.entered.clear()
    blocker = scheduler.submit(audio(0), DecodePriority.PARTIAL)
    await asyncio.wait_for(asyncio.to_thread(decode.entered.wait, 10), 10)
    return blocker.future


async def test_finals_run_before_partials_queued_earlier() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=1)
    try:
        blocker = await hold_the_worker(decode, scheduler)
        partials = [scheduler.submit(audio(m), DecodePriority.PARTIAL) for m in (1, 2)]
        finals = [scheduler.submit(audio(m), DecodePriority.FINAL) for m in (3, 4)]
        decode.gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, *(j.future for j in partials + finals)), 10)
        assert decode.order == [0, 3, 4, 1, 2]
        assert (await finals[0].future).text == "audio 3"
    finally:
        await scheduler.close()


async def test_revisions_run_after_finals_and_before_partials_with_their_settings() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=1)
    try:
        blocker = await hold_the_worker(decode, scheduler)
        partial = scheduler.submit(audio(1), DecodePriority.PARTIAL)
        revision = scheduler.submit(
            audio(2), DecodePriority.REVISION, prompt="said before", beam_size=5
        )
        final = scheduler.submit(audio(3), DecodePriority.FINAL)
        decode.gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, partial.future, revision.future), 10)
        await final.future
        assert decode.order == [0, 3, 2, 1]
        assert decode.settings[2.0] == ("said before", 5)
    finally:
        await scheduler.close()


async def test_a_worker_is_kept_free_of_partials_for_finals() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=2)
    try:
        blocker = await hold_the_worker(decode, scheduler)
        waiting_partial = scheduler.submit(audio(1), DecodePriority.PARTIAL)
        final = scheduler.submit(audio(2), DecodePriority.FINAL)
        await asyncio.to_thread(decode.wait_started, 2.0)
        assert decode.started == [0, 2]  # the final runs beside the partial, the next one waits
        assert waiting_partial.pending
        decode.gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, final.future, waiting_partial.future), 10)
        assert decode.started == [0, 2, 1]
    finally:
        await scheduler.close()


async def test_pending_job_can_be_cancelled_or_given_newer_audio() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=1)
    try:
        blocker = await hold_the_worker(decode, scheduler)
        dropped = scheduler.submit(audio(1), DecodePriority.PARTIAL)
        refreshed = scheduler.submit(audio(2), DecodePriority.PARTIAL)
        dropped.cancel()
        assert dropped.cancelled and dropped.future.cancelled()
        refreshed.audio = audio(5)
        decode.gate.set()
        assert (await asyncio.wait_for(refreshed.future, 10)).text == "audio 5"
        await blocker
        assert decode.order == [0, 5]
    finally:
        await scheduler.close()


async def test_running_job_cannot_be_cancelled() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=1)
    try:
        decode.gate.clear()
        decode.entered.clear()
        job = scheduler.submit(audio(7), DecodePriority.FINAL)
        await asyncio.wait_for(asyncio.to_thread(decode.entered.wait, 10), 10)
        job.cancel()
        assert not job.cancelled
        decode.gate.set()
        assert (await asyncio.wait_for(job.future, 10)).text == "audio 7"
    finally:
        await scheduler.close()


async def test_a_failing_decode_fails_only_its_job() -> None:
    def explode(samples: Samples, prompt: str = "", *, beam_size: int = 1) -> Transcription:
        raise RuntimeError("model fell over")

    scheduler = DecodeScheduler(explode, workers=1)
    try:
        job = scheduler.submit(audio(1), DecodePriority.FINAL)
        with pytest.raises(RuntimeError, match="model fell over"):
            await asyncio.wait_for(job.future, 10)
        again = scheduler.submit(audio(2), DecodePriority.FINAL)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(again.future, 10)
    finally:
        await scheduler.close()


async def test_close_cancels_what_has_not_started() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=1)
    blocker = await hold_the_worker(decode, scheduler)
    waiting = scheduler.submit(audio(1), DecodePriority.FINAL)
    await scheduler.close()
    decode.gate.set()
    assert waiting.future.cancelled()
    assert blocker.cancelled()
    with pytest.raises(SchedulerClosedError):
        scheduler.submit(audio(2), DecodePriority.FINAL)


async def test_waiting_jobs_of_one_kind_share_a_batch_and_a_lone_job_goes_alone() -> None:
    decode = RecordingDecode()
    batches: list[list[float]] = []

    def decode_batch(
        audios: list[Samples], prompts: list[str], *, beam_size: int = 1
    ) -> list[Transcription]:
        batches.append([float(a[0]) for a in audios])
        return [decode(a, p, beam_size=beam_size) for a, p in zip(audios, prompts, strict=True)]

    scheduler = DecodeScheduler(decode, workers=1, decode_batch=decode_batch, max_batch=2)
    try:
        blocker = await hold_the_worker(decode, scheduler)
        finals = [scheduler.submit(audio(m), DecodePriority.FINAL) for m in (1, 2, 3)]
        partial = scheduler.submit(audio(4), DecodePriority.PARTIAL)
        decode.gate.set()
        await asyncio.wait_for(
            asyncio.gather(blocker, partial.future, *(f.future for f in finals)), 10
        )
        assert batches == [[1, 2]]  # then 3 alone, then the partial alone: never mixed kinds
        assert decode.order == [0, 1, 2, 3, 4]
        assert [(await f.future).text for f in finals] == ["audio 1", "audio 2", "audio 3"]
        assert scheduler.batched == 2
    finally:
        await scheduler.close()


class TimedDecode(RecordingDecode):
    """A recording decode during which `clock` moves on by `takes_s[marker]` (or `default_s`)."""

    def __init__(
        self, clock: ManualClock, *, takes_s: dict[float, float] | None = None, default_s: float
    ) -> None:
        super().__init__()
        self._clock = clock
        self._takes_s = takes_s or {}
        self._default_s = default_s

    def __call__(self, audio: Samples, prompt: str = "", *, beam_size: int = 1) -> Transcription:
        self._clock.now += self._takes_s.get(float(audio[0]), self._default_s)
        return super().__call__(audio, prompt, beam_size=beam_size)


async def test_partials_over_their_budget_wait_while_finals_run_until_time_refills_it() -> None:
    clock = ManualClock()
    decode = TimedDecode(clock, takes_s={1.0: 1.0}, default_s=0.0)  # the first: a whole second
    scheduler = DecodeScheduler(
        decode, workers=1, partial_share=0.5, partial_burst_s=0.1, clock=clock
    )
    try:
        first = scheduler.submit(audio(1), DecodePriority.PARTIAL)
        await asyncio.wait_for(first.future, 10)  # within the burst: runs at once
        second = scheduler.submit(audio(2), DecodePriority.PARTIAL)
        final = scheduler.submit(audio(3), DecodePriority.FINAL)
        await asyncio.wait_for(final.future, 10)
        assert second.pending, "0.9 s over a 0.5 s/s budget: the partial waits"
        second.audio = audio(4)  # its stream gives it newer audio meanwhile

        clock.now += 2.0  # refilled (to the 0.1 s burst)
        revision = scheduler.submit(audio(5), DecodePriority.REVISION)
        await asyncio.wait_for(asyncio.gather(second.future, revision.future), 10)
        assert decode.order == [1, 3, 5, 4]
    finally:
        await scheduler.close()


async def test_finals_and_revisions_are_never_held_by_the_partial_budget() -> None:
    clock = ManualClock()
    decode = TimedDecode(clock, default_s=10.0)  # every decode far beyond the partial budget
    scheduler = DecodeScheduler(decode, workers=1, partial_share=0.1, clock=clock)
    try:
        partial = scheduler.submit(audio(1), DecodePriority.PARTIAL)
        await asyncio.wait_for(partial.future, 10)
        jobs = [
            scheduler.submit(audio(m), priority)
            for m, priority in ((2, DecodePriority.FINAL), (3, DecodePriority.REVISION))
        ]
        await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), 10)
        assert decode.order == [1, 2, 3]
    finally:
        await scheduler.close()


async def test_decodes_are_tallied_by_kind_with_their_audio_and_time() -> None:
    clock = ManualClock()
    decode = TimedDecode(clock, default_s=0.25)
    scheduler = DecodeScheduler(decode, workers=1, clock=clock)
    try:
        jobs = [
            scheduler.submit(audio(m), priority)
            for m, priority in (
                (1, DecodePriority.FINAL),
                (2, DecodePriority.FINAL),
                (3, DecodePriority.PARTIAL),
            )
        ]
        await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), 10)
        finals = scheduler.decoded[DecodePriority.FINAL]
        assert (finals.jobs, finals.calls) == (2, 2)
        assert finals.audio_s == pytest.approx(2 * 160 / 16000)
        assert finals.busy_s == pytest.approx(0.5)
        assert scheduler.decoded[DecodePriority.PARTIAL].jobs == 1
        assert scheduler.decoded[DecodePriority.REVISION].jobs == 0
    finally:
        await scheduler.close()


async def test_a_speculative_final_runs_after_firmer_finals_until_confirmed_in_its_place() -> None:
    decode = RecordingDecode()
    scheduler = DecodeScheduler(decode, workers=1)
    try:
        alone = scheduler.submit(audio(9), DecodePriority.FINAL, speculative=True)
        await asyncio.wait_for(alone.future, 10)  # a free thread: it starts at once

        blocker = await hold_the_worker(decode, scheduler)
        never_confirmed = scheduler.submit(audio(1), DecodePriority.FINAL, speculative=True)
        firm = scheduler.submit(audio(2), DecodePriority.FINAL)
        confirmed = scheduler.submit(audio(3), DecodePriority.FINAL, speculative=True)
        scheduler.confirm(confirmed)  # its endpoint came: someone waits for it now
        later = scheduler.submit(audio(4), DecodePriority.FINAL)
        revision = scheduler.submit(audio(5), DecodePriority.REVISION)
        decode.gate.set()
        jobs = (blocker, never_confirmed.future, firm.future, confirmed.future, later.future)
        await asyncio.wait_for(asyncio.gather(*jobs, revision.future), 10)
        assert decode.order == [9, 0, 2, 3, 4, 1, 5]
    finally:
        await scheduler.close()
