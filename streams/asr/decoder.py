"""Turns one utterance's audio into text with the shared Whisper model (blocking; run off-loop)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer
from threadpoolctl import threadpool_limits

from streams.asr.audio import SAMPLE_RATE, Samples

logger = logging.getLogger(__name__)

MIN_WINDOW_S: Final = 10
"""Whisper is trained on 30 s windows; feeding the encoder less is much faster (on tiny.en int8:
34 ms for 10 s against 294 ms for 30 s), but windows close to the audio's length make it loop
("... arrive? Can you tell me ... arrive? ..."). Measured on the espeak corpus: a window of at
least 10 s and 3 s longer than the audio kept the word error rate at the 30 s level."""
WINDOW_MARGIN_S: Final = 3
MAX_WINDOW_S: Final = 30
MAX_AUDIO_S: Final = MAX_WINDOW_S - WINDOW_MARGIN_S
_HOP_SAMPLES: Final = 160  # one mel frame: 10 ms
_MAX_TOKENS_PER_S: Final = 10  # fast speech is ~5; anything beyond is a runaway repetition
MAX_PROMPT_TOKENS: Final = 64
"""Context from the previous utterance: Whisper allows up to half its 448-token window; a
sentence or two (~20-60 tokens) carries the topic and style, and more only costs decode time."""


@dataclass(frozen=True)
class Transcription:
    """What Whisper heard in one stretch of audio."""

    text: str
    no_speech_prob: float
    avg_logprob: float
    audio_s: float
    decode_ms: float
    is_speech: bool


class UtteranceDecoder:
    """Greedy Whisper decoding of one utterance, already cut by voice activity detection.

    Calls the CTranslate2 model directly (features, encode, generate) rather than
    `WhisperModel.transcribe`, which always pads to a 30 s window and re-runs VAD: the utterance
    is already segmented, and the short window is most of the speed. Thread-safe: up to the
    model's `num_workers` decodes run in parallel.
    """

    def __init__(
        self,
        model: Any,
        *,
        language: str = "en",
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
    ) -> None:
        # The feature extractor's one small matrix product wakes OpenBLAS's worker threads,
        # which then busy-wait through the whole CTranslate2 decode: each decode took 1.8
        # cores instead of 1. One BLAS thread (for the whole process) halves decode CPU.
        threadpool_limits(limits=1, user_api="blas")
        self._model = model
        self._whisper: Any = model.model
        tokenizer = Tokenizer(
            model.hf_tokenizer,
            bool(self._whisper.is_multilingual),
            task="transcribe",
            language=language,
        )
        self._tokenizer: Any = tokenizer
        self._prompt: list[int] = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._no_speech_threshold = no_speech_threshold
        self._logprob_threshold = logprob_threshold

    def decode(self, audio: Samples, prompt: str = "", *, beam_size: int = 1) -> Transcription:
        """Text of `audio` (float32 mono 16 kHz, at most MAX_AUDIO_S long). Blocking.

        `prompt` is what was said just before (the previous utterance): Whisper reads it as
        the preceding text, which keeps names, topic and punctuation consistent across cuts.
        """
        return self.decode_batch([audio], [prompt], beam_size=beam_size)[0]

    def decode_batch(
        self, audios: Sequence[Samples], prompts: Sequence[str], *, beam_size: int = 1
    ) -> list[Transcription]:
        """`decode` of several utterances in one encoder and one decoder call. Blocking.

        One call on a batch costs less CPU than one call each (CTranslate2 multiplies matrices
        instead of vectors): on tiny.en int8, one thread, 8 utterances took 1.5 s of CPU in
        batches of 4 against 2.0 s one at a time. All share the window of the longest.
        """
        started = time.perf_counter()
        longest_s = max(len(audio) for audio in audios) / SAMPLE_RATE
        if longest_s > MAX_AUDIO_S:
            raise ValueError(f"{longest_s:.1f} s of audio exceeds the {MAX_AUDIO_S} s decode limit")
        window_s = min(MAX_WINDOW_S, max(MIN_WINDOW_S, math.ceil(longest_s) + WINDOW_MARGIN_S))
        frames = window_s * SAMPLE_RATE // _HOP_SAMPLES
        rows = []
        for audio in audios:
            padded = np.zeros(window_s * SAMPLE_RATE, dtype=np.float32)
            padded[: len(audio)] = audio
            rows.append(self._model.feature_extractor(padded)[:, :frames])
        features = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
        encoded = self._whisper.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
        starts = [self._start(prompt) for prompt in prompts]
        longest_start = max(len(start) for start in starts)
        max_new = min(
            self._model.max_length // 2 - longest_start,
            math.ceil(longest_s * _MAX_TOKENS_PER_S) + 8,
        )
        results = self._whisper.generate(
            encoded,
            starts,
            beam_size=beam_size,
            max_length=longest_start + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        decode_ms = (time.perf_counter() - started) * 1000.0
        return [
            self._transcription(result, len(audio) / SAMPLE_RATE, decode_ms)
            for result, audio in zip(results, audios, strict=True)
        ]

    def _start(self, prompt: str) -> list[int]:
        if not prompt.strip():
            return self._prompt
        previous = self._tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:]
        return [self._tokenizer.sot_prev, *previous, *self._prompt]

    def _transcription(self, result: Any, audio_s: float, decode_ms: float) -> Transcription:
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        # generate() reports the cumulative log probability divided by the length
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        no_speech_prob = float(result.no_speech_prob)
        silent = no_speech_prob > self._no_speech_threshold and (
            avg_logprob < self._logprob_threshold
        )
        return Transcription(
            text=text,
            no_speech_prob=no_speech_prob,
            avg_logprob=avg_logprob,
            audio_s=audio_s,
            decode_ms=decode_ms,
            is_speech=bool(text) and not silent,
        )
