"""Shared fixtures for the speech recogniser: an espeak-ng corpus and one engine per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import av
import numpy as np
import pytest
import soxr

from core.settings import Settings
from streams.asr.audio import SAMPLE_RATE, Samples
from streams.asr.corpus import (
    HELD_OUT_SENTENCES,
    HELD_OUT_VOICES,
    SpokenSentence,
    build_corpus,
    espeak_path,
)
from streams.asr.transcriber import SpeechRecognitionEngine


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[SpokenSentence]:
    """Ten sales/support sentences read by three espeak-ng voices at three speeds, 16 kHz."""
    if espeak_path() is None:
        pytest.fail("espeak-ng is not installed; scripts/test.sh installs it")
    return build_corpus(cache_dir=tmp_path_factory.mktemp("asr-corpus"))


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[SpeechRecognitionEngine]:
    """The real engine with the bundled tiny.en and default settings."""
    engine = await SpeechRecognitionEngine.start(Settings())
    yield engine
    await engine.close()


def to_pcm_s16le(audio: Samples) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def to_mulaw_8k(audio: Samples) -> bytes:
    """Telephony audio: resampled to 8 kHz and mu-law encoded by ffmpeg (PyAV), not by us."""
    narrow = soxr.resample(audio, SAMPLE_RATE, 8000)
    pcm = (np.clip(narrow, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1)
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate = 8000
    codec.layout = "mono"
    codec.format = "s16"
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = 8000
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def from_mulaw_8k(mulaw: bytes) -> Samples:
    """ffmpeg's (PyAV) mu-law decoding, resampled to 16 kHz in one go: the offline reference."""
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.sample_rate = 8000
    codec.layout = "mono"
    frames = codec.decode(av.Packet(mulaw))
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    return np.asarray(soxr.resample(pcm / 32768.0, 8000, SAMPLE_RATE), dtype=np.float32)


@pytest.fixture(scope="session")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> list[SpokenSentence]:
    """Three sentences the recogniser was never tuned on, in two voices it was never tuned on."""
    if espeak_path() is None:
        pytest.fail("espeak-ng is not installed; scripts/test.sh installs it")
    return build_corpus(
        sentences=HELD_OUT_SENTENCES[:3],
        voices=HELD_OUT_VOICES[:2],
        cache_dir=tmp_path_factory.mktemp("asr-held-out"),
    )


def with_pause(first: SpokenSentence, second: SpokenSentence, *, pause_s: float) -> Samples:
    """`first`'s speech, `pause_s` of silence, then `second`'s speech: one sentence said with a
    comma-length pause in the middle."""
    gap = np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)
    lead = np.zeros(SAMPLE_RATE // 4, dtype=np.float32)
    return np.concatenate(
        [
            lead,
            first.audio[first.speech_start : first.speech_end],
            gap,
            second.audio[second.speech_start : second.speech_end],
            lead,
        ]
    )
