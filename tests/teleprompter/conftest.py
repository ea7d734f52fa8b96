"""Fixtures of the shell's tests: recorded calls for the analysts' tools."""

from __future__ import annotations

import pytest

from tests.teleprompter.recorded_calls import RecordedCalls, new_recorded_calls


@pytest.fixture(scope="module")
def recorded_calls(bootstrap_servers: str) -> RecordedCalls:
    """Topics of their own for this test module, to record calls into."""
    return new_recorded_calls(bootstrap_servers)
