"""Streaming speech recognition: partial and final transcripts of live audio, per stream.

A `SpeechRecognitionEngine` per worker process owns the Whisper model, a decode scheduler and a
voice-activity thread, and runs one `StreamingRecognizer` per (conversation, speaker) stream.
The recogniser cuts the stream into utterances with Silero VAD and asks for decodes:

- partials every `partial_interval_ms` of speech, at low priority, never waited for;
- a speculative final as soon as the speaker pauses (`speculate_after_ms` of silence), so the
  decode runs while the endpoint silence elapses; it runs only on a thread no final someone
  waits for wants (most pauses are inside a sentence, and a decode dropped when speech
  resumes is CPU lost), and keeps its place in the queue for when its endpoint comes;
- at the endpoint (`endpoint_silence_ms` of silence) the speculative decode is the final (the
  fast one a suggestion starts from); if it has not finished it is awaited, never repeated.
  If speech resumes first, it is dropped (or shown as a partial when already done). A final
  whose text does not end a sentence is held back until `hold_unfinished_ms` of silence;
- speech resuming within `utterance_end_silence_ms` continues the same utterance: its next
  final is a revision of the same segment, decoded whole (a comma pause never splits it);
- once that silence has passed the utterance is over: it is re-decoded whole, with beam search
  (and, if `context_prompt`, the previous utterance's text as the prompt), and a revision is
  sent if the words changed.

Decisions depend only on the
audio (sample counts), never on how fast it arrives, so feeding a recording faster than real
time segments it exactly as a live stream would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from schemas.events import AudioChunk, Speaker
from streams.asr.audio import SAMPLE_RATE, AudioDecoder, Samples, check_format
from streams.asr.decoder import MAX_AUDIO_S, Transcription, UtteranceDecoder
from streams.asr.model import load_whisper_model, resolve_model_source
from streams.asr.scheduler import DecodeJob, DecodePriority, DecodeScheduler, DecodeTally
from streams.asr.vad import WINDOW_SAMPLES, StreamingVad

if TYPE_CHECKING:
    from core.settings import Settings

logger = logging.getLogger(__name__)

_SAMPLES_PER_MS: Final = SAMPLE_RATE // 1000
_WINDOW_MS: Final = WINDOW_SAMPLES / _SAMPLES_PER_MS
_SENTENCE_END: Final = re.compile(r"[.?!…][\"')\]]*\s*$")
_WORD: Final = re.compile(r"[a-z0-9']+")
_REVISION_TAIL_MS: Final = 300.0
PARTIAL_SHARE: Final = 0.25
"""Seconds of decoding per second all partials of a worker may use together (a quarter of a
core: what one stream's partials every 700 ms take). Under load partials thin out and finals,
revisions and the rest of the worker keep the CPU."""
StreamKey = tuple[str, Speaker]


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts say the same words, whatever their case and punctuation."""
    return _WORD.findall(a.lower()) == _WORD.findall(b.lower())


class AsrCapacityError(RuntimeError):
    """This worker already recognises as many audio streams as it is allowed."""

    code: Final = "asr_capacity"


@dataclass(frozen=True, kw_only=True)
class RecognizerConfig:
    """How a stream is cut into utterances and how often it is decoded."""

    endpoint_silence_ms: float = 150.0
    """Silence after speech that makes a final: the main latency lever."""
    utterance_end_silence_ms: float = 600.0
    """Silence that ends an utterance (at least the endpoint and the hold). Speech resuming
    sooner continues it: the next final revises the same segment with the whole text."""
    hold_unfinished_ms: float = 150.0
    """A final whose text does not end in . ? ! waits for this much silence (a comma pause is
    not an endpoint); at `endpoint_silence_ms` or less, nothing is held."""
    revision_beam_size: int = 5
    """Beam width of the whole-utterance re-decode at the utterance's end; 0 turns it off."""
    revision_max_wait_s: float = 2.0
    """A re-decode still queued after this long is dropped (its final stands): under overload
    revisions give way to finals instead of queueing without end."""
    context_prompt: bool = False
    """Re-decode with the previous utterance's text as Whisper's prompt. Off: measured on the
    held-out set it did not help (10.8 % WER without, 11.0-15.0 % with, varying with which
    revision had arrived when the next utterance began) and it can make Whisper echo the prompt."""
    audio_gap_endpoint_s: float = 1.0
    """No audio at all for this long in mid-utterance (a stopped or muted microphone) ends it."""
    speculate_after_ms: float = 32.0
    """Silence after which the utterance is decoded in case the pause becomes the endpoint."""
    partial_interval_ms: float = 700.0
    """Speech between partial transcripts."""
    min_speech_ms: float = 200.0
    """Shorter bursts of voice activity (clicks, breaths) are dropped undecoded."""
    max_utterance_s: float = 15.0
    """An utterance this long is finalised even without a pause, bounding per-stream audio."""
    preroll_ms: float = 200.0
    """Audio kept before the VAD's speech onset, which lags the first phoneme."""
    vad_threshold: float = 0.5
    vad_neg_threshold: float = 0.35
    """Silero hysteresis: speech starts at `vad_threshold`, silence starts below this."""

    def __post_init__(self) -> None:
        if self.revision_beam_size < 0:
            raise ValueError("revision_beam_size must be >= 0")
        if not 0 < self.speculate_after_ms <= self.endpoint_silence_ms:
            raise ValueError(
                f"need 0 < speculate_after_ms ({self.speculate_after_ms}) "
                f"<= endpoint_silence_ms ({self.endpoint_silence_ms})"
            )
        if not 1.0 <= self.max_utterance_s <= MAX_AUDIO_S - 1.0:
            raise ValueError(f"max_utterance_s must be within 1..{MAX_AUDIO_S - 1.0} s")
        if not 0 <= self.vad_neg_threshold <= self.vad_threshold <= 1:
            raise ValueError("need 0 <= vad_neg_threshold <= vad_threshold <= 1")
        if self.partial_interval_ms <= 0 or self.min_speech_ms < 0 or self.preroll_ms < 0:
            raise ValueError("partial_interval_ms must be > 0, min_speech_ms and preroll_ms >= 0")


@dataclass(frozen=True, kw_only=True)
class RecognizedText:
    """A partial or final transcript of one utterance of one stream.

    `*_ms` offsets count audio milliseconds from the start of the stream. `speech_end_wall_ms`
    estimates when the speaker stopped (Unix ms), from the wall clock the audio arrived at,
    assuming it arrives in real time; `produced_wall_ms` is when this text was ready, so their
    difference is the endpoint latency the listener sees.
    """

    conversation_id: str
    speaker: Speaker
    session_id: str
    utterance_id: str
    text: str
    final: bool
    start_ms: float
    end_ms: float
    speech_end_ms: float | None
    speech_end_wall_ms: float | None
    produced_wall_ms: float
    decode_ms: float
    revision: int = 0
    """0 for an utterance's first final; each later final of the same utterance (same
    `utterance_id`) revises it with the whole utterance's text."""


@dataclass(eq=False)
class _Decode:
    """A decode job for an utterance plus the stream position its audio ends at."""

    job: DecodeJob
    end: int


@dataclass(eq=False)
class _Utterance:
    utterance_id: str
    start: int  # first sample (preroll included)
    speech_start: int
    speech_end: int  # end of the last window the VAD called speech
    silence_start: int | None = None
    speculation: _Decode | None = None
    partial: _Decode | None = None
    partial_requested_to: int = 0
    partial_shown_to: int = 0
    finalized: bool = False
    prompt: str = ""  # the previous utterance's text, as it was when this one began
    sent_text: str | None = None  # the last final sent for this utterance
    sent_speech_end: int = -1  # speech_end that final covered
    revisions: int = 0  # finals sent so far
    sent_wall_ms: float | None = None  # the sent final's speech_end_wall_ms
    held: Transcription | None = None  # a final not sent: its text does not end a sentence


class _AudioBuffer:
    """The recent audio of one stream, addressed by absolute sample index, capacity-bounded."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(capacity, dtype=np.float32)
        self._begin = 0  # absolute index of _data[0]
        self._length = 0

    @property
    def start(self) -> int:
        return self._begin

    @property
    def end(self) -> int:
        return self._begin + self._length

    def append(self, samples: Samples) -> None:
        if len(samples) > len(self._data):
            samples = samples[-len(self._data) :]
        overflow = self._length + len(samples) - len(self._data)
        if overflow > 0:  # the caller bounds utterances, so only old pre-roll is lost here
            self.discard_before(self._begin + overflow)
        self._data[self._length : self._length + len(samples)] = samples
        self._length += len(samples)

    def discard_before(self, index: int) -> None:
        drop = min(max(0, index - self._begin), self._length)
        if drop:
            self._data[: self._length - drop] = self._data[drop : self._length]
            self._length -= drop
            self._begin += drop

    def slice(self, start: int, end: int) -> Samples:
        """A copy of samples [start, end), clipped to what the buffer still holds."""
        lo = max(start, self._begin) - self._begin
        hi = min(end, self.end) - self._begin
        return self._data[lo:hi].copy() if hi > lo else np.zeros(0, dtype=np.float32)


class StreamingRecognizer:
    """Cuts one live audio stream into utterances and transcribes them.

    Feed it float32 mono 16 kHz audio with `feed`, one call at a time; results go to `results`:
    partials (dropped if that queue is full: a newer one follows), finals and revisions
    (awaited into it). `feed` waits for VAD (milliseconds) and, at an endpoint, for the final's
    decode; run one recogniser per task so that this wait holds up only its own stream.
    Revisions at an utterance's end are decoded in the background and arrive when ready.
    """

    def __init__(
        self,
        *,
        conversation_id: str,
        speaker: Speaker = "customer",
        session_id: str = "",
        scheduler: DecodeScheduler,
        vad_executor: ThreadPoolExecutor,
        results: asyncio.Queue[RecognizedText],
        config: RecognizerConfig | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.speaker: Speaker = speaker
        self.session_id = session_id
        self.config = config or RecognizerConfig()
        self.partials_dropped = 0
        self.revisions_dropped = 0
        self._scheduler = scheduler
        self._vad_executor = vad_executor
        self._results = results
        self._vad = StreamingVad()
        cfg = self.config
        self._preroll = int(cfg.preroll_ms * _SAMPLES_PER_MS)
        # Silence is counted in whole VAD windows: round to the nearest rather than up.
        self._endpoint = _whole_windows(cfg.endpoint_silence_ms)
        self._hold = max(self._endpoint, _whole_windows(cfg.hold_unfinished_ms))
        self._utterance_end = max(self._hold, _whole_windows(cfg.utterance_end_silence_ms))
        self._speculate_after = int(cfg.speculate_after_ms * _SAMPLES_PER_MS)
        self._partial_interval = int(cfg.partial_interval_ms * _SAMPLES_PER_MS)
        self._min_speech = int(cfg.min_speech_ms * _SAMPLES_PER_MS)
        self._max_utterance = int(cfg.max_utterance_s * SAMPLE_RATE)
        self._tail = self._endpoint  # trailing silence kept when a stream ends mid-pause
        # The whole-utterance re-decode keeps this much of the silence after the last word:
        # enough for a word's faint ending that the VAD already called silence.
        self._revision_tail = min(self._utterance_end, _whole_windows(_REVISION_TAIL_MS))
        self._buffer = _AudioBuffer(self._max_utterance + self._preroll + 2 * SAMPLE_RATE)
        self._vad_position = 0  # start of the next VAD window
        self._utterance: _Utterance | None = None
        self._context = ""  # what the previous utterance said: the next decodes' prompt
        self._revising: set[asyncio.Task[None]] = set()
        self._id_prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)
        self._last_now_ms = 0.0
        self._closed = False

    @property
    def in_utterance(self) -> bool:
        return self._utterance is not None

    @property
    def buffered_samples(self) -> int:
        return self._buffer.end - self._buffer.start

    async def feed(self, samples: Samples, *, now_ms: float) -> None:
        """Add audio that arrived at wall-clock `now_ms` (Unix ms); may emit transcripts."""
        if self._closed:
            raise RuntimeError("recognizer is closed")
        loop = asyncio.get_running_loop()
        # Gateway chunks are 100-200 ms; anything longer goes in 1 s pieces so that the buffer,
        # which holds one utterance at most, never has to take more than it can keep.
        for offset in range(0, len(samples), SAMPLE_RATE):
            piece = samples[offset : offset + SAMPLE_RATE]
            self._buffer.append(piece)
            self._last_now_ms = now_ms - (len(samples) - offset - len(piece)) / _SAMPLES_PER_MS
            probabilities = await loop.run_in_executor(self._vad_executor, self._vad.process, piece)
            for probability in probabilities.tolist():
                start = self._vad_position
                self._vad_position += WINDOW_SAMPLES
                await self._on_window(probability, start, self._vad_position)
            if self._utterance is None:
                self._buffer.discard_before(self._vad_position - self._preroll)

    async def flush(self, *, now_ms: float | None = None, revisions: bool = True) -> None:
        """End of stream: finalise the utterance in progress, if any, and (with `revisions`)
        wait for the revisions still being decoded."""
        if now_ms is not None:
            self._last_now_ms = now_ms
        utterance = self._utterance
        if utterance is not None:
            end = min(self._buffer.end, utterance.speech_end + self._tail)
            await self._end_utterance(utterance, end)
        if revisions and self._revising:
            await asyncio.gather(*self._revising, return_exceptions=True)

    def close(self) -> None:
        """Drop queued decodes and the audio held; the recogniser takes no more audio."""
        self._closed = True
        if self._utterance is not None:
            self._abandon(self._utterance)
            self._utterance = None
        for task in self._revising:
            task.cancel()
        self._buffer = _AudioBuffer(1)

    # --- utterance state machine, one VAD window at a time ---------------------------------

    async def _on_window(self, probability: float, start: int, end: int) -> None:
        utterance = self._utterance
        if utterance is None:
            if probability >= self.config.vad_threshold:
                first = max(self._buffer.start, start - self._preroll)
                self._utterance = self._new_utterance(first, start, end)
            return
        self._track_voice(utterance, probability, start, end)
        if utterance.silence_start is None:
            if end - utterance.partial_requested_to >= self._partial_interval and (
                end - utterance.speech_start >= self._min_speech
            ):
                self._request_partial(utterance, end)
        else:
            silence = end - utterance.silence_start
            if silence >= self._utterance_end:
                await self._end_utterance(utterance, end)
                return
            if utterance.speech_end > utterance.sent_speech_end:  # words not yet in a final
                if silence >= self._endpoint:
                    await self._endpoint_reached(utterance, end, silence)
                elif silence >= self._speculate_after and not utterance.speculation:
                    utterance.speculation = self._submit(
                        utterance, end, DecodePriority.FINAL, speculative=True
                    )

        if end - utterance.start >= self._max_utterance:
            speaking = utterance.silence_start is None
            await self._end_utterance(utterance, end)
            if speaking:  # carry on without pre-roll, which would repeat the last words
                self._utterance = self._new_utterance(end, end, end)

    def _track_voice(self, utterance: _Utterance, probability: float, start: int, end: int) -> None:
        """Silero's hysteresis: silence starts below the low threshold, ends above the high."""
        if probability >= self.config.vad_threshold:
            if utterance.silence_start is not None:
                utterance.silence_start = None
                self._drop_speculation(utterance)
            utterance.speech_end = end
        elif probability < self.config.vad_neg_threshold:
            if utterance.silence_start is None:
                utterance.silence_start = start
        elif utterance.silence_start is None:
            utterance.speech_end = end  # undecided window inside speech: still speech

    def _new_utterance(self, start: int, speech_start: int, speech_end: int) -> _Utterance:
        return _Utterance(
            utterance_id=f"{self._id_prefix}-{next(self._counter)}",
            start=start,
            speech_start=speech_start,
            speech_end=speech_end,
            partial_requested_to=speech_start,
            prompt=self._context if self.config.context_prompt else "",
        )

    def _submit(
        self,
        utterance: _Utterance,
        end: int,
        priority: DecodePriority,
        *,
        speculative: bool = False,
    ) -> _Decode:
        audio = self._buffer.slice(utterance.start, end)
        # No prompt here: on the espeak corpus it made the fast greedy finals worse (4.4 -> 6.3 %
        # WER) and the held-out set no better; only the re-decode at the utterance's end has it.
        job = self._scheduler.submit(audio, priority, speculative=speculative)
        return _Decode(job=job, end=end)

    def _request_partial(self, utterance: _Utterance, end: int) -> None:
        current = utterance.partial
        if current is not None and current.job.pending:
            # Still queued: decode the newer audio instead, keeping its place in the queue.
            current.job.audio = self._buffer.slice(utterance.start, end)
            current.end = end
        elif current is not None and not current.job.future.done():
            return  # one running partial per stream at a time
        else:
            decode = self._submit(utterance, end, DecodePriority.PARTIAL)
            utterance.partial = decode
            decode.job.future.add_done_callback(
                lambda _: self._show_partial(utterance, decode),
            )
        utterance.partial_requested_to = end

    def _drop_speculation(self, utterance: _Utterance) -> None:
        """Speech resumed: the speculative decode is not the final; at most a partial."""
        speculation = utterance.speculation
        utterance.speculation = None
        utterance.held = None
        if speculation is None:
            return
        speculation.job.cancel()
        if not speculation.job.cancelled:
            speculation.job.future.add_done_callback(
                lambda _: self._show_partial(utterance, speculation)
            )

    def _show_partial(self, utterance: _Utterance, decode: _Decode) -> None:
        future = decode.job.future
        if utterance.finalized or self._closed or utterance is not self._utterance:
            return
        if (
            decode is utterance.partial
            and utterance.silence_start is None
            and self._vad_position - utterance.partial_requested_to >= self._partial_interval
        ):
            # Requests were skipped while this one ran: ask for the newest audio right away.
            self._request_partial(utterance, self._vad_position)
        if future.cancelled() or future.exception() is not None:
            return
        if decode.end <= utterance.partial_shown_to:
            return
        transcription = future.result()
        if not transcription.is_speech:
            return
        utterance.partial_shown_to = decode.end
        text = self._text(utterance, transcription, end=decode.end, final=False)
        try:
            self._results.put_nowait(text)
        except asyncio.QueueFull:
            self.partials_dropped += 1
            logger.debug("results full: partial of %s dropped", utterance.utterance_id)

    async def _endpoint_reached(self, utterance: _Utterance, end: int, silence: int) -> None:
        """Enough silence for a final: send the speculation, unless it is an unfinished sentence."""
        transcription = utterance.held
        if transcription is None:
            if utterance.sent_text is None and (
                utterance.speech_end - utterance.speech_start < self._min_speech
            ):
                return  # too short to be speech so far; the utterance's end drops it
            transcription = await self._speculated(utterance, end)
            if transcription is None or not transcription.is_speech:
                utterance.sent_speech_end = utterance.speech_end  # nothing new was said
                return
            if silence < self._hold and not _SENTENCE_END.search(transcription.text):
                utterance.held = transcription
                return
        elif silence < self._hold:
            return
        await self._send_final(utterance, transcription, end)

    async def _speculated(self, utterance: _Utterance, end: int) -> Transcription | None:
        """The speculative decode's result (submitted now if there is none); None if it failed."""
        decode = utterance.speculation
        if decode is None:
            decode = utterance.speculation = self._submit(utterance, end, DecodePriority.FINAL)
        else:
            self._scheduler.confirm(decode.job)  # someone waits for it now
        try:
            return await decode.job.future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            logger.warning("final decode of %s cancelled: scheduler closed", utterance.utterance_id)
        except Exception:
            logger.exception(
                "final decode of %s (%s) failed; utterance lost",
                utterance.utterance_id,
                self.conversation_id,
            )
        return None

    async def _send_final(
        self, utterance: _Utterance, transcription: Transcription, end: int
    ) -> None:
        decode_end = utterance.speculation.end if utterance.speculation is not None else end
        utterance.held = None
        utterance.speculation = None
        utterance.sent_speech_end = utterance.speech_end
        # A partial of audio this final covers, finishing later, must not show after it.
        utterance.partial_shown_to = max(utterance.partial_shown_to, decode_end)
        if utterance.sent_text is not None and same_words(transcription.text, utterance.sent_text):
            return
        text = self._text(
            utterance, transcription, decode_end, final=True, revision=utterance.revisions
        )
        utterance.sent_text = transcription.text
        utterance.sent_wall_ms = text.speech_end_wall_ms
        utterance.revisions += 1
        await self._results.put(text)

    async def _end_utterance(self, utterance: _Utterance, end: int) -> None:
        """The utterance is over: send what is not sent yet, then revise it whole."""
        self._utterance = None
        utterance.finalized = True
        if utterance.partial is not None:
            utterance.partial.job.cancel()
        if utterance.held is not None:
            await self._send_final(utterance, utterance.held, end)
        elif utterance.speech_end > utterance.sent_speech_end:
            if utterance.sent_text is None and (
                utterance.speech_end - utterance.speech_start < self._min_speech
            ):
                if utterance.speculation is not None:
                    utterance.speculation.job.cancel()
                logger.debug(
                    "%d ms of voice activity dropped",
                    (utterance.speech_end - utterance.speech_start) // _SAMPLES_PER_MS,
                )
            else:
                transcription = await self._speculated(utterance, end)
                if transcription is not None and transcription.is_speech:
                    await self._send_final(utterance, transcription, end)
        if utterance.sent_text is not None:
            self._context = utterance.sent_text
            if self.config.revision_beam_size > 0 and not self._closed:
                self._revise(utterance, min(end, utterance.speech_end + self._revision_tail))
        self._buffer.discard_before(min(end, self._vad_position) - self._preroll)

    def _revise(self, utterance: _Utterance, end: int) -> None:
        job = self._scheduler.submit(
            self._buffer.slice(utterance.start, end),
            DecodePriority.REVISION,
            prompt=utterance.prompt,
            beam_size=self.config.revision_beam_size,
        )
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.revision_max_wait_s, job.cancel)  # a no-op once started
        task = loop.create_task(
            self._send_revision(utterance, job, end), name=f"asr-revise-{utterance.utterance_id}"
        )
        self._revising.add(task)
        task.add_done_callback(self._revising.discard)

    async def _send_revision(self, utterance: _Utterance, job: DecodeJob, end: int) -> None:
        try:
            transcription = await job.future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self.revisions_dropped += 1
            return  # waited too long, or the scheduler closed: the final already sent stands
        except Exception:
            logger.exception("revision of %s failed; its final stands", utterance.utterance_id)
            return
        sent = utterance.sent_text or ""
        if self._closed or not transcription.is_speech or same_words(transcription.text, sent):
            return
        if self._context == sent:
            self._context = transcription.text
        text = self._text(utterance, transcription, end, final=True, revision=utterance.revisions)
        # Same speech end as the final it revises: keep the wall time estimated when it was heard.
        text = dataclasses.replace(text, speech_end_wall_ms=utterance.sent_wall_ms)
        utterance.sent_text = transcription.text
        utterance.revisions += 1
        await self._results.put(text)

    def _abandon(self, utterance: _Utterance) -> None:
        utterance.finalized = True
        for decode in (utterance.partial, utterance.speculation):
            if decode is not None:
                decode.job.cancel()

    def _text(
        self,
        utterance: _Utterance,
        transcription: Transcription,
        end: int,
        final: bool,
        revision: int = 0,
    ) -> RecognizedText:
        speech_end: int | None = None
        if final:
            speech_end = utterance.silence_start or utterance.speech_end
        return RecognizedText(
            conversation_id=self.conversation_id,
            speaker=self.speaker,
            session_id=self.session_id,
            utterance_id=utterance.utterance_id,
            text=transcription.text,
            final=final,
            start_ms=utterance.start / _SAMPLES_PER_MS,
            end_ms=end / _SAMPLES_PER_MS,
            speech_end_ms=None if speech_end is None else speech_end / _SAMPLES_PER_MS,
            speech_end_wall_ms=None if speech_end is None else self._wall_ms(speech_end),
            produced_wall_ms=time.time() * 1000.0,
            decode_ms=transcription.decode_ms,
            revision=revision,
        )

    def _wall_ms(self, sample: int) -> float:
        # The newest audio arrived at _last_now_ms; earlier samples were spoken before it.
        return self._last_now_ms - (self._buffer.end - sample) / _SAMPLES_PER_MS


def _whole_windows(ms: float) -> int:
    """`ms` of audio as a whole number (at least one) of VAD windows, in samples."""
    return max(1, round(ms / _WINDOW_MS)) * WINDOW_SAMPLES


@dataclass(eq=False)
class _Feed:
    samples: Samples
    now_ms: float
    session_id: str


_END: Final = None


@dataclass(eq=False)
class _Stream:
    key: StreamKey
    audio: AudioDecoder
    recognizer: StreamingRecognizer
    inbox: asyncio.Queue[_Feed | None]
    last_audio_at: float
    task: asyncio.Task[None] | None = None
    ending: bool = False


@dataclass(frozen=True)
class EngineStats:
    streams: int
    decodes_queued: int
    decodes_running: int
    decodes_completed: int
    decodes_batched: int
    partials_dropped: int
    revisions_dropped: int
    decodes: dict[str, DecodeTally]
    """Per kind (final, revision, partial): jobs, calls, audio and time decoded so far."""


class SpeechRecognitionEngine:
    """One per worker process: the shared model, its decode scheduler, and every audio stream.

    The agent hands it `AudioChunk`s with `accept` (which decodes and validates the bytes,
    raising `AudioFormatError` for bad audio without disturbing the stream) and reads
    `RecognizedText` from `results()`. Each (conversation, speaker) stream gets its own task and
    a bounded inbox; a stream ends with a chunk marked `end_of_stream`, or after
    `idle_release_s` without audio, and its audio is released.
    """

    def __init__(
        self,
        decoder: UtteranceDecoder,
        *,
        config: RecognizerConfig | None = None,
        decode_workers: int = 2,
        max_streams: int = 256,
        inbox_chunks: int = 100,
        results_size: int = 1024,
        idle_release_s: float = 30.0,
        max_batch: int = 4,
        partial_share: float | None = PARTIAL_SHARE,
    ) -> None:
        self.config = config or RecognizerConfig()
        self._decoder = decoder
        self._scheduler = DecodeScheduler(
            decoder.decode,
            workers=decode_workers,
            max_jobs=4 * max_streams + 16,
            decode_batch=decoder.decode_batch,
            max_batch=max_batch,
            partial_share=partial_share,
        )
        self._vad_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-vad")
        self._results: asyncio.Queue[RecognizedText] = asyncio.Queue(maxsize=results_size)
        self._streams: dict[StreamKey, _Stream] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_streams = max_streams
        self._inbox_chunks = inbox_chunks
        self._idle_release_s = idle_release_s
        self._partials_dropped_closed = 0
        self._revisions_dropped_closed = 0
        self._closed = False
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="asr-idle-sweeper")

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        decode_workers: int | None = None,
        config: RecognizerConfig | None = None,
        max_streams: int = 256,
        idle_release_s: float = 30.0,
    ) -> SpeechRecognitionEngine:
        """Load the model named by settings (off the event loop), warm it up, and start.

        Raises AsrModelError naming the model and the cause when it cannot load.
        """
        workers = decode_workers or default_decode_workers(settings.asr_device)
        source = resolve_model_source(settings.asr_model)
        model = await asyncio.to_thread(
            load_whisper_model,
            source,
            device=settings.asr_device,
            compute_type=settings.asr_compute_type,
            workers=workers,
        )
        decoder = UtteranceDecoder(model)
        # The first decode allocates; do it now rather than in someone's first endpoint.
        await asyncio.to_thread(decoder.decode, np.zeros(SAMPLE_RATE, dtype=np.float32))
        await asyncio.to_thread(StreamingVad().process, np.zeros(4096, dtype=np.float32))
        config = config or RecognizerConfig(endpoint_silence_ms=settings.asr_endpoint_silence_ms)
        return cls(
            decoder,
            config=config,
            decode_workers=workers,
            max_streams=max_streams,
            idle_release_s=idle_release_s,
        )

    @property
    def stats(self) -> EngineStats:
        return EngineStats(
            streams=len(self._streams) + len(self._ending),
            decodes_queued=self._scheduler.queued,
            decodes_running=self._scheduler.busy,
            decodes_completed=self._scheduler.completed,
            decodes_batched=self._scheduler.batched,
            partials_dropped=self._partials_dropped_closed
            + sum(s.recognizer.partials_dropped for s in self._streams.values()),
            revisions_dropped=self._revisions_dropped_closed
            + sum(s.recognizer.revisions_dropped for s in self._streams.values()),
            decodes={
                priority.name.lower(): dataclasses.replace(tally)
                for priority, tally in self._scheduler.decoded.items()
            },
        )

    @property
    def decoder(self) -> UtteranceDecoder:
        return self._decoder

    def open_recognizer(
        self,
        conversation_id: str,
        *,
        speaker: Speaker = "customer",
        results: asyncio.Queue[RecognizedText] | None = None,
        config: RecognizerConfig | None = None,
    ) -> StreamingRecognizer:
        """A recogniser on this engine's model, driven by the caller (benchmarks and tests)."""
        return StreamingRecognizer(
            conversation_id=conversation_id,
            speaker=speaker,
            scheduler=self._scheduler,
            vad_executor=self._vad_executor,
            results=results if results is not None else self._results,
            config=config or self.config,
        )

    async def accept(self, chunk: AudioChunk, *, now_ms: float | None = None) -> None:
        """Take one audio chunk of a stream. Waits only when that stream's inbox is full.

        Raises AudioFormatError (bad bytes, encoding or rate: the chunk is dropped, the stream
        goes on) or AsrCapacityError (a new stream beyond `max_streams`).
        """
        if self._closed:
            raise RuntimeError("speech recognition engine is closed")
        arrived_ms = now_ms if now_ms is not None else time.time() * 1000.0
        key: StreamKey = (chunk.conversation_id, chunk.speaker)
        stream = self._streams.get(key)
        if stream is None:
            if chunk.end_of_stream and not chunk.audio:
                return
            stream = self._open(key, chunk)
        elif not stream.audio.matches(chunk.encoding, chunk.sample_rate):
            check_format(chunk.encoding, chunk.sample_rate)
            tail = stream.audio.finish()
            stream.audio = AudioDecoder(encoding=chunk.encoding, sample_rate=chunk.sample_rate)
            if len(tail):
                await stream.inbox.put(_Feed(tail, arrived_ms, chunk.session_id))
        if chunk.audio:
            samples = stream.audio.decode(chunk.audio)
            stream.last_audio_at = time.monotonic()
            if len(samples):
                await stream.inbox.put(_Feed(samples, arrived_ms, chunk.session_id))
        if chunk.end_of_stream:
            await self._end(stream, arrived_ms, chunk.session_id)

    async def end_stream(self, conversation_id: str, speaker: Speaker = "customer") -> None:
        """Finish a stream as if its last chunk were marked end_of_stream."""
        stream = self._streams.get((conversation_id, speaker))
        if stream is not None:
            await self._end(stream, time.time() * 1000.0, stream.recognizer.session_id)

    async def results(self) -> AsyncIterator[RecognizedText]:
        """Every transcript of every stream, in order per stream; runs until cancelled."""
        while True:
            yield await self._results.get()

    async def next_result(self) -> RecognizedText:
        return await self._results.get()

    def take_ready(self) -> list[RecognizedText]:
        """The transcripts already produced, without waiting."""
        ready = []
        while not self._results.empty():
            ready.append(self._results.get_nowait())
        return ready

    async def wait_until_idle(self) -> None:
        """Until every stream has ended and its last transcript is in the results."""
        await self._idle.wait()

    async def close(self, *, flush_timeout_s: float = 0.0) -> None:
        """Stop every stream, the scheduler and the threads.

        With `flush_timeout_s`, streams are first ended as if their audio stopped, and their
        last finals (taken with `take_ready`) are waited for up to that long.
        """
        if flush_timeout_s > 0 and not self._closed:
            for stream in list(self._streams.values()):
                await self._end(stream, time.time() * 1000.0, stream.recognizer.session_id)
            try:
                await asyncio.wait_for(self._idle.wait(), flush_timeout_s)
            except TimeoutError:
                logger.warning("audio streams not flushed within %.1f s", flush_timeout_s)
        self._closed = True
        self._sweeper.cancel()
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        tasks += list(self._ending)
        for task in tasks:
            task.cancel()
        await asyncio.gather(self._sweeper, *tasks, return_exceptions=True)
        for stream in self._streams.values():
            stream.recognizer.close()
        self._streams.clear()
        await self._scheduler.close()
        self._vad_executor.shutdown(wait=False, cancel_futures=True)

    # --- streams -----------------------------------------------------------------------

    def _open(self, key: StreamKey, chunk: AudioChunk) -> _Stream:
        check_format(chunk.encoding, chunk.sample_rate)
        if len(self._streams) >= self._max_streams:
            raise AsrCapacityError(
                f"this worker already recognises {self._max_streams} audio streams"
            )
        recognizer = self.open_recognizer(key[0], speaker=key[1])
        recognizer.session_id = chunk.session_id
        stream = _Stream(
            key=key,
            audio=AudioDecoder(encoding=chunk.encoding, sample_rate=chunk.sample_rate),
            recognizer=recognizer,
            inbox=asyncio.Queue(maxsize=self._inbox_chunks),
            last_audio_at=time.monotonic(),
        )
        stream.task = asyncio.create_task(self._run(stream), name=f"asr-{key[0]}-{key[1]}")
        stream.task.add_done_callback(lambda _: self._note_if_idle())
        self._streams[key] = stream
        self._idle.clear()
        logger.debug("audio stream %s/%s opened", *key)
        return stream

    async def _end(self, stream: _Stream, now_ms: float, session_id: str) -> None:
        if stream.ending:
            return
        stream.ending = True
        tail = stream.audio.finish()
        if len(tail):
            await stream.inbox.put(_Feed(tail, now_ms, session_id))
        await stream.inbox.put(_END)
        # A new chunk with the same key opens a fresh stream while this one finishes.
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        if stream.task is not None and not stream.task.done():
            self._ending.add(stream.task)
            stream.task.add_done_callback(self._ending.discard)
            stream.task.add_done_callback(lambda _: self._note_if_idle())
        self._note_if_idle()

    def _note_if_idle(self) -> None:
        if not self._streams and not self._ending:
            self._idle.set()

    async def _run(self, stream: _Stream) -> None:
        recognizer = stream.recognizer
        try:
            while True:
                gap_s = recognizer.config.audio_gap_endpoint_s if recognizer.in_utterance else None
                try:
                    # asyncio.timeout, unlike wait_for on 3.11, never mistakes a cancel for it.
                    async with asyncio.timeout(gap_s):
                        item = await stream.inbox.get()
                except TimeoutError:
                    # The client stopped sending mid-utterance: what was heard is all there
                    # will be, so end the utterance now rather than when the stream ends. The
                    # stream lives on, so its revision arrives in the background.
                    await recognizer.flush(revisions=False)
                    continue
                if item is _END:
                    await recognizer.flush()
                    break
                recognizer.session_id = item.session_id
                await recognizer.feed(item.samples, now_ms=item.now_ms)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("audio stream %s/%s failed; it is closed", *stream.key)
            if self._streams.get(stream.key) is stream:
                del self._streams[stream.key]
        finally:
            self._partials_dropped_closed += recognizer.partials_dropped
            self._revisions_dropped_closed += recognizer.revisions_dropped
            recognizer.close()
            logger.debug("audio stream %s/%s released", *stream.key)

    async def _sweep_idle(self) -> None:
        period = max(0.05, min(5.0, self._idle_release_s / 2))
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self._idle_release_s
            for stream in [s for s in self._streams.values() if s.last_audio_at < cutoff]:
                logger.info("audio stream %s/%s idle: released", *stream.key)
                await self._end(stream, time.time() * 1000.0, stream.recognizer.session_id)


def default_decode_workers(device: str) -> int:
    # On CPU one single-threaded decode per core; a GPU serialises kernels, more buys little.
    if device == "cuda":
        return 2
    return max(1, min(4, os.cpu_count() or 1))


__all__ = [
    "AsrCapacityError",
    "EngineStats",
    "RecognizedText",
    "RecognizerConfig",
    "SpeechRecognitionEngine",
    "StreamingRecognizer",
]
