"""Decoding and resampling of client audio."""

from __future__ import annotations

import av
import numpy as np
import pytest

from streams.asr.audio import SAMPLE_RATE, AudioDecoder, AudioFormatError, decode_samples
from tests.streams.asr.conftest import to_mulaw_8k


def test_pcm_s16le_decodes_to_float() -> None:
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    assert decode_samples(pcm, "pcm_s16le").tolist() == [0.0, 0.5, -1.0, 32767 / 32768]


def test_mulaw_matches_ffmpeg_for_every_byte() -> None:
    every_byte = bytes(range(256))
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.sample_rate = 8000
    codec.layout = "mono"
    frames = codec.decode(av.Packet(every_byte))
    expected = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    assert np.array_equal(decode_samples(every_byte, "mulaw") * 32768, expected)


def test_odd_byte_count_is_rejected() -> None:
    with pytest.raises(AudioFormatError, match="3 bytes of pcm_s16le is not a whole number"):
        AudioDecoder().decode(b"\x00\x01\x02")


def test_unknown_encoding_is_rejected_by_name() -> None:
    with pytest.raises(AudioFormatError, match="unknown audio encoding 'opus'"):
        AudioDecoder(encoding="opus")


@pytest.mark.parametrize("rate", [0, 12345, 44100, 10**9])
def test_sample_rate_outside_the_protocol_is_rejected(rate: int) -> None:
    with pytest.raises(AudioFormatError, match=f"unsupported sample rate {rate} Hz"):
        AudioDecoder(sample_rate=rate)


def test_eight_khz_stream_is_resampled_to_16_khz_without_seams() -> None:
    seconds = 1.0
    t = np.arange(int(8000 * seconds)) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    pcm = (tone * 32767).astype("<i2").tobytes()
    decoder = AudioDecoder(sample_rate=8000)
    pieces = [decoder.decode(pcm[i : i + 1600]) for i in range(0, len(pcm), 1600)]
    out = np.concatenate([*pieces, decoder.finish()])
    assert abs(len(out) - SAMPLE_RATE * seconds) <= 2
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(out[1000:-1000])
    assert abs(peak_hz - 440) < 5
    # No clicks at the 100 ms chunk joins: the signal stays a smooth sine everywhere.
    assert np.max(np.abs(np.diff(out[200:-200]))) < 2 * np.pi * 440 / SAMPLE_RATE * 0.5 * 1.1


def test_mulaw_telephony_round_trip_keeps_the_signal() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    decoder = AudioDecoder(encoding="mulaw", sample_rate=8000)
    out = np.concatenate([decoder.decode(to_mulaw_8k(tone)), decoder.finish()])
    assert abs(len(out) - len(tone)) <= 2
    middle = slice(2000, 14000)
    assert np.corrcoef(out[middle], tone[middle])[0, 1] > 0.99
