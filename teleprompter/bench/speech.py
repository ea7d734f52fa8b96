"""Speech for audio mode: the ASR corpus's sentences read by espeak-ng, as 16 kHz s16le PCM."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.asr.audio import SAMPLE_RATE
from streams.asr.corpus import SENTENCES, VOICES, speak

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SpeechClips:
    """Each customer sentence once, in one voice: bytes to stream and where speech ends."""

    sample_rate: int
    clips: dict[str, bytes]
    speech_ends_s: dict[str, float]

    @classmethod
    def synthesize(cls, *, cache_dir: Path | None = None) -> SpeechClips:
        """Read every corpus sentence (cached under `cache_dir`); needs espeak-ng."""
        clips: dict[str, bytes] = {}
        ends: dict[str, float] = {}
        for n, text in enumerate(SENTENCES):
            spoken = speak(text, VOICES[n % len(VOICES)], cache_dir=cache_dir)
            pcm = np.clip(spoken.audio * 32768.0, -32768, 32767).astype("<i2")
            clips[text] = pcm.tobytes()
            ends[text] = spoken.speech_end / SAMPLE_RATE
        logger.info("synthesized %d customer sentences for audio mode", len(clips))
        return cls(sample_rate=SAMPLE_RATE, clips=clips, speech_ends_s=ends)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(self.clips)

    def pcm(self, text: str) -> bytes:
        return self.clips[text]

    def speech_end_s(self, text: str) -> float:
        return self.speech_ends_s[text]
