"""A repeated warning is logged once per interval, with the count of the ones held back."""

from __future__ import annotations

import logging

import pytest

from gateway.throttled_log import ThrottledWarning

logger = logging.getLogger("tests.throttled")


def test_a_burst_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    warning = ThrottledWarning("events not stored", logger=logger, interval_s=3600.0)

    with caplog.at_level(logging.WARNING, logger="tests.throttled"):
        for n in range(100):
            warning.note(f"failure {n}")

    assert [r.getMessage() for r in caplog.records] == ["events not stored: failure 0"]


def test_the_next_line_counts_what_was_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warning = ThrottledWarning(
        "kafka producer", logger=logger, interval_s=5.0, clock=lambda: now[0]
    )

    with caplog.at_level(logging.WARNING, logger="tests.throttled"):
        warning.note("down")
        now[0] = 1.0
        warning.note("down")
        warning.note("down")
        now[0] = 5.0
        warning.note("up again")

    assert [r.getMessage() for r in caplog.records] == [
        "kafka producer: down",
        "kafka producer: up again (and 2 more since the last report)",
    ]
