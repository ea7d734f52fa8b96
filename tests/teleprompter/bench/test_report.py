"""Percentiles, distributions and the report's two faces (table and JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from teleprompter.bench.report import (
    BenchReport,
    Distribution,
    LlmCalls,
    Machine,
    ProcessUsage,
    Throughput,
    TurnCounts,
    budget,
    percentile,
)


def test_percentile_is_nearest_rank_and_always_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.5], 99) == 7.5


def test_percentile_refuses_no_values_and_out_of_range_ranks() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0-100"):
        percentile([1.0], 101)


def test_a_distribution_summarises_and_skips_nan() -> None:
    d = Distribution.of([10.0, 20.0, math.nan, 30.0, 40.0])
    assert d.count == 4
    assert (d.p50, d.p90, d.p99, d.max, d.mean) == (20.0, 40.0, 40.0, 40.0, 25.0)


def test_a_distribution_of_nothing_has_a_count_and_no_figures() -> None:
    d = Distribution.of([])
    assert d.count == 0
    assert d.p50 is None
    assert d.max is None


def test_a_budget_is_met_missed_or_unmeasured() -> None:
    assert budget("x", 30.0, 12.0).met is True
    assert budget("x", 30.0, 31.0).met is False
    assert budget("x", 30.0, None).met is None


def _report(**overrides: object) -> BenchReport:
    fields: dict[str, object] = {
        "mode": "transcript",
        "sessions": 3,
        "duration_s": 5.0,
        "warmup_s": 1.0,
        "seed": 0,
        "url": None,
        "llm_ttft_ms": 300.0,
        "machine": Machine.describe(),
        "settings": {"workers": 1},
        "turns": TurnCounts(
            planned=4, sent=4, answered=3, throttled=1, cancelled=0, lost=0, not_sent=0
        ),
        "end_to_end_ms": Distribution.of([310.0, 320.0, 330.0]),
        "llm_ttft_at_endpoint_ms": Distribution.of([300.0, 301.0, 302.0]),
        "overhead_ms": Distribution.of([10.0, 19.0, 28.0]),
        "overhead_unavailable": None,
        "stages_ms": {"gateway_in->worker_in": Distribution.of([2.0, 3.0])},
        "baseline_ms": Distribution.of([303.0, 304.0]),
        "baseline_llm_ttft_at_endpoint_ms": Distribution.of([300.0, 300.5]),
        "baseline_unavailable": None,
        "throughput": Throughput(turns_per_s=0.8, answered_per_s=0.6, deltas_per_s=20.0),
        "errors": {},
        "send_lag_ms": Distribution.of([0.5, 1.0]),
        "processes": [
            ProcessUsage(
                name="worker",
                pid=123,
                cpu_s=1.5,
                cpu_share_mean=0.3,
                cpu_share_peak=0.5,
                peak_rss_mb=90.0,
            )
        ],
        "budgets": [budget("overhead p50 ms", 30.0, 19.0)],
    }
    fields.update(overrides)
    return BenchReport(**fields)  # type: ignore[arg-type]


def test_the_json_report_round_trips_with_every_section(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    _report().write_json(path)
    data = json.loads(path.read_text())
    for key in (
        "sessions",
        "turns",
        "end_to_end_ms",
        "overhead_ms",
        "stages_ms",
        "baseline_ms",
        "throughput",
        "errors",
        "processes",
        "machine",
        "budgets",
    ):
        assert key in data, key
    assert data["turns"]["answered"] == 3
    assert data["overhead_ms"]["p50"] == 19.0
    assert data["processes"][0]["name"] == "worker"
    assert data["stages_ms"]["gateway_in->worker_in"]["count"] == 2


def test_the_table_shows_latencies_processes_budgets_and_why_something_is_missing() -> None:
    table = _report(
        overhead_ms=Distribution.of([]),
        overhead_unavailable="the LLM endpoint is not the simulator",
        errors={"connect: TimeoutError": 2},
    ).table()
    assert "end_to_end_ms" in table
    assert "baseline_ms" in table
    assert "overhead_ms unavailable: the LLM endpoint is not the simulator" in table
    assert "worker" in table
    assert "connect: TimeoutError 2" in table
    assert "budget overhead p50 ms: 19 (at most 30) met" in table


def test_llm_calls_show_streams_per_turn_and_how_speculations_ended(tmp_path: Path) -> None:
    calls = LlmCalls(
        streams=12,
        turns_sent=10,
        closed_early=2,
        speculations={"confirmed": 8, "speech": 2, "no_slot": 1},
    )
    assert calls.per_turn == 1.2
    assert calls.speculations_started == 10
    assert calls.confirmed_share == 0.8
    report = _report(llm_calls=calls, unpunctuated=1.0)
    table = report.table()
    assert "LLM: 12 suggestion streams for 10 turns sent (1.20 per turn), 2 closed early" in table
    assert "speculations: 10 started, 80.0% confirmed (confirmed 8, no_slot 1, speech 2)" in table
    assert "100% of customer lines typed unpunctuated" in table
    path = tmp_path / "report.json"
    report.write_json(path)
    data = json.loads(path.read_text())["llm_calls"]
    assert (data["per_turn"], data["confirmed_share"], data["speculations"]["speech"]) == (
        1.2,
        0.8,
        2,
    )


def test_without_speculations_the_llm_line_says_only_what_the_endpoint_saw() -> None:
    line = LlmCalls(streams=5, turns_sent=5, closed_early=0).line()
    assert line == "LLM: 5 suggestion streams for 5 turns sent (1.00 per turn), 0 closed early"
