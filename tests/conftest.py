"""Fixtures shared by the whole suite: one Kafka broker per test session, unique topic names."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from broker import BrokerThread


def external_bootstrap_servers() -> str | None:
    """KAFKA_BOOTSTRAP_SERVERS when the suite should run against an external Kafka."""
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerThread | None]:
    """The session's embedded broker on its own thread and loop; None with an external Kafka.

    It runs off the test event loop so that blocking clients (confluent-kafka polls) can be
    used from async tests without deadlocking it.
    """
    if external_bootstrap_servers() is not None:
        yield None
        return
    runner = BrokerThread(data_dir=tmp_path_factory.mktemp("broker"))
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def bootstrap_servers(embedded_broker: BrokerThread | None) -> str:
    """host:port of the Kafka every test in the session talks to."""
    if embedded_broker is None:
        external = external_bootstrap_servers()
        assert external is not None
        return external
    return embedded_broker.bootstrap_servers


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic/group-safe name unique to this test (tests share one broker)."""
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"{test}-{uuid.uuid4().hex[:8]}"


# The whole system (gateway, worker, LLM simulator) on the session's broker, and clients for it.
from tests.system_fixtures import rep_client, system  # noqa: E402, F401  # fixtures by import
