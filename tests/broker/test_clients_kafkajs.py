"""KafkaJS on the divergences issue 10 lists, on both backends.

One node process runs every check (tests/broker/kafkajs/checks.js) against the session's
Kafka; each test reads its part of the answer. KafkaJS is installed with the machine's npm
into tests/broker/kafkajs/node_modules (git-ignored) when missing. Before, KafkaJS reported a
transactional producer's refusal as a missing coordinator; now it is UNSUPPORTED_VERSION.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from broker import BrokerThread

HERE = Path(__file__).parent / "kafkajs"


def _install() -> None:
    if (HERE / "node_modules" / "kafkajs").is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to install KafkaJS for these tests"
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True, timeout=300
    )


@pytest.fixture(scope="module")
def kafkajs(bootstrap_servers: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed on this machine")
    _install()
    prefix = f"kafkajs-{uuid.uuid4().hex[:8]}"
    finished = subprocess.run(
        [node, "checks.js", bootstrap_servers, prefix],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    results: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return results


def _result(kafkajs: dict[str, Any], check: str) -> dict[str, Any]:
    result: dict[str, Any] = kafkajs[check]
    assert "unexpected" not in result, result
    return result


def test_an_idempotent_producer_writes_each_record_once_in_order(kafkajs: dict[str, Any]) -> None:
    assert _result(kafkajs, "idempotentProducer")["values"] == [str(i) for i in range(100)]


def test_log_append_time_replaces_the_producers_timestamp(kafkajs: dict[str, Any]) -> None:
    stamp = _result(kafkajs, "logAppendTime")["timestamp"]
    assert stamp != 42
    assert abs(stamp - time.time() * 1000) < 3_600_000  # the broker's clock, not the producer's


def test_delete_records_moves_the_low_watermark(kafkajs: dict[str, Any]) -> None:
    assert _result(kafkajs, "deleteRecords") == {"low": 7, "high": 10}


def test_groups_are_described_with_their_state(kafkajs: dict[str, Any]) -> None:
    assert _result(kafkajs, "groups") == {"listed": True, "state": "Stable", "members": 1}


def test_transactions_work_on_apache_and_are_not_supported_embedded(
    kafkajs: dict[str, Any], embedded_broker: BrokerThread | None
) -> None:
    result = _result(kafkajs, "transactions")
    if embedded_broker is None:
        assert result == {"ok": True}
    else:
        assert result["type"] == "UNSUPPORTED_VERSION"


def test_sasl_on_the_plaintext_listener_fails_the_same_way(kafkajs: dict[str, Any]) -> None:
    assert _result(kafkajs, "sasl")["type"] == "ILLEGAL_SASL_STATE"
