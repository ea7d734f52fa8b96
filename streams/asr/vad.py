"""Silero voice-activity detection over a live stream, one speech probability per 32 ms window."""

from __future__ import annotations

import logging
from typing import Any, Final

import numpy as np
from faster_whisper.vad import get_vad_model
from numpy.typing import NDArray

from streams.asr.audio import Samples

logger = logging.getLogger(__name__)

WINDOW_SAMPLES: Final = 512
"""Silero's window at 16 kHz (32 ms)."""
_CONTEXT_SAMPLES: Final = 64
_STATE_SHAPE: Final = (1, 1, 128)


class StreamingVad:
    """Speech probabilities for one stream, fed in chunks of any length.

    faster-whisper ships Silero VAD (ONNX) but only runs it over whole files, resetting the
    model's recurrent state each call. This keeps that state (and the 64 samples of context each
    window sees from the one before) between calls, so a stream fed 100 ms at a time gets the
    same probabilities as the whole file at once. The ONNX session is shared by every stream of
    the process (onnxruntime allows concurrent runs); only the small state is per stream.
    """

    def __init__(self) -> None:
        self._session: Any = get_vad_model().session
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def pending_samples(self) -> int:
        """Samples fed but not yet part of a complete window."""
        return len(self._pending)

    def process(self, samples: Samples) -> NDArray[np.float32]:
        """Feed samples; return the probability of each window they complete (maybe none).

        Blocking (about 50 us per window): call it off the event loop.
        """
        audio = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        whole = len(audio) // WINDOW_SAMPLES * WINDOW_SAMPLES
        self._pending = np.array(audio[whole:], dtype=np.float32)
        if not whole:
            return np.zeros(0, dtype=np.float32)
        windows = np.asarray(audio[:whole], dtype=np.float32).reshape(-1, WINDOW_SAMPLES)
        contexts = np.concatenate([self._context[None], windows[:-1, -_CONTEXT_SAMPLES:]])
        self._context = windows[-1, -_CONTEXT_SAMPLES:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(probs, dtype=np.float32).reshape(-1)
