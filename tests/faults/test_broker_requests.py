"""Issue 12 finding 7: hostile requests cost the embedded broker bounded time and memory.

Before: one 32 MB request with a big array stalled the broker 12.9 s and took 2.16 GB, and a
29 KB metadata request auto-created 2,000 topics and stalled it 20 s. Each test sends the
abuse while an honest client keeps producing and consuming, and asserts behaviour (the hostile
connection is closed or answered; the others are served), never timings.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import BrokerThread, hostile
from tests.faults.broker_fixtures import Bystander, address, start_broker

pytestmark = pytest.mark.slow

UNKNOWN_TOPIC_OR_PARTITION = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerThread]:
    yield from start_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture(scope="module")
def bystander(broker: BrokerThread) -> Iterator[Bystander]:
    client = Bystander(broker.bootstrap_servers)
    client.round_trip()
    yield client
    client.close()


def _while_served(bystander: Bystander, abuse: threading.Thread) -> None:
    """Run the abuse on a thread; the bystander must complete round trips meanwhile."""
    abuse.start()
    bystander.round_trip()
    while abuse.is_alive():
        bystander.round_trip()
        abuse.join(0.05)
    bystander.round_trip()


def test_an_impossible_array_count_closes_the_connection_before_allocating(
    broker: BrokerThread, bystander: Bystander, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.server")
    assert hostile.send_and_watch(address(broker), hostile.impossible_array_count())
    assert any("cannot fit" in record.getMessage() for record in caplog.records)
    bystander.round_trip()


def test_a_32_mb_request_of_millions_of_items_is_refused_while_others_are_served(
    broker: BrokerThread, bystander: Bystander
) -> None:
    closed: list[bool] = []
    payload = hostile.huge_array_frame(32 * 1024 * 1024)
    abuse = threading.Thread(
        target=lambda: closed.append(hostile.send_and_watch(address(broker), payload))
    )
    _while_served(bystander, abuse)
    assert closed == [True]


def test_a_request_over_the_item_budget_is_parsed_off_the_loop_then_refused(
    broker: BrokerThread, bystander: Bystander, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.server")
    closed: list[bool] = []
    payload = hostile.item_heavy_request(topics=400, partitions=500)  # 200,000 items
    abuse = threading.Thread(
        target=lambda: closed.append(hostile.send_and_watch(address(broker), payload))
    )
    _while_served(bystander, abuse)
    assert closed == [True]
    assert any("budget of array items" in record.getMessage() for record in caplog.records)


def test_a_big_honest_request_is_answered(broker: BrokerThread, bystander: Bystander) -> None:
    """5,000 topic names is over the on-loop budget: parsed on the parser thread, answered."""
    answer = hostile.metadata_answer(
        address(broker), hostile.metadata_for_unknown_topics(5_000, prefix="big")
    )
    (correlation_id,) = struct.unpack_from(">i", answer)
    assert correlation_id == 1
    assert answer.count(struct.pack(">h", UNKNOWN_TOPIC_OR_PARTITION) + b"\x00\x09big-") == 5_000
    bystander.round_trip()


def test_a_frame_over_the_request_size_limit_is_refused_from_its_length(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.server")
    for runner in start_broker(tmp_path, max_request_bytes=64 * 1024):
        assert hostile.send_and_watch(address(runner), hostile.huge_array_frame(1024 * 1024))
        assert any("outside 8..65536 bytes" in r.getMessage() for r in caplog.records)
        Bystander(runner.bootstrap_servers).round_trip()
