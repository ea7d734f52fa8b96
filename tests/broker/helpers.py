"""Helpers for the broker tests: topics, synchronous waiting, a broker in a child process."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from confluent_kafka.admin import AdminClient, NewTopic

# Short group timings so members notice rebalances quickly (the defaults are seconds).
CONFLUENT_GROUP_SETTINGS: Final = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 100,
    "topic.metadata.refresh.interval.ms": 1000,
}
AIOKAFKA_GROUP_SETTINGS: Final = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 100,
    "metadata_max_age_ms": 1000,
}


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 20.0, what: str) -> None:
    """Block until `condition()` holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)  # polling a condition that offers no event to wait on


def create_topic(
    bootstrap_servers: str,
    name: str,
    *,
    partitions: int = 1,
    config: dict[str, str] | None = None,
) -> str:
    """Create a topic and wait until the cluster reports all its partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    futures[name].result(timeout=20)

    def visible() -> bool:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        return topic is not None and topic.error is None and len(topic.partitions) == partitions

    wait_for(visible, what=f"topic {name} to be visible")
    return name


def raw_call(bootstrap_servers: str, request: Any, *, correlation_id: int = 42) -> Any:
    """Send one aiokafka request struct on a new connection; its decoded response."""
    host, port = bootstrap_servers.split(",", maxsplit=1)[0].rsplit(":", 1)
    header = struct.pack(">hhih", request.API_KEY, request.API_VERSION, correlation_id, 4) + b"test"
    if request.FLEXIBLE_VERSION:
        header += b"\x00"  # no header tags
    body = request.encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", _exactly(sock, 4))[0]
        reply = _exactly(sock, size)
    assert struct.unpack_from(">i", reply)[0] == correlation_id
    skip = 5 if request.FLEXIBLE_VERSION else 4  # response header v1 carries (empty) tags
    return request.RESPONSE_TYPE.decode(reply[skip:])


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


class BrokerProcess:
    """`python -m broker` in a child process, for restarts and kill -9."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._process: subprocess.Popen[str] | None = None
        self.bootstrap_servers = ""

    def start(self, timeout_s: float = 30.0) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "broker", "--port", "0", "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout_s
        for line in self._process.stdout:
            found = re.search(r"listening on (\S+:\d+)", line)
            if found:
                self.bootstrap_servers = found.group(1)
                # Keep reading its log so a full pipe never blocks the broker.
                self.log_lines: list[str] = []
                drain = threading.Thread(target=self._drain, daemon=True)
                drain.start()
                return self.bootstrap_servers
            if time.monotonic() > deadline:
                break
        self.kill()
        raise RuntimeError("broker process did not report its address")

    def _drain(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.log_lines.append(line)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._close()

    def terminate(self) -> int:
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(30)
        self._close()
        return code

    def _close(self) -> None:
        self._process = None
