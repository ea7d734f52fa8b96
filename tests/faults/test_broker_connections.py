"""Issue 12 finding 7: connections to the embedded broker end; metadata storms create nothing.

Before: connections had no idle or header timeouts, and a metadata request naming 2,000
unknown topics auto-created all of them (then 57 s and 94 s stalls for the next batches).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.protocol.fetch import FetchRequest_v4

from broker import BrokerThread, hostile
from core.settings import Settings
from tests.broker.helpers import create_topic
from tests.faults.broker_fixtures import Bystander, address, start_broker

pytestmark = pytest.mark.slow

IDLE_S = 1.0
READ_S = 1.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerThread]:
    yield from start_broker(
        tmp_path_factory.mktemp("broker"), idle_timeout_s=IDLE_S, request_read_timeout_s=READ_S
    )


def test_an_idle_connection_is_closed(broker: BrokerThread) -> None:
    with socket.create_connection(address(broker), timeout=30) as sock:
        assert hostile.closed_by_broker(sock, timeout_s=30)


def test_a_request_whose_bytes_stop_arriving_is_dropped(broker: BrokerThread) -> None:
    """A byte every quarter second never counts as idle, but the frame never completes."""
    assert hostile.slowloris(address(broker), byte_every_s=READ_S / 4, timeout_s=30)


def test_a_slow_frame_does_not_hold_up_the_others(broker: BrokerThread) -> None:
    bystander = Bystander(broker.bootstrap_servers)
    closed: list[bool] = []
    slow = threading.Thread(
        target=lambda: closed.append(
            hostile.slowloris(address(broker), byte_every_s=READ_S / 4, timeout_s=30)
        )
    )
    slow.start()
    while slow.is_alive():
        bystander.round_trip()
        slow.join(0.05)
    bystander.close()
    assert closed == [True]


def test_a_parked_fetch_longer_than_the_idle_timeout_is_not_idle(broker: BrokerThread) -> None:
    """A fetch waiting on an empty partition is a request in flight: it is answered, not cut."""
    topic = create_topic(broker.bootstrap_servers, "parked")
    max_wait_ms = int(IDLE_S * 3000)
    fetch = FetchRequest_v4(-1, max_wait_ms, 1, 1 << 20, 0, [(topic, [(0, 0, 1 << 20)])])
    answer = hostile.metadata_answer(address(broker), hostile.frame(1, 4, fetch.encode()))
    response = FetchRequest_v4.RESPONSE_TYPE.decode(answer[4:])
    assert response.topics[0][0] == topic


def test_auto_create_is_off_by_default() -> None:
    assert Settings().broker_auto_create_topics is False


def test_metadata_for_2000_unknown_topics_creates_none_and_stalls_nothing(
    broker: BrokerThread,
) -> None:
    bystander = Bystander(broker.bootstrap_servers)
    answers: list[bytes] = []
    storm = threading.Thread(
        target=lambda: answers.extend(
            hostile.metadata_answer(address(broker), hostile.metadata_for_unknown_topics(2_000))
            for _ in range(5)
        )
    )
    storm.start()
    while storm.is_alive():
        bystander.round_trip()
        storm.join(0.05)
    bystander.close()
    assert len(answers) == 5
    assert not [name for name in broker.broker.topics.names() if name.startswith("storm-")]


def test_with_auto_create_on_a_storm_is_one_catalog_write(tmp_path: Path) -> None:
    for runner in start_broker(tmp_path, auto_create_topics=True):
        hostile.metadata_answer(address(runner), hostile.metadata_for_unknown_topics(500))
        created = [name for name in runner.broker.topics.names() if name.startswith("storm-")]
        assert len(created) == 500
        Bystander(runner.bootstrap_servers).round_trip()


def test_the_broker_command_takes_its_limits_from_settings(tmp_path: Path) -> None:
    """`teleprompter broker` builds its broker from Settings (here: a 1 s idle timeout)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teleprompter",
            "broker",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TELEPROMPTER_BROKER_IDLE_TIMEOUT_S": "1", "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        found = None
        for line in process.stdout:
            found = re.search(r"listening on (\S+):(\d+)", line)
            if found:
                break
        assert found is not None, "the broker did not report its address"
        threading.Thread(target=process.stdout.read, daemon=True).start()
        with socket.create_connection((found.group(1), int(found.group(2))), timeout=30) as sock:
            assert hostile.closed_by_broker(sock, timeout_s=30)
    finally:
        process.terminate()
        process.wait(30)
