"""The suite's Kafka switch: which tests are Kafka-facing, found without a list to keep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tests_reaching_bootstrap_servers_through_any_fixture_are_marked_kafka() -> None:
    collected = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "kafka"),
            *("tests/streams/test_app.py", "tests/core/test_settings.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    selected = [line for line in collected.stdout.splitlines() if "::" in line]

    # rep_client -> system -> bootstrap_servers
    assert (
        "tests/streams/test_app.py::test_a_customer_sentence_streams_deltas_in_order_then_complete"
        in selected
    ), collected.stdout
    assert not [test for test in selected if test.startswith("tests/core/test_settings.py")]
