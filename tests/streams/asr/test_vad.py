"""Silero VAD over a stream fed in chunks."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from streams.asr.corpus import SpokenSentence
from streams.asr.vad import WINDOW_SAMPLES, StreamingVad

pytestmark = pytest.mark.slow  # espeak-ng speech through the Silero model


def test_chunked_stream_gets_the_whole_file_probabilities(corpus: list[SpokenSentence]) -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), corpus[0].audio])
    whole = len(audio) // WINDOW_SAMPLES * WINDOW_SAMPLES
    expected = np.asarray(get_vad_model()(audio[:whole])).reshape(-1)
    vad = StreamingVad()
    got = np.concatenate([vad.process(audio[i : i + 1600]) for i in range(0, len(audio), 1600)])
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert vad.pending_samples == len(audio) - whole


def test_speech_and_silence_are_told_apart(corpus: list[SpokenSentence]) -> None:
    sentence = corpus[1]
    audio = np.concatenate([np.zeros(16000, np.float32), sentence.audio])
    probabilities = StreamingVad().process(audio)
    silence = probabilities[: 16000 // WINDOW_SAMPLES - 1]
    first = (16000 + sentence.speech_start) // WINDOW_SAMPLES
    last = (16000 + sentence.speech_end) // WINDOW_SAMPLES
    speech = probabilities[first:last]
    assert silence.max() < 0.1
    assert np.mean(speech > 0.5) > 0.7
