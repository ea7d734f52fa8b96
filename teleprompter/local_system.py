"""The whole system on one machine as child processes: what `up`, the tests and `bench` run.

Start order: broker (unless Kafka is given) -> topics -> LLM simulator (unless an endpoint is
given) -> workers -> gateway; each must be ready before the next starts. Stop order is the
reverse, each child getting SIGTERM and a grace period before SIGKILL. Children die with their
parent even when it is killed outright (PR_SET_PDEATHSIG), so nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import aiohttp

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from core.tokens import TokenSigner, resolve_secret

logger = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 60.0
STOP_GRACE_S: Final = 15.0
TAIL_LINES: Final = 40
_PR_SET_PDEATHSIG: Final = 1


class StartupError(RuntimeError):
    """A part of the system did not become ready; the message names it and why."""


@dataclass(kw_only=True)
class _Child:
    name: str
    process: asyncio.subprocess.Process
    relay: asyncio.Task[None] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


@dataclass(kw_only=True)
class LocalSystem:
    """Runs the system's processes; use as `async with LocalSystem(settings=...) as system`."""

    settings: Settings
    echo: Callable[[str], None] | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    _children: list[_Child] = field(default_factory=list)
    _resolved: Settings | None = None

    # --- what it exposes --------------------------------------------------------------------
    @property
    def resolved(self) -> Settings:
        """The settings the children run with: free ports picked, endpoints filled in."""
        if self._resolved is None:
            raise RuntimeError("the system is not started")
        return self._resolved

    @property
    def http_url(self) -> str:
        s = self.resolved
        return f"http://{s.gateway_host}:{s.gateway_port}"

    @property
    def ws_url(self) -> str:
        s = self.resolved
        return f"ws://{s.gateway_host}:{s.gateway_port}/ws"

    def token(self, conversation_id: str, *, rep: str | None = None) -> str:
        signer = TokenSigner(resolve_secret(self.resolved))
        return signer.issue(conversation_id, rep=rep, ttl_s=self.resolved.token_ttl_s)

    def rep_key(self, rep: str) -> str:
        """A rep key: signs `rep` in to the page, which can then start conversations."""
        signer = TokenSigner(resolve_secret(self.resolved))
        return signer.issue_rep_key(rep, ttl_s=self.resolved.token_ttl_s)

    def connect_query(self, conversation_id: str, *, rep: str | None = None) -> str:
        """The query string that opens the page or the WebSocket for one conversation."""
        return f"conversation_id={conversation_id}&token={self.token(conversation_id, rep=rep)}"

    def dead_children(self) -> list[str]:
        return [c.name for c in self._children if c.process.returncode is not None]

    def child_pids(self) -> dict[str, int]:
        """Process ids of the running children by name (the benchmark reads their CPU, RSS)."""
        return {c.name: c.process.pid for c in self._children if c.process.returncode is None}

    # --- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        s = self.settings
        data_dir = s.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        updates: dict[str, object] = {
            "data_dir": data_dir,
            "gateway_port": s.gateway_port or _free_port(s.gateway_host),
        }
        if s.uses_embedded_broker:
            updates["broker_port"] = s.broker_port or _free_port(s.broker_host)
        if s.openai_base_url is None:
            updates["llm_sim_port"] = s.llm_sim_port or _free_port("127.0.0.1")
        resolved = s.model_copy(update=updates)
        if resolved.uses_embedded_broker:
            resolved = resolved.model_copy(
                update={"kafka_bootstrap_servers": resolved.bootstrap_servers}
            )
        self._resolved = resolved
        resolve_secret(resolved, create=True)

        if s.uses_embedded_broker:
            await self._spawn("broker", "broker")
            await self._until_ready(
                "broker", lambda: _tcp_open(s.broker_host, resolved.broker_port)
            )
        admin = TopicAdmin(bootstrap_servers=resolved.bootstrap_servers)
        report = await admin.ensure_topics(TopicCatalog.from_settings(resolved).shared_topics)
        self._say(f"topics: {report.summary()}")

        if s.openai_base_url is None:
            await self._spawn("llm-sim", "llm-sim")
            await self._until_ready("llm-sim", lambda: _http_ok(f"{resolved.llm_base_url}/models"))
        for n in range(resolved.workers):
            await self._spawn(f"worker-{n + 1}" if resolved.workers > 1 else "worker", "worker")
        await self._spawn("gateway", "gateway")
        await self._until_ready("gateway", lambda: _http_ok(f"{self.http_url}/healthz"))
        await self._until_ready(
            "workers",
            lambda: admin.group_is_stable(
                f"{resolved.topic_prefix}-worker", members=resolved.workers
            ),
        )

    async def add_gateway(self, gateway_id: str) -> str:
        """Start one more gateway (another reply topic); returns its WebSocket URL."""
        s = self.resolved
        extra = s.model_copy(
            update={"gateway_id": gateway_id, "gateway_port": _free_port(s.gateway_host)}
        )
        await self._spawn(f"gateway-{gateway_id}", "gateway", settings=extra)
        base = f"http://{extra.gateway_host}:{extra.gateway_port}"
        await self._until_ready(f"gateway {gateway_id}", lambda: _http_ok(f"{base}/healthz"))
        return f"ws://{extra.gateway_host}:{extra.gateway_port}/ws"

    async def restart_worker(self) -> None:
        """Stop the worker gracefully and start a new one in its place."""
        s = self.resolved
        for child in [c for c in self._children if c.name == "worker"]:
            self._children.remove(child)
            await _terminate(child, grace_s=STOP_GRACE_S)
        await self._spawn("worker", "worker")
        await self._until_ready("worker", lambda: self._workers_stable(s))

    async def _workers_stable(self, s: Settings) -> bool:
        admin = TopicAdmin(bootstrap_servers=s.bootstrap_servers)
        return await admin.group_is_stable(f"{s.topic_prefix}-worker", members=s.workers)

    async def stop(self) -> None:
        """SIGTERM each child, newest first; SIGKILL what outlives the grace period."""
        while self._children:
            child = self._children.pop()
            await _terminate(child, grace_s=STOP_GRACE_S)

    async def wait_for_exit(self) -> str:
        """Block until any child exits; returns its name (the system is then broken)."""
        waits = {asyncio.ensure_future(c.process.wait()): c.name for c in self._children}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        return waits[next(iter(done))]

    # --- internals --------------------------------------------------------------------------
    async def _spawn(self, name: str, command: str, *, settings: Settings | None = None) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teleprompter",
            command,
            env={**os.environ, **_settings_env(settings or self.resolved)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        child = _Child(name=name, process=process)
        child.relay = asyncio.create_task(self._relay(child))
        self._children.append(child)

    async def _relay(self, child: _Child) -> None:
        """Child output, prefixed with its name; read continuously so no pipe ever fills."""
        assert child.process.stdout is not None
        async for raw in child.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.tail.append(line)
            if self.echo is not None:
                self.echo(f"{child.name:>8} | {line}")
            else:
                logger.debug("%s | %s", child.name, line)

    async def _until_ready(self, what: str, probe: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not await probe():
            if dead := [c for c in self._children if c.process.returncode is not None]:
                last_words = "\n".join(f"{c.name} | {line}" for c in dead for line in c.tail)
                names = ", ".join(c.name for c in dead)
                raise StartupError(f"{names} exited while waiting for {what}:\n{last_words}")
            if time.monotonic() > deadline:
                raise StartupError(f"{what} not ready after {self.ready_timeout_s:.0f} s")
            await asyncio.sleep(0.1)
        self._say(f"{what} ready")

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(f"{'up':>8} | {line}")
        else:
            logger.info("%s", line)


def _settings_env(settings: Settings) -> dict[str, str]:
    """Settings as the environment a child process reads them from (secrets included)."""
    env = {
        "OPENAI_BASE_URL": settings.llm_base_url,
        "OPENAI_API_KEY": settings.openai_api_key.get_secret_value(),
    }
    if settings.kafka_bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    unprefixed = {"kafka_bootstrap_servers", "openai_base_url", "openai_api_key"}
    for name, value in settings.model_dump().items():
        if value is not None and name not in unprefixed:
            shown = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            env[f"TELEPROMPTER_{name.upper()}"] = str(shown)
    return env


async def _terminate(child: _Child, *, grace_s: float) -> None:
    process = child.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            logger.warning("%s ignored SIGTERM for %.0f s: killing it", child.name, grace_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if child.relay is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await child.relay


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGTERM to this child when its parent dies, however it dies.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _http_ok(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
