"""Benchmark of the speech recogniser: endpoint latency, accuracy, streams per worker process.

    python -m streams.asr.bench [--json FILE] [--silence-ms 150,200,300] [--streams 1,2,4,8]

On the espeak-ng corpus (`streams.asr.corpus`) it measures, with audio fed in real time:
end of speech -> final transcript latency per endpoint silence threshold; word error rate of
the streamed finals against the same model transcribing each whole file offline; utterances
split by false endpoints; and how many concurrent real-time streams one process sustains
before the latency p50 passes the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from core.settings import Settings
from schemas.events import AudioChunk
from streams.asr.audio import SAMPLE_RATE
from streams.asr.corpus import (
    Conversation,
    SpokenSentence,
    build_corpus,
    join_with_silence,
    word_error_rate,
)
from streams.asr.decoder import UtteranceDecoder
from streams.asr.model import load_whisper_model, resolve_model_source
from streams.asr.transcriber import (
    RecognizedText,
    RecognizerConfig,
    SpeechRecognitionEngine,
    default_decode_workers,
)

logger = logging.getLogger(__name__)

TARGET_P50_MS: Final = 250.0
CHUNK_MS: Final = 100
GAP_S: Final = 1.2


@dataclass
class RunResult:
    """One run: some streams fed in real time through one engine."""

    silence_ms: float
    streams: int
    utterances: int
    finals: int
    partials: int
    extra_finals: int
    missed: int
    wer: float
    latency_ms: dict[str, float]
    endpoint_to_final_ms: dict[str, float]
    cpu_cores_used: float
    max_feed_lag_ms: float
    latencies: list[float] = field(default_factory=list, repr=False)


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "n": 0}
    array = np.asarray(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 1),
        "p90": round(float(np.percentile(array, 90)), 1),
        "p99": round(float(np.percentile(array, 99)), 1),
        "n": len(values),
    }


def _conversations(corpus: Sequence[SpokenSentence], count: int) -> list[Conversation]:
    """`count` streams, each every sentence once, voices and orders rotated."""
    voices = sorted({s.voice.name for s in corpus})
    by_voice = {v: [s for s in corpus if s.voice.name == v] for v in voices}
    conversations = []
    for i in range(count):
        sentences = by_voice[voices[i % len(voices)]]
        shift = (i // len(voices)) % len(sentences)
        rotated = sentences[shift:] + sentences[:shift]
        conversations.append(join_with_silence(rotated, gap_s=GAP_S, lead_s=0.3 + 0.37 * i % 1))
    return conversations


def _assign(
    conversation: Conversation, finals: Sequence[RecognizedText]
) -> list[list[RecognizedText]]:
    """The finals whose speech ended within each sentence (a split sentence has several)."""
    out: list[list[RecognizedText]] = []
    for start, end in conversation.speech_spans:
        out.append(
            [
                f
                for f in finals
                if f.speech_end_ms is not None
                and start / 16 - 300 <= f.speech_end_ms <= end / 16 + 1000
            ]
        )
    return out


@dataclass
class _Received:
    """What one run produced: transcripts with their arrival (Unix ms) per stream."""

    texts: dict[str, list[tuple[float, RecognizedText]]] = field(default_factory=dict)
    starts_ms: dict[str, float] = field(default_factory=dict)
    feed_lags_ms: list[float] = field(default_factory=list)


async def run_streams(
    engine: SpeechRecognitionEngine,
    conversations: Sequence[Conversation],
    *,
    silence_ms: float,
    real_time: bool = True,
) -> RunResult:
    """Feed every conversation at once through `engine.accept`, paced like live audio."""
    received = _Received()

    async def collect() -> None:
        async for text in engine.results():
            arrival = time.time() * 1000.0
            received.texts.setdefault(text.conversation_id, []).append((arrival, text))

    collector = asyncio.create_task(collect())
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await asyncio.gather(
        *(
            _stream(engine, f"bench-{i}", c, received, delay_s=0.037 * i, real_time=real_time)
            for i, c in enumerate(conversations)
        )
    )
    await asyncio.wait_for(engine.wait_until_idle(), timeout=60)
    cpu = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    for text in engine.take_ready():  # produced after the collector's last turn
        received.texts.setdefault(text.conversation_id, []).append((time.time() * 1000.0, text))
    return _score(conversations, received, silence_ms=silence_ms, cpu=cpu)


async def _stream(
    engine: SpeechRecognitionEngine,
    name: str,
    conversation: Conversation,
    received: _Received,
    *,
    delay_s: float,
    real_time: bool,
) -> None:
    loop = asyncio.get_running_loop()
    pcm = (np.clip(conversation.audio, -1, 1) * 32767).astype("<i2").tobytes()
    step = SAMPLE_RATE * CHUNK_MS // 1000 * 2
    await asyncio.sleep(delay_s)  # streams do not tick in lockstep
    begin = loop.time()
    received.starts_ms[name] = time.time() * 1000.0
    for seq, offset in enumerate(range(0, len(pcm), step)):
        if real_time:
            late = loop.time() - (begin + (offset + step) / 2 / SAMPLE_RATE)
            if late < 0:
                await asyncio.sleep(-late)
            else:
                received.feed_lags_ms.append(late * 1000.0)
        chunk = AudioChunk(
            conversation_id=name,
            session_id=name,
            seq=seq,
            audio=pcm[offset : offset + step],
            end_of_stream=offset + step >= len(pcm),
        )
        await engine.accept(chunk)


def _score(
    conversations: Sequence[Conversation], received: _Received, *, silence_ms: float, cpu: float
) -> RunResult:
    latencies: list[float] = []
    endpoint_waits: list[float] = []
    refs: list[str] = []
    hyps: list[str] = []
    finals = partials = extra = missed = 0
    for index, conversation in enumerate(conversations):
        name = f"bench-{index}"
        got = received.texts.get(name, [])
        final_texts = [t for _, t in got if t.final]
        arrival = {id(t): at for at, t in got}
        finals += len(final_texts)
        partials += len(got) - len(final_texts)
        for (_, speech_end), sentence, mine in zip(
            conversation.speech_spans,
            conversation.sentences,
            _assign(conversation, final_texts),
            strict=True,
        ):
            refs.append(sentence.text)
            hyps.append(" ".join(t.text for t in mine))
            if not mine:
                missed += 1
                continue
            extra += len(mine) - 1
            last = mine[-1]
            latencies.append(arrival[id(last)] - (received.starts_ms[name] + speech_end / 16))
            if last.speech_end_wall_ms is not None:
                endpoint_waits.append(arrival[id(last)] - last.speech_end_wall_ms - silence_ms)
    return RunResult(
        silence_ms=silence_ms,
        streams=len(conversations),
        utterances=len(refs),
        finals=finals,
        partials=partials,
        extra_finals=extra,
        missed=missed,
        wer=round(word_error_rate(refs, hyps) * 100, 2),
        latency_ms=_percentiles(latencies),
        endpoint_to_final_ms=_percentiles(endpoint_waits),
        cpu_cores_used=round(cpu, 2),
        max_feed_lag_ms=round(max(received.feed_lags_ms, default=0.0), 1),
        latencies=latencies,
    )


def offline_wer(
    model: Any, decoder: UtteranceDecoder, corpus: Sequence[SpokenSentence]
) -> dict[str, float]:
    """WER of each whole file: faster-whisper's own transcribe, and our decoder on the file."""
    refs = [s.text for s in corpus]
    batch = []
    ours = []
    for sentence in corpus:
        segments, _ = model.transcribe(sentence.audio, language="en", vad_filter=False)
        batch.append(" ".join(segment.text for segment in segments))
        ours.append(decoder.decode(sentence.audio).text)
    return {
        "transcribe_beam5_whole_file": round(word_error_rate(refs, batch) * 100, 2),
        "utterance_decoder_whole_file": round(word_error_rate(refs, ours) * 100, 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cache = (
        Path(args.cache_dir) if args.cache_dir else Path(tempfile.gettempdir()) / "tp-asr-corpus"
    )
    corpus = build_corpus(cache_dir=cache)
    durations = [s.duration_s for s in corpus]
    print(
        f"corpus: {len(corpus)} utterances, {min(durations):.1f}-{max(durations):.1f} s, "
        f"{os.cpu_count()} CPUs"
    )
    workers = args.decode_workers or default_decode_workers("cpu")
    model = load_whisper_model(resolve_model_source(None), workers=workers)
    decoder = UtteranceDecoder(model)
    decoder.decode(np.zeros(SAMPLE_RATE, dtype=np.float32))
    report: dict[str, Any] = {"decode_workers": workers, "cpus": os.cpu_count()}

    report["offline_wer_pct"] = offline_wer(model, decoder, corpus)
    print(f"offline WER %: {report['offline_wer_pct']}")

    sweep = []
    for silence in args.silence_ms:
        engine = SpeechRecognitionEngine(
            decoder,
            config=RecognizerConfig(endpoint_silence_ms=silence),
            decode_workers=workers,
        )
        result = await run_streams(engine, _conversations(corpus, 3)[:1], silence_ms=silence)
        await engine.close()
        sweep.append(result)
        print(_line(result))
    report["silence_sweep"] = [_public(r) for r in sweep]

    load = []
    silence = args.load_silence_ms
    for count in args.streams:
        engine = SpeechRecognitionEngine(
            decoder,
            config=RecognizerConfig(endpoint_silence_ms=silence),
            decode_workers=workers,
        )
        result = await run_streams(engine, _conversations(corpus, count), silence_ms=silence)
        await engine.close()
        load.append(result)
        print(_line(result))
        if result.latency_ms["p50"] > TARGET_P50_MS * 2:
            break
    report["load"] = [_public(r) for r in load]
    sustained = [r.streams for r in load if r.latency_ms["p50"] <= TARGET_P50_MS and not r.missed]
    report["streams_sustained_p50_le_250ms"] = best = max(sustained, default=0)
    print(f"streams sustained with p50 <= {TARGET_P50_MS:.0f} ms: {best}")
    return report


def _public(result: RunResult) -> dict[str, Any]:
    data = asdict(result)
    data.pop("latencies")
    return data


def _line(r: RunResult) -> str:
    lat = r.latency_ms
    return (
        f"silence {r.silence_ms:>4.0f} ms  streams {r.streams:>2}  "
        f"speech end->final p50 {lat['p50']:>6.1f} p90 {lat['p90']:>6.1f} "
        f"p99 {lat['p99']:>6.1f} ms  "
        f"endpoint->final p50 {r.endpoint_to_final_ms['p50']:>6.1f}  WER {r.wer:>5.2f}%  "
        f"finals {r.finals}/{r.utterances} (+{r.extra_finals} split, {r.missed} missed)  "
        f"partials {r.partials}  cpu {r.cpu_cores_used:.2f}  feed lag {r.max_feed_lag_ms:.0f} ms"
    )


def _csv_numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.asr.bench", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--silence-ms", type=_csv_numbers, default=[150.0, 200.0, 300.0, 500.0])
    parser.add_argument("--load-silence-ms", type=float, default=None)
    parser.add_argument(
        "--streams", type=lambda t: [int(x) for x in _csv_numbers(t)], default=[1, 2, 4, 8, 16]
    )
    parser.add_argument("--decode-workers", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="where synthesised audio is kept")
    args = parser.parse_args(argv)
    if args.load_silence_ms is None:
        args.load_silence_ms = Settings().asr_endpoint_silence_ms
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
