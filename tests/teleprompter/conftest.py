"""Fixtures of the shell's tests: recorded calls for the analysts' tools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.teleprompter.recorded_calls import RecordedCalls, delete_topics, new_recorded_calls


@pytest.fixture(scope="module")
def recorded_calls(bootstrap_servers: str) -> Iterator[RecordedCalls]:
    """Topics of their own for this test module, to record calls into (deleted after)."""
    calls = new_recorded_calls(bootstrap_servers)
    yield calls
    delete_topics(bootstrap_servers, prefix=f"{calls.settings.topic_prefix}.")
