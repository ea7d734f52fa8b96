"""p50/p99 against concurrent sessions from `teleprompter bench --json` reports, as a PNG.

    python -m teleprompter.bench.plot runs/*.json -o docs/bench-latency.png

Needs matplotlib (`pip install -e .[bench]`); without it, says so and exits 2. Reports of the
same mode and session count (repeated runs) are plotted as their median.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

EXIT_UNAVAILABLE: Final = 2
OVERHEAD_P50_BUDGET_MS: Final = 30.0
OVERHEAD_P99_BUDGET_MS: Final = 100.0
AUDIO_P50_BUDGET_MS: Final = 600.0
AUDIO_P99_BUDGET_MS: Final = 900.0


@dataclass(frozen=True, kw_only=True)
class Point:
    """One session count: medians over the reports that measured it."""

    sessions: int
    e2e_p50: float | None
    e2e_p99: float | None
    overhead_p50: float | None
    overhead_p99: float | None
    baseline_p50: float | None
    baseline_p99: float | None
    runs: int


def load_points(paths: Sequence[Path], *, label: str | None = None) -> dict[str, list[Point]]:
    """Reports grouped into series (mode, plus worker count when not 1), sorted by sessions."""
    grouped: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        report = json.loads(path.read_text())
        workers = report.get("settings", {}).get("workers", 1)
        series = label or report["mode"] + (f", {workers} workers" if workers != 1 else "")
        grouped[series][int(report["sessions"])].append(report)
    return {
        series: [_point(n, reports) for n, reports in sorted(by_n.items())]
        for series, by_n in grouped.items()
    }


def _point(sessions: int, reports: list[dict[str, Any]]) -> Point:
    def median(section: str, field: str) -> float | None:
        values = [r[section][field] for r in reports if r[section].get(field) is not None]
        return statistics.median(values) if values else None

    return Point(
        sessions=sessions,
        e2e_p50=median("end_to_end_ms", "p50"),
        e2e_p99=median("end_to_end_ms", "p99"),
        overhead_p50=median("overhead_ms", "p50"),
        overhead_p99=median("overhead_ms", "p99"),
        baseline_p50=median("baseline_ms", "p50"),
        baseline_p99=median("baseline_ms", "p99"),
        runs=len(reports),
    )


def plot(series: dict[str, list[Point]], output: Path, *, title: str) -> None:
    """Two panels: end to end (with the baseline) and overhead (with its budget), log y."""
    import matplotlib  # noqa: PLC0415  # optional: only plotting needs it

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415  # after choosing the backend

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, points in series.items():
        xs = [p.sessions for p in points]
        left.plot(xs, [p.e2e_p50 for p in points], "o-", label=f"{name}: end to end p50")
        left.plot(xs, [p.e2e_p99 for p in points], "s--", label=f"{name}: end to end p99")
        left.plot(xs, [p.baseline_p50 for p in points], ":", label=f"{name}: baseline p50")
        right.plot(xs, [p.overhead_p50 for p in points], "o-", label=f"{name}: overhead p50")
        right.plot(xs, [p.overhead_p99 for p in points], "s--", label=f"{name}: overhead p99")
    if all(name.startswith("audio") for name in series):
        left.axhline(AUDIO_P50_BUDGET_MS, color="green", lw=0.8, label="p50 budget 600 ms")
        left.axhline(AUDIO_P99_BUDGET_MS, color="red", lw=0.8, label="p99 budget 900 ms")
        left.set_title("end of speech -> first suggestion_delta")
    else:
        right.axhline(OVERHEAD_P50_BUDGET_MS, color="green", lw=0.8, label="p50 budget 30 ms")
        right.axhline(OVERHEAD_P99_BUDGET_MS, color="red", lw=0.8, label="p99 budget 100 ms")
        left.set_title("client's final chunk -> first suggestion_delta")
    right.set_title("overhead: end to end minus the LLM's TTFT at the endpoint")
    for axis in (left, right):
        axis.set_xlabel("concurrent conversations")
        axis.set_ylabel("ms")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench --json files")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/bench-latency.png"))
    parser.add_argument("--title", default="teleprompter bench: latency against load")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401, PLC0415  # only checking that it is there
    except ImportError:
        print(
            "teleprompter.bench.plot needs matplotlib: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    series = load_points(args.reports)
    plot(series, args.output, title=args.title)
    for name, points in series.items():
        for p in points:
            print(
                f"{name:>24}  {p.sessions:>5} sessions  e2e p50 {_ms(p.e2e_p50)} "
                f"p99 {_ms(p.e2e_p99)}  overhead p50 {_ms(p.overhead_p50)} "
                f"p99 {_ms(p.overhead_p99)}  ({p.runs} runs)"
            )
    print(f"wrote {args.output}")
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
