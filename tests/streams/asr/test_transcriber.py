"""Streaming recognition with the real model on espeak-ng speech, fed in 100 ms frames.

Frames are fed as fast as the recogniser takes them while the clock they carry advances as in
real time; the recogniser decides on audio positions only, so this segments as a live stream.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from schemas.events import AudioChunk
from streams.asr.audio import SAMPLE_RATE, AudioFormatError, Samples
from streams.asr.corpus import (
    VOICES,
    Conversation,
    SpokenSentence,
    join_with_silence,
    speak,
    word_error_rate,
    words,
)
from streams.asr.decoder import Transcription
from streams.asr.scheduler import DecodeJob, DecodePriority, DecodeScheduler
from streams.asr.transcriber import (
    AsrCapacityError,
    RecognizedText,
    RecognizerConfig,
    SpeechRecognitionEngine,
    StreamingRecognizer,
)
from tests.streams.asr.conftest import from_mulaw_8k, to_mulaw_8k, to_pcm_s16le, with_pause
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # the real Whisper model

FRAME_MS = 100
T0_MS = 1_700_000_000_000.0
WER_LIMIT = 0.15


async def send_audio(
    engine: SpeechRecognitionEngine,
    conversation_id: str,
    audio: bytes,
    *,
    encoding: str = "pcm_s16le",
    sample_rate: int = SAMPLE_RATE,
    end: bool = True,
) -> None:
    """The audio as the gateway produces it: 100 ms chunks, the last one marked end of stream."""
    bytes_per_frame = sample_rate * FRAME_MS // 1000 * (2 if encoding == "pcm_s16le" else 1)
    for seq, offset in enumerate(range(0, len(audio), bytes_per_frame)):
        last = offset + bytes_per_frame >= len(audio)
        await engine.accept(
            AudioChunk(
                conversation_id=conversation_id,
                session_id=f"{conversation_id}-session",
                seq=seq,
                encoding=encoding,  # type: ignore[arg-type]  # bad values are under test
                sample_rate=sample_rate,
                audio=audio[offset : offset + bytes_per_frame],
                end_of_stream=end and last,
            ),
            now_ms=T0_MS + (seq + 1) * FRAME_MS,
        )


async def feed(recognizer: StreamingRecognizer, audio: Samples, *, start_ms: float = 0.0) -> None:
    frame = SAMPLE_RATE * FRAME_MS // 1000
    for offset in range(0, len(audio), frame):
        now = T0_MS + start_ms + (offset + frame) * 1000 / SAMPLE_RATE
        await recognizer.feed(audio[offset : offset + frame], now_ms=now)


def newest(finals: Sequence[RecognizedText]) -> list[RecognizedText]:
    """Each segment's newest final (its latest revision), in the order segments began."""
    latest: dict[str, RecognizedText] = {}
    for final in finals:
        latest[final.utterance_id] = final
    return list(latest.values())


def by_conversation(texts: Sequence[RecognizedText], conversation_id: str) -> list[RecognizedText]:
    return [t for t in texts if t.conversation_id == conversation_id]


def finals_per_sentence(
    conversation: Conversation, finals: Sequence[RecognizedText]
) -> list[list[RecognizedText]]:
    """Each sentence's finals: those whose audio lies within its speech (plus pauses)."""
    spans = [(s * 1000 / SAMPLE_RATE, e * 1000 / SAMPLE_RATE) for s, e in conversation.speech_spans]
    assigned: list[list[RecognizedText]] = [[] for _ in spans]
    for final in finals:
        assert final.speech_end_ms is not None
        owners = [i for i, (s, e) in enumerate(spans) if s - 400 <= final.speech_end_ms <= e + 400]
        assert len(owners) == 1, f"final {final.text!r} does not belong to exactly one sentence"
        assigned[owners[0]].append(final)
    return assigned


def streamed_wer(
    conversations: Sequence[Conversation], results: Sequence[RecognizedText], ids: Sequence[str]
) -> float:
    references: list[str] = []
    hypotheses: list[str] = []
    for conversation, conversation_id in zip(conversations, ids, strict=True):
        finals = newest([t for t in by_conversation(results, conversation_id) if t.final])
        for sentence, mine in zip(
            conversation.sentences, finals_per_sentence(conversation, finals), strict=True
        ):
            assert mine, f"no final for {sentence.text!r} ({sentence.voice.name})"
            references.append(sentence.text)
            hypotheses.append(" ".join(t.text for t in mine))
    return word_error_rate(references, hypotheses)


def voices(corpus: Sequence[SpokenSentence]) -> list[list[SpokenSentence]]:
    names = sorted({s.voice.name for s in corpus})
    return [[s for s in corpus if s.voice.name == name] for name in names]


async def transcribe_each_voice(
    engine: SpeechRecognitionEngine, speech: Sequence[SpokenSentence], name: str
) -> tuple[list[Conversation], list[str], list[RecognizedText]]:
    """One stream per voice, all at once: the conversations, their ids and every transcript."""
    conversations = [join_with_silence(group) for group in voices(speech)]
    ids = [f"{name}-{i}" for i in range(len(conversations))]
    await asyncio.gather(
        *(
            send_audio(engine, cid, to_pcm_s16le(c.audio))
            for cid, c in zip(ids, conversations, strict=True)
        )
    )
    await asyncio.wait_for(engine.wait_until_idle(), 180)
    return conversations, ids, engine.take_ready()


async def test_streamed_corpus_is_transcribed_within_15_percent_wer(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    conversations, ids, results = await transcribe_each_voice(engine, corpus, "wer")

    wer = streamed_wer(conversations, results, ids)
    assert wer <= WER_LIMIT
    finals = [t for t in results if t.final]
    assert len(newest(finals)) == len(corpus)  # a comma pause never splits a sentence
    for final in finals:
        assert final.session_id == f"{final.conversation_id}-session"
        assert final.speaker == "customer"
        assert final.speech_end_wall_ms == pytest.approx(T0_MS + final.speech_end_ms, abs=1)


async def test_telephony_mulaw_8khz_is_as_accurate_as_offline_decoding(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    # Narrowband espeak speech is hard for tiny.en (fricatives live above 4 kHz): offline, whole
    # files score ~25-35% WER. The telephony path must lose nothing on top of that.
    groups = voices(corpus)[:2]
    conversations = [join_with_silence(group) for group in groups]
    ids = [f"mulaw-{i}" for i in range(len(conversations))]
    await asyncio.gather(
        *(
            send_audio(engine, cid, to_mulaw_8k(c.audio), encoding="mulaw", sample_rate=8000)
            for cid, c in zip(ids, conversations, strict=True)
        )
    )
    await asyncio.wait_for(engine.wait_until_idle(), 180)
    streamed = streamed_wer(conversations, engine.take_ready(), ids)

    sentences = [s for group in groups for s in group]
    offline = word_error_rate(
        [s.text for s in sentences],
        [engine.decoder.decode(from_mulaw_8k(to_mulaw_8k(s.audio))).text for s in sentences],
    )
    assert offline < 0.45
    assert streamed <= offline + 0.05


async def test_a_300ms_endpoint_gives_one_final_per_sentence(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    conversation = join_with_silence(voices(corpus)[0])
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    recognizer = engine.open_recognizer(
        "one-each", results=results, config=RecognizerConfig(endpoint_silence_ms=300)
    )
    await feed(recognizer, conversation.audio)
    await recognizer.flush()
    texts = [results.get_nowait() for _ in range(results.qsize())]
    for n, partial in enumerate(texts):
        # A partial never shows after a final that already covers its audio.
        assert partial.final or not any(
            f.final and f.utterance_id == partial.utterance_id and f.end_ms >= partial.end_ms
            for f in texts[:n]
        )
    finals = [t for t in texts if t.final]
    assert [len(mine) for mine in finals_per_sentence(conversation, newest(finals))] == [1] * 10


async def test_partials_arrive_while_a_long_utterance_is_spoken(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    sentence = max(voices(corpus)[1], key=lambda s: s.duration_s)  # en-us, 7 s
    audio = np.concatenate([sentence.audio, np.zeros(SAMPLE_RATE, np.float32)])
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    recognizer = engine.open_recognizer(
        "partials", results=results, config=RecognizerConfig(endpoint_silence_ms=600)
    )
    expected = words(sentence.text)

    async def partial_beyond(ms: float) -> RecognizedText:
        """The next partial covering audio beyond `ms` (older ones may still come first)."""
        while True:
            text = await asyncio.wait_for(results.get(), timeout=30)
            assert not text.final
            if text.end_ms > ms:
                return text

    early = sentence.speech_start + SAMPLE_RATE * 3 // 2
    await feed(recognizer, audio[:early])
    first = await partial_beyond(0)
    later = sentence.speech_start + 3 * SAMPLE_RATE  # mid-word: "every time I open"
    await feed(recognizer, audio[early:later], start_ms=early * 1000 / SAMPLE_RATE)
    second = await partial_beyond(early * 1000 / SAMPLE_RATE)
    assert recognizer.in_utterance
    assert first.utterance_id == second.utterance_id
    heard = words(second.text)
    assert len(heard) > len(words(first.text)) >= 1
    assert heard[:2] == expected[:2]  # the tail of a partial may be a word cut in half

    fed = later
    await feed(recognizer, audio[fed:], start_ms=fed * 1000 / SAMPLE_RATE)
    await recognizer.flush()
    rest = [results.get_nowait() for _ in range(results.qsize())]
    finals = newest([t for t in rest if t.final])
    assert len(finals) == 1
    assert finals[0].utterance_id == first.utterance_id
    offline = word_error_rate([sentence.text], [engine.decoder.decode(sentence.audio).text])
    assert word_error_rate([sentence.text], [finals[0].text]) <= offline + 0.05


async def test_silence_and_noise_make_no_transcript(engine: SpeechRecognitionEngine) -> None:
    rng = np.random.default_rng(5)
    audio = np.concatenate(
        [
            np.zeros(3 * SAMPLE_RATE, np.float32),
            rng.normal(0, 0.02, 3 * SAMPLE_RATE).astype(np.float32),
            np.clip(rng.normal(0, 0.3, 3 * SAMPLE_RATE), -1, 1).astype(np.float32),
            np.zeros(SAMPLE_RATE, np.float32),
        ]
    )
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    recognizer = engine.open_recognizer("quiet", results=results)
    await feed(recognizer, audio)
    await recognizer.flush()
    assert results.empty()
    assert recognizer.buffered_samples <= 0.3 * SAMPLE_RATE  # only the pre-roll is kept


async def test_bad_audio_is_rejected_and_the_stream_goes_on(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    sentence = corpus[2]
    good = to_pcm_s16le(np.concatenate([sentence.audio, np.zeros(SAMPLE_RATE, np.float32)]))
    half = len(good) // 2 // 3200 * 3200
    await send_audio(engine, "bad-audio", good[:half], end=False)

    def chunk(**fields: object) -> AudioChunk:
        values: dict[str, object] = {
            "conversation_id": "bad-audio",
            "session_id": "bad-audio-session",
            "seq": 99,
            "audio": b"\x00\x00" * 800,
        }
        values.update(fields)
        return AudioChunk(**values)  # type: ignore[arg-type]

    with pytest.raises(AudioFormatError, match="3 bytes of pcm_s16le"):
        await engine.accept(chunk(audio=b"\x01\x02\x03"))
    with pytest.raises(AudioFormatError, match="unknown audio encoding 'opus'"):
        await engine.accept(chunk(encoding="opus"))
    with pytest.raises(AudioFormatError, match="unsupported sample rate 96001 Hz"):
        await engine.accept(chunk(sample_rate=96001))
    with pytest.raises(AudioFormatError, match="unknown audio encoding"):
        await engine.accept(chunk(conversation_id="bad-from-the-start", encoding="flac"))

    await send_audio(engine, "bad-audio", good[half:])
    await asyncio.wait_for(engine.wait_until_idle(), 180)
    finals = newest([t for t in by_conversation(engine.take_ready(), "bad-audio") if t.final])
    assert word_error_rate([sentence.text], [" ".join(t.text for t in finals)]) <= WER_LIMIT


async def test_speech_cut_off_by_the_end_of_stream_is_finalised(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    sentence = corpus[5]
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    recognizer = engine.open_recognizer("cut-off", results=results)
    await feed(recognizer, sentence.audio[: sentence.speech_end])
    assert results.empty()
    await recognizer.flush()
    final = results.get_nowait()
    assert final.final
    assert word_error_rate([sentence.text], [final.text]) <= 0.2


async def test_an_utterance_without_pauses_is_cut_at_the_length_cap(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    sentence = max(corpus, key=lambda s: s.duration_s)
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    config = RecognizerConfig(endpoint_silence_ms=2000, max_utterance_s=2.0)
    recognizer = engine.open_recognizer("capped", results=results, config=config)
    frame = SAMPLE_RATE * FRAME_MS // 1000
    largest = 0
    for offset in range(0, len(sentence.audio), frame):
        await recognizer.feed(sentence.audio[offset : offset + frame], now_ms=T0_MS + offset / 16)
        largest = max(largest, recognizer.buffered_samples)
    await recognizer.flush()
    finals = [t for t in (results.get_nowait() for _ in range(results.qsize())) if t.final]
    assert len(finals) >= 3
    assert all(f.end_ms - f.start_ms <= 2000 + FRAME_MS for f in finals)
    assert largest <= 2.5 * SAMPLE_RATE


async def test_an_idle_stream_is_finalised_and_released(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    idle_engine = SpeechRecognitionEngine(engine.decoder, idle_release_s=0.2, decode_workers=1)
    try:
        sentence = corpus[8]
        speech = to_pcm_s16le(sentence.audio[: sentence.speech_end])
        await send_audio(idle_engine, "goes-quiet", speech, end=False)
        assert idle_engine.stats.streams == 1
        await asyncio.wait_for(idle_engine.wait_until_idle(), 30)
        finals = newest([t for t in idle_engine.take_ready() if t.final])
        assert len(finals) == 1
        assert word_error_rate([sentence.text], [finals[0].text]) <= 0.2
    finally:
        await idle_engine.close()


async def test_speech_cut_off_by_a_stopped_microphone_is_finalised_while_the_stream_lives(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    config = RecognizerConfig(audio_gap_endpoint_s=0.3)
    gap_engine = SpeechRecognitionEngine(engine.decoder, config=config, decode_workers=1)
    try:
        sentence = corpus[8]  # one breath: no pause long enough to end it early
        speech = to_pcm_s16le(sentence.audio[: sentence.speech_end])
        await send_audio(gap_engine, "mic-stopped", speech, end=False)
        final = await asyncio.wait_for(gap_engine.next_result(), 30)
        while not final.final:
            final = await asyncio.wait_for(gap_engine.next_result(), 30)
        assert gap_engine.stats.streams == 1, "the stream stays open for more audio"
        assert word_error_rate([sentence.text], [final.text]) <= 0.2
    finally:
        await gap_engine.close()


async def test_streams_beyond_capacity_are_refused(engine: SpeechRecognitionEngine) -> None:
    small = SpeechRecognitionEngine(engine.decoder, max_streams=1, decode_workers=1)
    try:
        silence = b"\x00\x00" * 1600
        await send_audio(small, "first", silence, end=False)
        with pytest.raises(AsrCapacityError, match="already recognises 1 audio streams"):
            await send_audio(small, "second", silence, end=False)
        await send_audio(small, "first", silence, end=True)
        await asyncio.wait_for(small.wait_until_idle(), 30)
        await send_audio(small, "second", silence, end=True)
    finally:
        await small.close()


async def test_closing_with_a_flush_finalises_speech_in_progress(
    engine: SpeechRecognitionEngine, corpus: list[SpokenSentence]
) -> None:
    closing = SpeechRecognitionEngine(engine.decoder, decode_workers=1)
    sentence = corpus[5]  # no comma: one utterance
    await send_audio(
        closing, "closing", to_pcm_s16le(sentence.audio[: sentence.speech_end]), end=False
    )
    await closing.close(flush_timeout_s=30)
    finals = newest([t for t in closing.take_ready() if t.final])
    assert len(finals) == 1
    assert finals[0].conversation_id == "closing"


# --- revisions ------------------------------------------------------------------------------

FIRST_HALF = "We are thinking about upgrading to the premium plan"
SECOND_HALF = "but the price is a concern."


async def test_a_comma_length_pause_continues_the_utterance_and_revises_it_whole(
    engine: SpeechRecognitionEngine,
) -> None:
    first, second = (speak(text, VOICES[0]) for text in (FIRST_HALF, SECOND_HALF))
    audio = with_pause(first, second, pause_s=0.4)
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    recognizer = engine.open_recognizer("comma-pause", results=results)
    await feed(recognizer, audio)
    await recognizer.flush()
    finals = [t for t in (results.get_nowait() for _ in range(results.qsize())) if t.final]

    assert len({f.utterance_id for f in finals}) == 1, [f.text for f in finals]
    assert [f.revision for f in finals] == list(range(len(finals)))
    assert len(finals) >= 2, "a final at the pause, then the whole sentence"
    assert len(words(finals[0].text)) < len(words(finals[-1].text))
    whole = f"{FIRST_HALF}, {SECOND_HALF}"
    assert word_error_rate([whole], [finals[-1].text]) <= 0.2, finals[-1].text


async def test_held_out_speech_is_transcribed_whole_within_20_percent_wer(
    engine: SpeechRecognitionEngine, held_out: list[SpokenSentence]
) -> None:
    conversations, ids, results = await transcribe_each_voice(engine, held_out, "held-out")
    finals = [t for t in results if t.final]
    assert len(newest(finals)) == len(held_out), "one segment per sentence, commas or not"
    assert streamed_wer(conversations, results, ids) <= 0.2


async def test_a_final_without_a_sentence_end_is_held_until_the_longer_pause(
    corpus: list[SpokenSentence],
) -> None:
    def unfinished(audio: Samples, prompt: str = "", *, beam_size: int = 1) -> Transcription:
        return Transcription(
            text="so we were thinking",
            no_speech_prob=0.0,
            avg_logprob=-0.1,
            audio_s=len(audio) / SAMPLE_RATE,
            decode_ms=0.0,
            is_speech=True,
        )

    sentence = corpus[5]
    speech = sentence.audio[sentence.speech_start : sentence.speech_end]
    pause = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([speech, pause, speech, np.zeros(SAMPLE_RATE, dtype=np.float32)])
    second_speech_ends_ms = (2 * len(speech) + len(pause)) * 1000 / SAMPLE_RATE

    async def speech_ends(hold_ms: float) -> list[float | None]:
        scheduler = DecodeScheduler(unfinished, workers=1)
        results: asyncio.Queue[RecognizedText] = asyncio.Queue()
        with ThreadPoolExecutor(max_workers=1) as vad:
            recognizer = StreamingRecognizer(
                conversation_id=f"hold-{hold_ms}",
                scheduler=scheduler,
                vad_executor=vad,
                results=results,
                config=RecognizerConfig(hold_unfinished_ms=hold_ms, revision_beam_size=0),
            )
            await feed(recognizer, audio)
            await recognizer.flush()
        await scheduler.close()
        texts = [results.get_nowait() for _ in range(results.qsize())]
        return [t.speech_end_ms for t in texts if t.final]

    [at_the_pause] = await speech_ends(150.0)  # the default: nothing held
    [held] = await speech_ends(450.0)
    assert at_the_pause is not None and at_the_pause < second_speech_ends_ms - 500
    assert held is not None and abs(held - second_speech_ends_ms) < 300


async def test_a_pause_is_speculated_on_and_its_endpoint_confirms_that_decode_in_its_place(
    corpus: list[SpokenSentence],
) -> None:
    """Pauses are decoded speculatively (behind every final someone waits for, so under load a
    pause that speech resumes after costs no decode); the endpoint confirms the last one,
    which then goes before finals asked for after it."""
    audio = with_pause(corpus[0], corpus[1], pause_s=0.1)
    gate = threading.Event()
    decoded: list[int] = []

    def decode(audio: Samples, prompt: str = "", *, beam_size: int = 1) -> Transcription:
        gate.wait(timeout=30)
        decoded.append(len(audio))
        return Transcription(
            text=f"{len(audio)} samples.",
            no_speech_prob=0.0,
            avg_logprob=-0.1,
            audio_s=len(audio) / SAMPLE_RATE,
            decode_ms=0.0,
            is_speech=True,
        )

    scheduler = DecodeScheduler(decode, workers=1)
    finals: list[tuple[DecodeJob, bool]] = []
    submit = scheduler.submit

    def spy(audio: Samples, priority: DecodePriority, **kwargs: Any) -> DecodeJob:
        job = submit(audio, priority, **kwargs)
        if priority is DecodePriority.FINAL:
            finals.append((job, job.speculative))
        return job

    def confirmed() -> list[DecodeJob]:
        return [job for job, speculative in finals if speculative and not job.speculative]

    scheduler.submit = spy  # type: ignore[method-assign]  # watching what the recogniser asks
    results: asyncio.Queue[RecognizedText] = asyncio.Queue()
    blocker = submit(np.zeros(160, dtype=np.float32), DecodePriority.PARTIAL)
    await wait_until(lambda: scheduler.busy == 1, what="the only thread to be taken")
    with ThreadPoolExecutor(max_workers=1) as vad:
        recognizer = StreamingRecognizer(
            conversation_id="confirmed",
            scheduler=scheduler,
            vad_executor=vad,
            results=results,
            config=RecognizerConfig(revision_beam_size=0),
        )

        async def speak_and_end() -> None:
            await feed(recognizer, audio)
            await recognizer.flush()

        speaking = asyncio.create_task(speak_and_end())
        await wait_until(lambda: len(confirmed()) == 1, what="the endpoint to confirm a decode")
        other_stream = submit(np.zeros(320, dtype=np.float32), DecodePriority.FINAL)
        gate.set()
        await asyncio.wait_for(asyncio.gather(blocker.future, other_stream.future, speaking), 30)
    await scheduler.close()

    [endpoint] = confirmed()
    assert len(finals) > 1, "pauses inside the sentence were speculated on too"
    assert all(job.cancelled for job, _ in finals if job is not endpoint), "none decoded"
    assert decoded[:3] == [160, len(endpoint.audio), 320]  # then partials, if any
    [final] = [t for t in (results.get_nowait() for _ in range(results.qsize())) if t.final]
    assert final.text == f"{len(endpoint.audio)} samples."
