"""Faust on the broker: a worker's Table is rebuilt from its changelog after a restart.

The worker (tests/broker/faust_table_app.py) runs as a real `faust worker` child process
with an in-memory table store, so the only way it can know earlier counts after a restart
is by replaying the table's compacted changelog topic from the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.broker.helpers import create_topic, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 60.0


class FaustWorker:
    def __init__(self, *, bootstrap_servers: str, app_id: str, datadir: Path) -> None:
        self._env = {
            **os.environ,
            "FAUST_TEST_BROKER": bootstrap_servers,
            "FAUST_TEST_APP_ID": app_id,
            "FAUST_TEST_DATADIR": str(datadir),
            "PYTHONUNBUFFERED": "1",
        }
        self._log = datadir / "worker.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.broker.faust_table_app", "worker", "-l", "info"],
                cwd=REPO_ROOT,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """SIGTERM, as an operator would; SIGKILL only if it will not stop."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-4000:]


@pytest.fixture
def worker(bootstrap_servers: str, tmp_path: Path) -> Iterator[FaustWorker]:
    running = FaustWorker(
        bootstrap_servers=bootstrap_servers,
        app_id=f"faust-{uuid.uuid4().hex[:8]}",
        datadir=tmp_path,
    )
    try:
        yield running
    finally:
        running.stop()


class CountsReader:
    """Follows the app's output topic: the latest count published for each word."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": f"reader-{uuid.uuid4().hex}"}
        )
        self._consumer.assign([TopicPartition(topic, 0, 0)])
        self.latest: dict[str, str] = {}

    def poll(self) -> None:
        message = self._consumer.poll(0.05)
        if message is not None and not message.error():
            self.latest[message.key().decode()] = json.loads(message.value())

    def close(self) -> None:
        self._consumer.close()


def test_a_restarted_worker_rebuilds_its_table_from_the_changelog(
    bootstrap_servers: str, worker: FaustWorker
) -> None:
    app_id = worker._env["FAUST_TEST_APP_ID"]
    words = create_topic(bootstrap_servers, f"{app_id}-words")
    counts = create_topic(bootstrap_servers, f"{app_id}-counts")
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    reader = CountsReader(bootstrap_servers, counts)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def send(*items: str) -> None:
        for item in items:
            producer.produce(words, key=item.encode(), value=json.dumps(item).encode())
        assert producer.flush(10) == 0

    def shows(expected: dict[str, str]) -> bool:
        reader.poll()
        return all(reader.latest.get(k) == v for k, v in expected.items())

    def committed_input_offset() -> int:
        group = ConsumerGroupTopicPartitions(app_id, [TopicPartition(words, 0)])
        result = admin.list_consumer_group_offsets([group])[app_id].result(10)
        return int(result.topic_partitions[0].offset)

    try:
        worker.start()
        send("a", "a", "b")
        wait_for(
            lambda: shows({"a": "2", "b": "1"}),
            timeout_s=WORKER_START_TIMEOUT_S,
            what=f"first counts; worker log:\n{worker.log_tail()}",
        )
        # Once the input is committed nothing is reprocessed after the restart, so the next
        # count can only be right if the table came back from the changelog.
        wait_for(lambda: committed_input_offset() == 3, what="input offsets committed")
        worker.stop()

        worker.start()
        send("a")
        wait_for(
            lambda: shows({"a": "3"}),
            timeout_s=WORKER_START_TIMEOUT_S,
            what=f"count after restart; worker log:\n{worker.log_tail()}",
        )
        assert reader.latest == {"a": "3", "b": "1"}
    finally:
        reader.close()
