"""Timeline entries as JSON lines (everything, for tools) or a table (the gist, for people)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from teleprompter.conversations.timeline import (
    AUDIO_UTTERANCE,
    DELTA_RUN,
    UNDECODABLE,
    TimelineEntry,
)
from teleprompter.event_log.times import format_time

logger = logging.getLogger(__name__)

OutputFormat = Literal["jsonl", "table"]

TTFT_STAGES: Final = ("llm_request", "llm_first_token")
LLM_STAGES: Final = ("llm_request", "llm_done")
TABLE_HEADER: Final = ("TIME", "ELAPSED", "EVENT", "SOURCE", "DETAIL")
_WHAT_WIDTH: Final = 12


def entry_json(entry: TimelineEntry) -> str:
    """One JSON object: when, what, where in Kafka, and the decoded event."""
    line: dict[str, Any] = {
        "at": format_time(entry.at_ms),
        "type": entry.type,
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
    }
    if entry.last_offset is not None:
        line["last_offset"] = entry.last_offset
        line["records"] = entry.records
    line["event"] = entry.fields
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def stage_gap_ms(trace: Mapping[str, float], stages: tuple[str, str]) -> float | None:
    """Milliseconds between two trace stages, when both were stamped."""
    start, end = (trace.get(stage) for stage in stages)
    return None if start is None or end is None else round(end - start, 1)


class TableWriter:
    """Fixed-width lines, so a followed call prints as it comes; elapsed time from `origin_ms`."""

    def __init__(self, *, origin_ms: int, source_width: int = 24) -> None:
        self.origin_ms = origin_ms
        self.source_width = source_width

    def header(self) -> str:
        time, elapsed, what, source, detail = TABLE_HEADER
        return (
            f"{time:<12}  {elapsed:>9}  {what:<{_WHAT_WIDTH}}  "
            f"{source:<{self.source_width}}  {detail}"
        )

    def line(self, entry: TimelineEntry) -> str:
        clock = format_time(entry.at_ms)[11:23]
        elapsed = _elapsed(entry.at_ms - self.origin_ms)
        what, detail = describe(entry)
        return (
            f"{clock:<12}  {elapsed:>9}  {what:<{_WHAT_WIDTH}}  "
            f"{source(entry):<{self.source_width}}  {detail}"
        ).rstrip()


def source(entry: TimelineEntry) -> str:
    """topic[partition]@offset, or @first..last for a run of records."""
    where = f"{entry.topic}[{entry.partition}]@{entry.offset}"
    if entry.last_offset is not None and entry.last_offset != entry.offset:
        where += f"..{entry.last_offset}"
    return where


def describe(entry: TimelineEntry) -> tuple[str, str]:
    """A short name for the entry and one line of what it says."""
    render = _RENDERERS.get(entry.type)
    if render is None:
        return entry.type, _generic(entry.fields)
    return render(entry.fields)


# --- one renderer per entry type ----------------------------------------------------------------
def _transcript(f: Mapping[str, Any]) -> tuple[str, str]:
    if f.get("end_of_conversation"):
        return "end", "end of conversation"
    state = "" if f.get("final", True) else " [partial]"
    return "transcript", f"{f.get('speaker')} ({f.get('source')}){state}: {f.get('text', '')}"


def _turn(f: Mapping[str, Any]) -> tuple[str, str]:
    return "turn", f"{f.get('turn_id')} ({f.get('reason')}): {f.get('text', '')}"


def _suggestion(f: Mapping[str, Any]) -> tuple[str, str]:
    kind = str(f.get("kind"))
    trace = f.get("trace") or {}
    parts = [str(f.get("turn_id"))]
    if (ttft := stage_gap_ms(trace, TTFT_STAGES)) is not None:
        parts.append(f"ttft {ttft:.0f} ms")
    if (total := (f.get("timings") or {}).get("total")) is not None:
        parts.append(f"total {total:.0f} ms")
    if f.get("reason"):
        parts.append(f"({f['reason']})")
    text = f.get("text") or f.get("full_text") or ""
    if kind == "delta":
        text = repr(f.get("text", ""))
        parts.insert(1, f"seq {f.get('seq')}")
    return kind, " ".join(parts) + (f": {text}" if text else "")


def _delta_run(f: Mapping[str, Any]) -> tuple[str, str]:
    resent = f", {f['resent']} re-sent" if f.get("resent") else ""
    return (
        "deltas",
        f"{f.get('turn_id')} {f.get('deltas')} deltas over {f.get('streamed_ms')} ms{resent}: "
        f"{f.get('text', '')}",
    )


def _audio(f: Mapping[str, Any]) -> tuple[str, str]:
    duration = f.get("duration_ms")
    length = "?" if duration is None else f"{duration / 1000:.2f} s"
    end = ", end of stream" if f.get("end_of_stream") else ""
    return (
        "audio",
        f"{f.get('speaker')} {length}, {f.get('chunks')} chunks, {f.get('bytes'):,} B, "
        f"{f.get('encoding')} {f.get('sample_rate')} Hz{end}",
    )


def _summary(f: Mapping[str, Any]) -> tuple[str, str]:
    covers = f.get("covers_until_ms")
    until = format_time(covers)[11:23] if isinstance(covers, int) and covers >= 0 else "?"
    return "summary", f"after {f.get('turn_count')} turns, to {until}: {f.get('summary', '')}"


def _route(f: Mapping[str, Any]) -> tuple[str, str]:
    state = "connected to" if f.get("connected") else "left"
    return (
        "route",
        f"{state} {f.get('gateway_id')} (replies on {f.get('reply_topic')}), "
        f"session {f.get('session_id')}",
    )


def _profile(f: Mapping[str, Any]) -> tuple[str, str]:
    return "profile", str(f.get("profile_json", ""))


def _undecodable(f: Mapping[str, Any]) -> tuple[str, str]:
    return "undecodable", str(f.get("reason"))


def _generic(fields: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in fields.items() if k not in ("conversation_id", "trace")}
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())


_RENDERERS: Final[Mapping[str, Callable[[Mapping[str, Any]], tuple[str, str]]]] = {
    "TranscriptSegment": _transcript,
    "Turn": _turn,
    "SuggestionEvent": _suggestion,
    "ConversationSummary": _summary,
    "SessionRoute": _route,
    "CustomerProfile": _profile,
    AUDIO_UTTERANCE: _audio,
    DELTA_RUN: _delta_run,
    UNDECODABLE: _undecodable,
}


def _elapsed(ms: int) -> str:
    sign = "-" if ms < 0 else "+"
    ms = abs(ms)
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    clock = f"{minutes}:{ms / 1000:06.3f}"
    return f"{sign}{hours}:{minutes:02d}:{ms / 1000:06.3f}" if hours else f"{sign}{clock}"
