"""Fixtures shared by the whole suite: the session's Kafka, unique topic names.

The session's Kafka is chosen by `--kafka-backend` or TELEPROMPTER_TEST_KAFKA_BACKEND:
`embedded` (the default: our broker on a thread) or `apache` (a single-node Apache Kafka started
for the session by teleprompter.apache_kafka). KAFKA_BOOTSTRAP_SERVERS overrides both: an
external cluster, and nothing is started.

Every test that uses `bootstrap_servers`, directly or through other fixtures, is Kafka-facing:
it is marked `kafka` at collection, and `-m kafka` selects exactly those.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Final, Literal, cast

import pytest

from broker import BrokerThread
from teleprompter.apache_kafka.cluster import ApacheKafkaCluster

KafkaBackend = Literal["embedded", "apache"]
KAFKA_BACKENDS: Final[tuple[KafkaBackend, ...]] = ("embedded", "apache")
BACKEND_ENV: Final = "TELEPROMPTER_TEST_KAFKA_BACKEND"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka-backend",
        choices=KAFKA_BACKENDS,
        default=None,
        help=f"the session's Kafka: embedded (default) or apache; also {BACKEND_ENV}. "
        "KAFKA_BOOTSTRAP_SERVERS overrides both (an external Kafka).",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "bootstrap_servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


def pytest_sessionstart(session: pytest.Session) -> None:
    """On the apache backend, fetch its jars before any test: a missing `java` or `mvn`, or an
    unreachable Maven Central, stops the run with one line instead of failing every test."""
    if kafka_backend(session.config) != "apache" or external_bootstrap_servers() is not None:
        return
    from teleprompter.apache_kafka.artifacts import (  # noqa: PLC0415  # apache backend only
        ApacheKafkaError,
        MissingToolError,
        ensure_artifacts,
    )

    try:
        ensure_artifacts()
    except ApacheKafkaError as exc:
        pytest.exit(
            f"--kafka-backend apache: {exc}",
            returncode=2 if isinstance(exc, MissingToolError) else 1,
        )


def kafka_backend(config: pytest.Config) -> KafkaBackend:
    chosen = config.getoption("--kafka-backend") or os.environ.get(BACKEND_ENV, "").strip()
    if not chosen:
        return "embedded"
    if chosen not in KAFKA_BACKENDS:
        raise pytest.UsageError(f"{BACKEND_ENV} must be one of {KAFKA_BACKENDS}, got {chosen!r}")
    return cast(KafkaBackend, chosen)


def external_bootstrap_servers() -> str | None:
    """KAFKA_BOOTSTRAP_SERVERS when the suite should run against an external Kafka."""
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


@pytest.fixture(scope="session")
def embedded_broker(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerThread | None]:
    """The session's embedded broker on its own thread and loop; None on any other Kafka.

    It runs off the test event loop so that blocking clients (confluent-kafka polls) can be
    used from async tests without deadlocking it.
    """
    if external_bootstrap_servers() is not None or kafka_backend(pytestconfig) != "embedded":
        yield None
        return
    runner = BrokerThread(data_dir=tmp_path_factory.mktemp("broker"))
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="session")
async def apache_kafka(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ApacheKafkaCluster | None]:
    """The session's single-node Apache Kafka on the apache backend; None otherwise."""
    if external_bootstrap_servers() is not None or kafka_backend(pytestconfig) != "apache":
        yield None
        return
    # Kafka's own JVM flags: slower to start than `quick-start`, but a session's worth of
    # clients polling it then costs the machine less CPU (see teleprompter/apache_kafka/jvm.py).
    async with ApacheKafkaCluster(
        nodes=1, data_dir=tmp_path_factory.mktemp("apache-kafka"), profile="server"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def bootstrap_servers(
    embedded_broker: BrokerThread | None, apache_kafka: ApacheKafkaCluster | None
) -> str:
    """host:port of the Kafka every test in the session talks to."""
    if embedded_broker is not None:
        return embedded_broker.bootstrap_servers
    if apache_kafka is not None:
        return apache_kafka.bootstrap_servers
    external = external_bootstrap_servers()
    assert external is not None
    return external


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic/group-safe name unique to this test (tests share one broker)."""
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"{test}-{uuid.uuid4().hex[:8]}"


# The whole system (gateway, worker, LLM simulator) on the session's broker, and clients for it.
from tests.system_fixtures import rep_client, system  # noqa: E402, F401  # fixtures by import
