"""The Twilio-format call the tests and the telephony figure use: G.711 mu-law, real speech."""

from __future__ import annotations

import numpy as np

from streams.asr.audio import decode_samples
from teleprompter.bench.twilio_call import CALL_RATE, call_speech, mulaw_encode


def test_mulaw_encoding_round_trips_through_the_recognisers_decoder() -> None:
    tone = 0.8 * np.sin(2 * np.pi * 440 * np.arange(CALL_RATE) / CALL_RATE)
    decoded = decode_samples(mulaw_encode(tone), "mulaw")
    assert len(decoded) == len(tone)
    # mu-law keeps about 2 % of full scale at worst (its largest step, near the peaks).
    assert np.max(np.abs(decoded - tone)) < 0.02
    assert mulaw_encode(np.zeros(3)) == b"\xff\xff\xff"  # G.711 silence


def test_call_speech_is_8khz_mulaw_with_its_end_of_speech() -> None:
    speech = call_speech("How much does the premium plan cost?")
    seconds = len(speech.audio) / CALL_RATE
    assert 1.0 < speech.speech_end_s <= seconds < 5.0
    loud = np.abs(decode_samples(speech.audio, "mulaw"))
    assert loud.max() > 0.2, "speech, not silence"
    assert loud[int(speech.speech_end_s * CALL_RATE) + 80 :].max(initial=0.0) <= 0.01
