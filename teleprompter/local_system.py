"""The whole system on one machine as child processes: what `up`, the tests and `bench` run.

Start order: broker (unless Kafka is given) -> topics -> LLM simulator (unless an endpoint is
given) -> workers -> gateway; each must be ready before the next starts. Stop order is the
reverse, each child getting SIGTERM and a grace period before SIGKILL. Children die with their
parent even when it is killed outright (PR_SET_PDEATHSIG), so nothing is orphaned.

Before any child starts, every fixed port is checked free and the data dir is created private,
checked writable and locked, so a second system on the same ports or folder is refused in one
line instead of half-starting. `supervise` then restarts a child that dies, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiohttp

from core.data_dir import DataDirError, prepare_data_dir
from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from core.tokens import TokenSigner, resolve_secret

logger = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 60.0
STOP_GRACE_S: Final = 15.0
TAIL_LINES: Final = 40
LOCK_FILE_NAME: Final = "up.lock"
_PR_SET_PDEATHSIG: Final = 1


class StartupError(RuntimeError):
    """A part of the system did not become ready; the message names it and why."""


@dataclass(frozen=True, kw_only=True)
class RestartBackoff:
    """How long to wait before restarting a child that died: doubling, capped, forgiving.

    A child that ran at least `stable_after_s` before dying starts again after `initial_s`;
    one that keeps dying sooner waits twice as long each time, up to `max_s`.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    stable_after_s: float = 30.0

    def delay_s(self, *, previous_s: float | None, ran_s: float) -> float:
        if previous_s is None or ran_s >= self.stable_after_s:
            return self.initial_s
        return min(self.max_s, previous_s * 2)


@dataclass(frozen=True, kw_only=True)
class PortClaim:
    """A fixed port a child will listen on, named for the error that says it is taken."""

    what: str
    host: str
    port: int
    flag: str


@dataclass(kw_only=True)
class _Child:
    name: str
    command: str
    settings: Settings
    process: asyncio.subprocess.Process
    started_at: float
    relay: asyncio.Task[None] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    last_delay_s: float | None = None


@dataclass(kw_only=True)
class LocalSystem:
    """Runs the system's processes; use as `async with LocalSystem(settings=...) as system`."""

    settings: Settings
    echo: Callable[[str], None] | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    _children: list[_Child] = field(default_factory=list)
    _resolved: Settings | None = None
    _lock_fd: int | None = None
    _stopping: bool = False
    _worker_ports: dict[str, int] = field(default_factory=dict)

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

    @property
    def worker_urls(self) -> dict[str, str]:
        """Each worker's HTTP base URL (it serves /metrics and /healthz) by worker name."""
        host = self.resolved.worker_http_host
        return {name: f"http://{host}:{port}" for name, port in self._worker_ports.items()}

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

    @property
    def started_anything(self) -> bool:
        """Whether any child process was started (and so needs stopping)."""
        return bool(self._children)

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
        try:
            data_dir = prepare_data_dir(s.data_dir)
        except DataDirError as exc:
            raise StartupError(str(exc)) from None
        self._lock_data_dir(data_dir)
        _check_ports_free(port_claims(s))
        _check_speech_model(s)
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
            await self._spawn_worker(f"worker-{n + 1}" if resolved.workers > 1 else "worker", n)
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
        await self._spawn_worker("worker", 0)
        await self._until_ready("worker", lambda: self._workers_stable(s))

    async def _workers_stable(self, s: Settings) -> bool:
        admin = TopicAdmin(bootstrap_servers=s.bootstrap_servers)
        return await admin.group_is_stable(f"{s.topic_prefix}-worker", members=s.workers)

    async def stop(self) -> None:
        """SIGTERM each child, newest first; SIGKILL what outlives the grace period."""
        self._stopping = True
        while self._children:
            child = self._children.pop()
            await _terminate(child, grace_s=STOP_GRACE_S)
        self._unlock_data_dir()

    async def supervise(self) -> None:
        """Restart every child that exits, with backoff, until cancelled or `stop` begins.

        A dead broker, worker, gateway or simulator comes back on the same ports with the same
        settings; the others reconnect to it by themselves. Crashes are reported through
        `echo` (or the log) with the child's last line.
        """
        while not self._stopping and self._children:
            waits = {asyncio.ensure_future(child.process.wait()): child for child in self._children}
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in waits:
                    future.cancel()
            for future in done:
                await self._restart(waits[future])

    async def _restart(self, child: _Child) -> None:
        if self._stopping or child not in self._children:
            return
        if child.relay is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await child.relay  # the pipe is at EOF: this drains the last lines
        ran_s = time.monotonic() - child.started_at
        delay_s = self.backoff.delay_s(previous_s=child.last_delay_s, ran_s=ran_s)
        last_words = child.tail[-1] if child.tail else "(no output)"
        self._say(
            f"{child.name} exited with code {child.process.returncode} after {ran_s:.1f} s "
            f"({last_words}); restarting in {delay_s:.1f} s"
        )
        await asyncio.sleep(delay_s)
        if self._stopping or child not in self._children:
            return
        index = self._children.index(child)
        replacement = await self._spawn(child.name, child.command, settings=child.settings)
        replacement.last_delay_s = delay_s
        # Keep the start order, which is the reverse of the stop order.
        self._children.remove(replacement)
        self._children[index] = replacement
        self._say(f"{child.name} restarted (pid {replacement.process.pid})")

    # --- internals --------------------------------------------------------------------------
    async def _spawn_worker(self, name: str, n: int) -> None:
        """Worker `n` gets an HTTP port of its own: the setting plus n when it was set, else a
        free one (several workers share this machine)."""
        s = self.resolved
        port = self._worker_ports.get(name)
        if port is None:
            chosen = "worker_http_port" in self.settings.model_fields_set and s.worker_http_port
            port = s.worker_http_port + n if chosen else _free_port(s.worker_http_host)
            self._worker_ports[name] = port
        # Each worker a static group member of its own: restarted, it takes its partitions back.
        instance = s.worker_instance_id or f"{s.topic_prefix}-{name}"
        if s.worker_instance_id and s.workers > 1:
            instance = f"{s.worker_instance_id}-{name}"
        await self._spawn(
            name,
            "worker",
            settings=s.model_copy(
                update={"worker_http_port": port, "worker_instance_id": instance}
            ),
        )

    async def _spawn(self, name: str, command: str, *, settings: Settings | None = None) -> _Child:
        settings = settings or self.resolved
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teleprompter",
            command,
            env={**os.environ, **_settings_env(settings)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        child = _Child(
            name=name,
            command=command,
            settings=settings,
            process=process,
            started_at=time.monotonic(),
        )
        child.relay = asyncio.create_task(self._relay(child))
        self._children.append(child)
        return child

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

    def _lock_data_dir(self, data_dir: Path) -> None:
        """One system per data dir: a second `up` on the same folder is refused at once."""
        path = data_dir / LOCK_FILE_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StartupError(
                f"data dir {data_dir} is in use by another teleprompter system (pid {holder}); "
                "stop it or pass --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(f"{'up':>8} | {line}")
        else:
            logger.info("%s", line)


def port_claims(settings: Settings) -> list[PortClaim]:
    """The fixed (non-zero) ports this system's children will listen on."""
    s = settings
    claims = [
        PortClaim(what="gateway", host=s.gateway_host, port=s.gateway_port, flag="--gateway-port")
    ]
    if s.uses_embedded_broker:
        claims.append(
            PortClaim(what="broker", host=s.broker_host, port=s.broker_port, flag="--broker-port")
        )
    if s.openai_base_url is None:
        claims.append(
            PortClaim(
                what="LLM simulator", host="127.0.0.1", port=s.llm_sim_port, flag="--llm-port"
            )
        )
    if "worker_http_port" in s.model_fields_set and s.worker_http_port:
        claims += [
            PortClaim(
                what=f"worker {n + 1} metrics",
                host=s.worker_http_host,
                port=s.worker_http_port + n,
                flag="--worker-http-port",
            )
            for n in range(s.workers)
        ]
    return [claim for claim in claims if claim.port]


def _check_speech_model(settings: Settings) -> None:
    """A worker without its speech model would only die and be restarted: refuse up front."""
    from streams.asr.model import AsrModelError, resolve_model_source  # noqa: PLC0415  # faster-whisper is heavy; only start() needs it

    try:
        resolve_model_source(settings.asr_model)
    except AsrModelError as exc:
        raise StartupError(f"{exc} (TELEPROMPTER_ASR_MODEL)") from None


def _check_ports_free(claims: list[PortClaim]) -> None:
    """Refuse to start when a fixed port is taken: nothing may half-start on another's ports."""
    seen: dict[int, PortClaim] = {}
    for claim in claims:
        if claim.port in seen:
            raise StartupError(
                f"the {claim.what} and the {seen[claim.port].what} are both given port "
                f"{claim.port}; give one of them another ({claim.flag})"
            )
        seen[claim.port] = claim
        with socket.socket() as sock:
            # As the servers bind: a port in TIME_WAIT is free to them, and so to this check.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((claim.host, claim.port))
            except OSError as exc:
                reason = (
                    "is in use (another teleprompter up?)"
                    if exc.errno == errno.EADDRINUSE
                    else f"cannot be used: {exc.strerror}"
                )
                raise StartupError(
                    f"port {claim.port} for the {claim.what} {reason}; "
                    f"pass {claim.flag} 0 to pick a free one"
                ) from None


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
