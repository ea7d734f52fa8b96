"""Turns the audio bytes a client sends into what the recogniser takes: float32 mono 16 kHz."""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
import soxr
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 16000
"""The rate Whisper and Silero VAD work at; everything is converted to it."""

ENCODINGS: Final = ("pcm_s16le", "mulaw")
SAMPLE_RATES: Final = (8000, 16000)
"""What the WebSocket protocol declares (see CONTRACT.md `audio_config`). The resampler takes any
rate, so widening this set is a one-line change once the protocol allows it."""

Samples = NDArray[np.float32]


class AudioFormatError(ValueError):
    """Audio the recogniser cannot take; the message names what is wrong with it."""

    code: Final = "bad_audio"


def _mulaw_table() -> Samples:
    # ITU-T G.711 mu-law expansion of every possible byte, scaled to [-1, 1).
    byte = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    linear = np.where(byte & 0x80, -magnitude, magnitude)
    return (linear / 32768.0).astype(np.float32)


_MULAW_TO_FLOAT: Final = _mulaw_table()


def check_format(encoding: str, sample_rate: int) -> None:
    """Raise AudioFormatError unless `encoding` and `sample_rate` are ones we decode."""
    if encoding not in ENCODINGS:
        raise AudioFormatError(
            f"unknown audio encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}"
        )
    if isinstance(sample_rate, bool) or sample_rate not in SAMPLE_RATES:
        raise AudioFormatError(
            f"unsupported sample rate {sample_rate!r} Hz; expected one of "
            + ", ".join(str(rate) for rate in SAMPLE_RATES)
        )


def decode_samples(audio: bytes, encoding: str) -> Samples:
    """Bytes in `encoding` -> float32 samples in [-1, 1) at the source rate."""
    if encoding == "pcm_s16le":
        if len(audio) % 2:
            raise AudioFormatError(
                f"{len(audio)} bytes of pcm_s16le is not a whole number of 2-byte samples"
            )
        return (np.frombuffer(audio, dtype="<i2").astype(np.float32)) / np.float32(32768.0)
    if encoding == "mulaw":
        return _MULAW_TO_FLOAT[np.frombuffer(audio, dtype=np.uint8)]
    raise AudioFormatError(
        f"unknown audio encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}"
    )


class AudioDecoder:
    """Decodes one stream's chunks to 16 kHz, keeping resampler state across chunk boundaries.

    Resampling uses soxr's streaming resampler: it carries its filter history from one call to
    the next, so 100 ms chunks join without clicks, and it works on numpy arrays directly.
    """

    def __init__(self, *, encoding: str = "pcm_s16le", sample_rate: int = SAMPLE_RATE) -> None:
        check_format(encoding, sample_rate)
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._resampler: soxr.ResampleStream | None = None
        if sample_rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(
                sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )

    def matches(self, encoding: str, sample_rate: int) -> bool:
        return encoding == self.encoding and sample_rate == self.sample_rate

    def decode(self, audio: bytes) -> Samples:
        """One chunk -> float32 mono 16 kHz (the resampler may hold back a few ms)."""
        samples = decode_samples(audio, self.encoding)
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples), dtype=np.float32)

    def finish(self) -> Samples:
        """The samples the resampler still holds, at the end of the stream or a format change."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._resampler.clear()
        return np.asarray(tail, dtype=np.float32)
