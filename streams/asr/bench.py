"""Benchmark of the speech recogniser: accuracy per speech set, endpoint latency, capacity.

    python -m streams.asr.bench [--json FILE] [--sets own,held_out,recorded]
                                [--silence-ms 150] [--streams 1,4,8,16] [--offline]
                                [--revision-beam 5] [--prompt] [--hold-ms 150]
                                [--utterance-end-ms 600] [--partial-share 0.25]
                                [--accuracy-only | --load-only]

Speech sets (`streams.asr.corpus`): `own` (the corpus the recogniser was tuned on), `held_out`
(other sentences, other espeak-ng voices, variants and rates) and `recorded` (a person reading,
from Debian's pocketsphinx-testdata; skipped when not installed). For each set it measures:

- accuracy, fed as fast as decoding allows (decisions depend on the audio only, so this
  segments exactly as live audio would): WER of the text each sentence ends up with (after
  revisions: what the turn and the context use) and of the first final at the sentence's end
  (what the first suggestion starts from), sentences split into several segments, revisions;
- latency, fed in real time, one stream: true end of speech -> first final at that end, and
  -> each later revision (a revision that changes the words supersedes the suggestion);
- capacity (own set): concurrent real-time streams until the latency p50 passes the target,
  with the decodes each kind (final, revision, partial) took: jobs, calls, audio, busy time.
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

from schemas.events import AudioChunk
from streams.asr.audio import SAMPLE_RATE
from streams.asr.corpus import (
    Conversation,
    SpokenSentence,
    build_corpus,
    build_held_out,
    join_with_silence,
    recorded_speech,
    word_error_rate,
)
from streams.asr.decoder import UtteranceDecoder
from streams.asr.model import load_whisper_model, resolve_model_source
from streams.asr.transcriber import (
    PARTIAL_SHARE,
    RecognizedText,
    RecognizerConfig,
    SpeechRecognitionEngine,
    default_decode_workers,
)

logger = logging.getLogger(__name__)

TARGET_P50_MS: Final = 250.0
CHUNK_MS: Final = 100
GAP_S: Final = 1.2
_AT_END_MS: Final = 200.0
"""A final whose speech ends this close to the sentence's true end was made at that end."""
SETS: Final = ("own", "held_out", "recorded")


@dataclass
class RunResult:
    """One run: some streams fed through one engine, scored sentence by sentence."""

    silence_ms: float
    streams: int
    utterances: int
    finals: int
    partials: int
    revisions: int
    late_revisions: int
    split_sentences: int
    missed: int
    wer: float
    wer_first_final: float
    latency_ms: dict[str, float]
    revision_latency_ms: dict[str, float]
    cpu_cores_used: float
    max_feed_lag_ms: float
    revisions_dropped: int = 0
    decodes: dict[str, dict[str, float]] = field(default_factory=dict)
    wer_by_voice: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)
    worst: list[tuple[str, str]] = field(default_factory=list, repr=False)


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


def conversations_of(corpus: Sequence[SpokenSentence], count: int) -> list[Conversation]:
    """`count` streams, each every sentence of one voice once, voices and orders rotated."""
    voices = sorted({s.voice.name for s in corpus})
    by_voice = {v: [s for s in corpus if s.voice.name == v] for v in voices}
    conversations = []
    for i in range(count):
        sentences = by_voice[voices[i % len(voices)]]
        shift = (i // len(voices)) % len(sentences)
        rotated = sentences[shift:] + sentences[:shift]
        conversations.append(join_with_silence(rotated, gap_s=GAP_S, lead_s=0.3 + 0.37 * i % 1))
    return conversations


def _segments_of(
    conversation: Conversation, got: Sequence[tuple[float, RecognizedText]]
) -> list[list[list[tuple[float, RecognizedText]]]]:
    """Per sentence, its segments (one list of (arrival, final) per utterance id, in order).

    A segment belongs to the sentence its newest final's speech ended in.
    """
    by_segment: dict[str, list[tuple[float, RecognizedText]]] = {}
    for arrival, text in got:
        if text.final:
            by_segment.setdefault(text.utterance_id, []).append((arrival, text))
    out: list[list[list[tuple[float, RecognizedText]]]] = []
    for start, end in conversation.speech_spans:
        out.append(
            [
                finals
                for finals in by_segment.values()
                if finals[-1][1].speech_end_ms is not None
                and start / 16 - 300 <= finals[-1][1].speech_end_ms <= end / 16 + 1000
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
    # Fed as fast as possible, every stream's decodes queue at once: allow them time.
    await asyncio.wait_for(engine.wait_until_idle(), timeout=120 if real_time else 3600)
    cpu = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    for text in engine.take_ready():  # produced after the collector's last turn
        received.texts.setdefault(text.conversation_id, []).append((time.time() * 1000.0, text))
    result = _score(conversations, received, silence_ms=silence_ms, cpu=cpu)
    stats = engine.stats
    result.revisions_dropped = stats.revisions_dropped
    result.decodes = {kind: asdict(tally) for kind, tally in stats.decodes.items()}
    return result


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
    if real_time:
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
    revision_latencies: list[float] = []
    refs: list[str] = []
    hyps: list[str] = []
    first_hyps: list[str] = []
    worst: list[tuple[str, str]] = []
    by_voice: dict[str, tuple[list[str], list[str]]] = {}
    finals = partials = revisions = late = split = missed = 0
    for index, conversation in enumerate(conversations):
        name = f"bench-{index}"
        got = received.texts.get(name, [])
        finals += sum(1 for _, t in got if t.final)
        partials += sum(1 for _, t in got if not t.final)
        revisions += sum(1 for _, t in got if t.final and t.revision > 0)
        for (_, speech_end), sentence, segments in zip(
            conversation.speech_spans,
            conversation.sentences,
            _segments_of(conversation, got),
            strict=True,
        ):
            refs.append(sentence.text)
            hyps.append(" ".join(finals_[-1][1].text for finals_ in segments))
            voice_refs, voice_hyps = by_voice.setdefault(sentence.voice.name, ([], []))
            voice_refs.append(refs[-1])
            voice_hyps.append(hyps[-1])
            if not segments:
                missed += 1
                first_hyps.append("")
                continue
            split += len(segments) > 1
            end_ms = received.starts_ms[name] + speech_end / 16
            # The first final made at the sentence's end: what the first suggestion starts from.
            last = segments[-1]
            at_end = [
                (at, t)
                for at, t in last
                if t.speech_end_ms is not None and t.speech_end_ms >= speech_end / 16 - _AT_END_MS
            ]
            first = at_end[0] if at_end else last[-1]
            first_hyps.append(" ".join([s[-1][1].text for s in segments[:-1]] + [first[1].text]))
            latencies.append(first[0] - end_ms)
            for at, _ in last[last.index(first) + 1 :]:
                late += 1
                revision_latencies.append(at - end_ms)
            if hyps[-1] != sentence.text:
                worst.append((sentence.text, hyps[-1]))
    return RunResult(
        silence_ms=silence_ms,
        streams=len(conversations),
        utterances=len(refs),
        finals=finals,
        partials=partials,
        revisions=revisions,
        late_revisions=late,
        split_sentences=split,
        missed=missed,
        wer=round(word_error_rate(refs, hyps) * 100, 2),
        wer_first_final=round(word_error_rate(refs, first_hyps) * 100, 2),
        latency_ms=_percentiles(latencies),
        revision_latency_ms=_percentiles(revision_latencies),
        cpu_cores_used=round(cpu, 2),
        max_feed_lag_ms=round(max(received.feed_lags_ms, default=0.0), 1),
        wer_by_voice={
            voice: round(word_error_rate(r, h) * 100, 2) for voice, (r, h) in by_voice.items()
        },
        latencies=latencies,
        worst=worst,
    )


def offline_wer(
    model: Any, decoder: UtteranceDecoder, corpus: Sequence[SpokenSentence]
) -> dict[str, float]:
    """WER of each whole file: faster-whisper's own transcribe, and our decoder on the file."""
    refs = [s.text for s in corpus]
    batch = []
    greedy = []
    beam = []
    for sentence in corpus:
        segments, _ = model.transcribe(sentence.audio, language="en", vad_filter=False)
        batch.append(" ".join(segment.text for segment in segments))
        greedy.append(decoder.decode(sentence.audio).text)
        beam.append(decoder.decode(sentence.audio, beam_size=5).text)
    return {
        "transcribe_beam5_whole_file": round(word_error_rate(refs, batch) * 100, 2),
        "utterance_decoder_whole_file": round(word_error_rate(refs, greedy) * 100, 2),
        "utterance_decoder_beam5_whole_file": round(word_error_rate(refs, beam) * 100, 2),
    }


def speech_sets(names: Sequence[str], cache: Path) -> dict[str, list[SpokenSentence]]:
    sets: dict[str, list[SpokenSentence]] = {}
    for name in names:
        if name == "own":
            sets[name] = build_corpus(cache_dir=cache)
        elif name == "held_out":
            sets[name] = build_held_out(cache_dir=cache)
        elif name == "recorded":
            recorded = recorded_speech()
            if not recorded:
                print("recorded: skipped (apt-get install pocketsphinx-testdata)")
                continue
            sets[name] = recorded
        else:
            raise SystemExit(f"unknown speech set {name!r}; choose from {', '.join(SETS)}")
    return sets


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cache = (
        Path(args.cache_dir) if args.cache_dir else Path(tempfile.gettempdir()) / "tp-asr-corpus"
    )
    sets = speech_sets(args.sets, cache)
    workers = args.decode_workers or default_decode_workers("cpu")
    model = load_whisper_model(resolve_model_source(None), workers=workers)
    decoder = UtteranceDecoder(model)
    decoder.decode(np.zeros(SAMPLE_RATE, dtype=np.float32))
    print(f"{os.cpu_count()} CPUs, {workers} decode workers, load average {_loadavg()}")
    report: dict[str, Any] = {
        "decode_workers": workers,
        "cpus": os.cpu_count(),
        "load_average_at_start": _loadavg(),
        "config": {
            "revision_beam_size": args.revision_beam,
            "context_prompt": args.prompt,
            "hold_unfinished_ms": args.hold_ms,
            "utterance_end_silence_ms": args.utterance_end_ms,
            "partial_share": args.partial_share,
        },
        "sets": {},
    }

    def config(silence: float, real_time: bool) -> RecognizerConfig:
        return RecognizerConfig(
            # Fed as fast as possible, revisions queue far longer than live: keep them all,
            # so that accuracy does not depend on the machine's speed.
            revision_max_wait_s=2.0 if real_time else 1e9,
            endpoint_silence_ms=silence,
            hold_unfinished_ms=max(silence, args.hold_ms),
            utterance_end_silence_ms=max(silence, args.hold_ms, args.utterance_end_ms),
            revision_beam_size=args.revision_beam,
            context_prompt=args.prompt,
        )

    async def run(
        corpus: Sequence[SpokenSentence], count: int, silence: float, real_time: bool
    ) -> RunResult:
        engine = SpeechRecognitionEngine(
            decoder,
            config=config(silence, real_time),
            decode_workers=workers,
            partial_share=args.partial_share or None,
        )
        try:
            return await run_streams(
                engine, conversations_of(corpus, count), silence_ms=silence, real_time=real_time
            )
        finally:
            await engine.close()

    for name, corpus in [] if args.load_only else sets.items():
        voices = len({s.voice.name for s in corpus})
        entry: dict[str, Any] = {"utterances": len(corpus), "voices": voices}
        if args.offline:
            entry["offline_wer_pct"] = offline_wer(model, decoder, corpus)
            print(f"{name}: offline WER % {entry['offline_wer_pct']}")
        accuracy = await run(corpus, voices, args.silence_ms[0], False)
        entry["accuracy"] = _public(accuracy)
        print(f"{name:9s} accuracy  {_line(accuracy)}\n    WER by voice {accuracy.wer_by_voice}")
        for reference, heard in accuracy.worst[: args.show_errors]:
            print(f"    {reference!r}\n      -> {heard!r}")
        entry["latency"] = []
        for silence in [] if args.accuracy_only else args.silence_ms:
            result = await run(corpus, 1, silence, True)
            entry["latency"].append(_public(result))
            print(f"{name:9s} real time {_line(result)}  load {_loadavg()}")
        report["sets"][name] = entry

    load = []
    own = sets.get("own", [])
    for count in args.streams if own and not args.accuracy_only else []:
        result = await run(own, count, args.silence_ms[0], True)
        load.append(_public(result) | {"load_average": _loadavg()})
        print(f"own       load      {_line(result)}  load {_loadavg()}")
        print(f"    decodes {_decodes_line(result)}")
        if result.latency_ms["p50"] > TARGET_P50_MS * 2:
            break
    report["load"] = load
    sustained = [r["streams"] for r in load if r["latency_ms"]["p50"] <= TARGET_P50_MS]
    report["streams_sustained_p50_le_250ms"] = max(sustained, default=0)
    return report


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _public(result: RunResult) -> dict[str, Any]:
    data = asdict(result)
    data.pop("latencies")
    data.pop("worst")
    return data


def _line(r: RunResult) -> str:
    lat = r.latency_ms
    rev = r.revision_latency_ms
    return (
        f"silence {r.silence_ms:>4.0f} ms  streams {r.streams:>2}  WER {r.wer:>5.2f}% "
        f"(first final {r.wer_first_final:>5.2f}%)  "
        f"speech end->final p50 {lat['p50']:>6.1f} p90 {lat['p90']:>6.1f} ms  "
        f"->late revision p50 {rev['p50']:>6.1f} (n={rev['n']})  "
        f"split {r.split_sentences}/{r.utterances}  revisions {r.revisions} "
        f"(+{r.revisions_dropped} dropped)  "
        f"missed {r.missed}  partials {r.partials}  cpu {r.cpu_cores_used:.2f}  "
        f"feed lag {r.max_feed_lag_ms:.0f} ms"
    )


def _decodes_line(r: RunResult) -> str:
    return "  ".join(
        f"{kind} {d['jobs']:.0f} jobs/{d['calls']:.0f} calls {d['audio_s']:.0f} s audio "
        f"{d['busy_s']:.1f} s busy"
        for kind, d in r.decodes.items()
    )


def _csv_numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    defaults = RecognizerConfig()
    parser = argparse.ArgumentParser(prog="python -m streams.asr.bench", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--sets", type=lambda t: t.split(","), default=list(SETS))
    parser.add_argument("--silence-ms", type=_csv_numbers, default=[defaults.endpoint_silence_ms])
    parser.add_argument(
        "--streams", type=lambda t: [int(x) for x in _csv_numbers(t)], default=[1, 4, 8, 16]
    )
    parser.add_argument("--offline", action="store_true", help="also decode whole files")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--accuracy-only", action="store_true", help="no real-time runs")
    only.add_argument("--load-only", action="store_true", help="only the --streams runs (own set)")
    parser.add_argument("--revision-beam", type=int, default=defaults.revision_beam_size)
    parser.add_argument("--prompt", action="store_true", help="re-decode with context prompt")
    parser.add_argument("--hold-ms", type=float, default=defaults.hold_unfinished_ms)
    parser.add_argument("--utterance-end-ms", type=float, default=defaults.utterance_end_silence_ms)
    parser.add_argument(
        "--partial-share",
        type=float,
        default=PARTIAL_SHARE,
        help="decode seconds per second all partials may use; 0: no limit",
    )
    parser.add_argument("--show-errors", type=int, default=0)
    parser.add_argument("--decode-workers", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="where synthesised audio is kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
