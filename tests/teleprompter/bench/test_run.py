"""The smoke bench: `teleprompter bench` against the session's broker writes a well-formed report.

Latency figures are never asserted here (they belong to docs/benchmarks.md); only that the
report is complete and that, under a light load, every turn got its answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

SMOKE_TIMEOUT_S = 120.0


@pytest.mark.slow
async def test_the_smoke_bench_reports_every_section_and_loses_nothing(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    report_path = tmp_path / "bench.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_BASE_URL", "OPENAI_API_KEY"} and not k.startswith("TELEPROMPTER_")
    }
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    env["TELEPROMPTER_DATA_DIR"] = str(tmp_path / "data")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "bench",
        "--sessions",
        "3",
        "--duration",
        "5",
        "--llm-ttft-ms",
        "50",
        "--json",
        str(report_path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SMOKE_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text

    assert "end_to_end_ms" in text and "baseline_ms" in text  # the table was printed
    report = json.loads(report_path.read_text())
    assert report["mode"] == "transcript"
    assert report["sessions"] == 3
    turns = report["turns"]
    assert turns["planned"] > 0
    assert turns["sent"] == turns["planned"]
    assert turns["answered"] == turns["sent"]
    assert turns["lost"] == turns["throttled"] == turns["cancelled"] == 0
    assert report["warmup_s"] == 1.0  # a fifth of a 5 s run
    assert len(report["samples"]) == turns["answered"] + turns["warmup"]
    assert report["errors"] == {}
    for section in ("end_to_end_ms", "overhead_ms", "llm_ttft_at_endpoint_ms", "baseline_ms"):
        distribution = report[section]
        assert distribution["count"] == turns["answered"], section
        assert set(distribution) >= {"p50", "p90", "p99", "max"}
        assert distribution["p50"] <= distribution["p99"] <= distribution["max"], section
    assert report["overhead_unavailable"] is None
    assert "gateway_in->worker_in" in report["stages_ms"]
    assert "llm_request->llm_first_token" in report["stages_ms"]
    # Every customer line ends a sentence: no turn waits for a pause, so nothing is speculated.
    assert report["settings"]["speculative_suggestions"] is True
    calls = report["llm_calls"]
    assert calls["streams"] == calls["turns_sent"] == turns["sent"] + turns["warmup"]
    assert calls["speculations_started"] == 0
    names = {p["name"] for p in report["processes"]}
    assert {"worker", "gateway", "llm-sim", "bench"} <= names
    assert "broker" not in names  # the session's broker was given: none was started
    assert all(p["peak_rss_mb"] > 0 for p in report["processes"])
    assert report["machine"]["cpus"] >= 1
    assert {b["name"] for b in report["budgets"]} >= {"overhead p50 ms", "lost turns"}
