"""The recogniser benchmark's measuring code, run on two sentences without real-time pacing."""

from __future__ import annotations

import pytest

from streams.asr.bench import run_streams
from streams.asr.corpus import SpokenSentence, join_with_silence
from streams.asr.transcriber import RecognizerConfig, SpeechRecognitionEngine

pytestmark = pytest.mark.slow  # the real Whisper model


async def test_run_streams_counts_finals_and_errors(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    bench_engine = SpeechRecognitionEngine(
        engine.decoder, config=RecognizerConfig(endpoint_silence_ms=300), decode_workers=1
    )
    try:
        conversation = join_with_silence([corpus[0], corpus[3]], gap_s=1.0)
        result = await run_streams(bench_engine, [conversation], silence_ms=300, real_time=False)
    finally:
        await bench_engine.close()
    assert result.utterances == 2
    assert result.finals >= 2
    assert result.finals == 2 + result.revisions
    assert result.missed == 0
    assert result.split_sentences == 0
    assert result.wer <= 15
    assert result.wer_first_final <= 20
    assert result.latency_ms["n"] == 2
    assert result.wer_by_voice == {corpus[0].voice.name: result.wer}
    assert set(result.decodes) == {"final", "revision", "partial"}
    assert result.decodes["final"]["jobs"] >= 2  # one per sentence at least
    assert result.decodes["final"]["audio_s"] >= conversation.speech_spans[0][1] / 16000 / 2
