"""Every DuckDB query in docs/analysts.md runs on a fresh export and gives the columns shown."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from tests.teleprompter.recorded_calls import RecordedCalls

DOC = Path(__file__).parents[3] / "docs" / "analysts.md"
QUERY_AND_OUTPUT = re.compile(r"```sql\n(.*?)```\s*```text\n(.*?)```", re.DOTALL)


def documented() -> list[tuple[str, list[str]]]:
    """(query, the column names its documented output shows), in the order of the doc."""
    pairs = []
    for query, output in QUERY_AND_OUTPUT.findall(DOC.read_text(encoding="utf-8")):
        header = output.splitlines()[1]  # the line under the box's top border
        pairs.append((query, [cell.strip() for cell in header.strip("│ ").split("│")]))
    return pairs


def test_the_doc_has_queries() -> None:
    assert len(documented()) >= 3


@pytest.fixture(scope="module")
def export_dir(recorded_calls: RecordedCalls, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The doc's examples name call-1002.
    for n, cid in enumerate(("call-1001", "call-1002")):
        recorded_calls.record(cid, minutes=1, audio=False, seed=n, ended_ago_s=200 - 90 * n)
    root = tmp_path_factory.mktemp("docs")
    result = recorded_calls.cli(
        "export", "--from", "-1h", "--to", "now", "-o", str(root / "export")
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize(("query", "columns"), documented(), ids=lambda v: str(v)[:40])
def test_a_documented_query_runs_on_a_real_export(
    export_dir: Path, query: str, columns: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(export_dir)

    result = duckdb.sql(query)

    assert result.columns == columns
    assert result.fetchall(), "the query found nothing in an export that has every kind of event"
