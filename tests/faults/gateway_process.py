"""`teleprompter gateway` as a process of its own, for the gateway's fault and abuse tests:
killed with -9, stopped with SIGSTOP, its memory read from /proc."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import confluent_kafka
from pydantic import SecretStr

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from core.tokens import TokenSigner
from tests.gateway.conftest import TIMEOUT_S, create_topics

SECRET = "gateway-fault-tests-signing-secret-0123456789"


def fault_settings(bootstrap_servers: str, **overrides: Any) -> Settings:
    """Topics and a secret of their own; settings for one or more gateway processes."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "topic_prefix": f"gwf{uuid.uuid4().hex[:8]}",
        "partitions": 2,
        "secret": SecretStr(SECRET),
        **overrides,
    }
    return Settings(**values)


async def create_shared_topics(settings: Settings) -> TopicCatalog:
    catalog = TopicCatalog.from_settings(settings)
    await asyncio.to_thread(create_topics, settings.bootstrap_servers, list(catalog.shared_topics))
    return catalog


def _count_blocking(bootstrap_servers: str, topic: str, key: str) -> int:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"counter-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
        ends: dict[int, int] = {}
        assigned = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=TIMEOUT_S
            )
            if high > low:
                ends[partition] = high
                assigned.append(confluent_kafka.TopicPartition(topic, partition, low))
        consumer.assign(assigned)
        count = 0
        while ends:
            record = consumer.poll(TIMEOUT_S)
            assert record is not None, f"{topic} stopped short of its end"
            if record.error() is not None:
                continue
            if record.key() == key.encode():
                count += 1
            if record.offset() + 1 >= ends.get(record.partition(), 0):
                ends.pop(record.partition(), None)
        return count
    finally:
        consumer.close()


async def count_events(bootstrap_servers: str, topic: str, *, conversation_id: str) -> int:
    """How many records of one conversation `topic` holds now (read to its end)."""
    return await asyncio.to_thread(_count_blocking, bootstrap_servers, topic, conversation_id)


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of a process from /proc (VmRSS now, or VmHWM: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024.0
    raise LookupError(f"no {field_name} for process {pid}")


@dataclass(kw_only=True)
class GatewayProcess:
    """One gateway process on a free port; `async with` starts it and kills what is left."""

    settings: Settings
    gateway_id: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    process: asyncio.subprocess.Process | None = None
    signer: TokenSigner = field(default_factory=lambda: TokenSigner(SECRET.encode()))

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.gateway_id}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def connect_url(self, conversation_id: str, *, ttl_s: float = 600.0) -> str:
        token = self.signer.issue(conversation_id, ttl_s=ttl_s)
        return f"{self.ws_url}?conversation_id={conversation_id}&token={token}"

    async def __aenter__(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEPROMPTER_")}
        env |= {
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "TELEPROMPTER_SECRET": SECRET,
            "TELEPROMPTER_DATA_DIR": str(self.data_dir),
            "TELEPROMPTER_TOPIC_PREFIX": self.settings.topic_prefix,
            "TELEPROMPTER_PARTITIONS": str(self.settings.partitions),
            **self.env,
        }
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "teleprompter",
                "gateway",
                "--port",
                "0",
                "--gateway-id",
                self.gateway_id,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT_S)
        assert line.startswith(b"gateway listening on http://"), (line, self.log())
        self.url = line.decode().split()[-1]
        await self._wait_healthy()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot handle TERM
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def metric(self, name: str) -> float:
        """A metric from /metrics, summed over its labels."""
        total = 0.0
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith((f"{name} ", f"{name}{{")):
                    total += float(line.rsplit(maxsplit=1)[1])
        return total

    async def _wait_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S * 2
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)  # polling an HTTP endpoint: nothing to wait on
        raise TimeoutError(f"{self.url}/healthz never said 200:\n{self.log()}")
