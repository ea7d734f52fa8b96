"""The benchmark's report: percentiles, typed results, and their table and JSON forms."""

from __future__ import annotations

import logging
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

logger = logging.getLogger(__name__)

Mode = Literal["transcript", "audio"]

REPORT_VERSION: Final = 1
PERCENTILES: Final = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`th percentile (0-100) by nearest rank: always one of the observed values."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """Summary of a set of measurements, in milliseconds; None fields when there were none."""

    count: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        data = [v for v in values if not math.isnan(v)]
        if not data:
            return cls(count=0)
        return cls(
            count=len(data),
            p50=round(percentile(data, 50), 2),
            p90=round(percentile(data, 90), 2),
            p99=round(percentile(data, 99), 2),
            max=round(max(data), 2),
            mean=round(sum(data) / len(data), 2),
        )


@dataclass(frozen=True, kw_only=True)
class TurnCounts:
    """What became of each customer sentence that should have made a turn."""

    planned: int
    sent: int
    answered: int  # a suggestion_delta arrived
    throttled: int  # the system said it was at capacity ("thinking")
    cancelled: int  # superseded by newer speech, or failed, before any token arrived
    lost: int  # no answer of any kind within the deadline
    not_sent: int  # the connection was gone before the line was due
    warmup: int = 0  # turns in the first `warmup_s`, left out of every figure above


@dataclass(frozen=True, kw_only=True)
class Throughput:
    turns_per_s: float
    answered_per_s: float
    deltas_per_s: float


@dataclass(frozen=True, kw_only=True)
class ProcessUsage:
    """One process over the measured window: CPU seconds, share of one core, memory."""

    name: str
    pid: int
    cpu_s: float
    cpu_share_mean: float  # cpu_s / wall seconds: 1.0 is one core fully busy
    cpu_share_peak: float  # the busiest sampling interval
    peak_rss_mb: float  # VmHWM: the most resident memory the process ever had
    # cpu_s per customer turn sent in the same window: the figure that survives a busy machine.
    cpu_ms_per_turn: float | None = None


@dataclass(frozen=True, kw_only=True)
class LlmCalls:
    """Suggestion streams the LLM endpoint served during the load, and how speculations ended."""

    streams: int  # streamed requests the endpoint received while the script played
    turns_sent: int
    closed_early: int  # streams the worker closed before their end (superseded, speculation)
    # How each speculation ended, summed over the workers' /metrics; empty when not known.
    speculations: Mapping[str, int] = field(default_factory=dict)

    @property
    def per_turn(self) -> float | None:
        return round(self.streams / self.turns_sent, 3) if self.turns_sent else None

    @property
    def speculations_started(self) -> int:
        """Speculations that asked the LLM (those refused a slot never did)."""
        return sum(n for outcome, n in self.speculations.items() if outcome != "no_slot")

    @property
    def confirmed_share(self) -> float | None:
        started = self.speculations_started
        return round(self.speculations.get("confirmed", 0) / started, 3) if started else None

    def line(self) -> str:
        per_turn = "-" if self.per_turn is None else f"{self.per_turn:.2f}"
        out = (
            f"LLM: {self.streams} suggestion streams for {self.turns_sent} turns sent "
            f"({per_turn} per turn), {self.closed_early} closed early"
        )
        if self.speculations:
            ended = ", ".join(
                f"{outcome} {n}" for outcome, n in sorted(self.speculations.items()) if n
            )
            share = "-" if self.confirmed_share is None else f"{self.confirmed_share:.1%}"
            out += (
                f"; speculations: {self.speculations_started} started, {share} confirmed "
                f"({ended or 'none'})"
            )
        return out


@dataclass(frozen=True, kw_only=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    platform: str
    load_average_at_start: tuple[float, float, float]
    # Latency figures only mean something on a quiet machine: this says whether it stayed so.
    load_average_at_end: tuple[float, float, float] | None = None

    @classmethod
    def describe(cls) -> Machine:
        return cls(
            cpus=os.cpu_count() or 0,
            cpu_model=_cpu_model(),
            memory_gib=round(_memory_kib() / 1024 / 1024, 1),
            python=platform.python_version(),
            platform=platform.platform(),
            load_average_at_start=_load_average(),
        )

    def ended(self) -> Machine:
        """This description with the load average as the run ends."""
        return replace(self, load_average_at_end=_load_average())


@dataclass(frozen=True, kw_only=True)
class BudgetCheck:
    """A target from the issue and whether this run met it (information, never a test)."""

    name: str
    limit: float
    value: float | None
    met: bool | None  # None: not measured in this run


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    """Everything one run measured; `to_json()` and `table()` are its two faces."""

    mode: Mode
    sessions: int
    duration_s: float
    warmup_s: float  # the first seconds of the script: played, not measured
    seed: int
    url: str | None  # None: the bench started the system itself
    llm_ttft_ms: float | None  # the simulator's configured time to first token, if ours
    machine: Machine
    settings: Mapping[str, Any]
    turns: TurnCounts
    # Client's final chunk (or end of speech) -> first suggestion_delta at the client.
    end_to_end_ms: Distribution
    # The LLM's time to first token as the endpoint measured it, for the same turns.
    llm_ttft_at_endpoint_ms: Distribution
    # End to end minus the endpoint's time to first token: what our pipes cost.
    overhead_ms: Distribution
    overhead_unavailable: str | None
    # Per pipeline stage, from suggestion_complete.timings, plus the derived parts.
    stages_ms: Mapping[str, Distribution]
    # The same prompts straight to the same endpoint from this process: the floor.
    baseline_ms: Distribution
    baseline_llm_ttft_at_endpoint_ms: Distribution
    baseline_unavailable: str | None
    throughput: Throughput
    errors: Mapping[str, int]
    # How late the bench itself sent lines against the script: is the load generator keeping up?
    send_lag_ms: Distribution
    processes: Sequence[ProcessUsage]
    budgets: Sequence[BudgetCheck]
    notes: Sequence[str] = field(default_factory=tuple)
    # Every answered turn: (planned second of its final chunk, end to end ms, overhead ms).
    samples: Sequence[tuple[float, float | None, float | None]] = field(default_factory=tuple)
    # Share of customer lines typed without punctuation (`--unpunctuated`).
    unpunctuated: float = 0.0
    # None when the LLM endpoint does not report its requests (it is not the simulator).
    llm_calls: LlmCalls | None = None
    version: int = REPORT_VERSION

    def to_json(self) -> dict[str, Any]:
        report = asdict(self)
        if self.llm_calls is not None:
            report["llm_calls"].update(
                per_turn=self.llm_calls.per_turn,
                speculations_started=self.llm_calls.speculations_started,
                confirmed_share=self.llm_calls.confirmed_share,
            )
        return report

    def write_json(self, path: Path) -> None:
        import json  # noqa: PLC0415  # only this method needs it

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def table(self) -> str:
        """The report for a terminal: latencies, stages, counts, processes, budgets."""
        out: list[str] = []
        where = self.url or "system started by the bench"
        ttft = f", LLM simulator TTFT {self.llm_ttft_ms:g} ms" if self.llm_ttft_ms else ""
        out.append(
            f"teleprompter bench: {self.mode} mode, {self.sessions} sessions, "
            f"{self.duration_s:g} s, {where}{ttft}"
        )
        m = self.machine
        at_end = "" if m.load_average_at_end is None else f", at end {m.load_average_at_end[0]:.2f}"
        out.append(
            f"machine: {m.cpus} x {m.cpu_model}, {m.memory_gib:g} GiB, Python {m.python}, "
            f"load average at start {m.load_average_at_start[0]:.2f}{at_end}"
        )
        t = self.turns
        out.append(
            f"turns: {t.planned} planned, {t.sent} sent, {t.answered} answered, "
            f"{t.throttled} throttled, {t.cancelled} cancelled, {t.lost} lost, "
            f"{t.not_sent} not sent (after {self.warmup_s:g} s of warm-up: {t.warmup} turns)"
        )
        if self.unpunctuated:
            out.append(f"script: {self.unpunctuated:.0%} of customer lines typed unpunctuated")
        if self.llm_calls is not None:
            out.append(self.llm_calls.line())
        tp = self.throughput
        out.append(
            f"throughput: {tp.turns_per_s:.1f} turns/s sent, {tp.answered_per_s:.1f} answered/s, "
            f"{tp.deltas_per_s:.0f} deltas/s received"
        )
        out.append("")
        rows = [
            ("end_to_end_ms", self.end_to_end_ms),
            ("llm_ttft_at_endpoint_ms", self.llm_ttft_at_endpoint_ms),
            ("overhead_ms", self.overhead_ms),
            ("baseline_ms", self.baseline_ms),
            ("baseline_llm_ttft_at_endpoint", self.baseline_llm_ttft_at_endpoint_ms),
            ("bench send lag", self.send_lag_ms),
        ]
        out += _distribution_table("latency (ms)", rows)
        if self.overhead_unavailable:
            out.append(f"overhead_ms unavailable: {self.overhead_unavailable}")
        if self.baseline_unavailable:
            out.append(f"baseline_ms unavailable: {self.baseline_unavailable}")
        out.append("")
        out += _distribution_table("stage (ms)", list(self.stages_ms.items()))
        out.append("")
        width = max([len(p.name) for p in self.processes] + [7])
        out.append(
            f"{'process'.ljust(width)}  {'pid':>7}  {'cpu s':>8}  {'cores':>6}  "
            f"{'peak':>6}  {'peak RSS MB':>11}  {'cpu ms/turn':>11}"
        )
        for p in self.processes:
            per_turn = "-" if p.cpu_ms_per_turn is None else f"{p.cpu_ms_per_turn:.1f}"
            out.append(
                f"{p.name.ljust(width)}  {p.pid:>7}  {p.cpu_s:>8.1f}  {p.cpu_share_mean:>6.2f}  "
                f"{p.cpu_share_peak:>6.2f}  {p.peak_rss_mb:>11.0f}  {per_turn:>11}"
            )
        if self.errors:
            out.append("")
            out.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())))
        if self.budgets:
            out.append("")
            for b in self.budgets:
                verdict = {True: "met", False: "MISSED", None: "not measured"}[b.met]
                value = "-" if b.value is None else f"{b.value:g}"
                out.append(f"budget {b.name}: {value} (at most {b.limit:g}) {verdict}")
        for note in self.notes:
            out.append(f"note: {note}")
        return "\n".join(out)


def _distribution_table(title: str, rows: Sequence[tuple[str, Distribution]]) -> list[str]:
    width = max([len(name) for name, _ in rows] + [len(title)])
    lines = [
        f"{title.ljust(width)}  {'n':>6}  {'p50':>8}  {'p90':>8}  {'p99':>8}  {'max':>8}",
    ]
    for name, d in rows:
        cells = [_cell(v) for v in (d.p50, d.p90, d.p99, d.max)]
        lines.append(f"{name.ljust(width)}  {d.count:>6}  " + "  ".join(cells))
    return lines


def _cell(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.1f}"


def budget(name: str, limit: float, value: float | None) -> BudgetCheck:
    met = None if value is None else value <= limit
    return BudgetCheck(name=name, limit=limit, value=value, met=met)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)
