"""A real Apache Kafka cluster on loopback: N combined broker+controller JVMs in KRaft mode.

    async with ApacheKafkaCluster(nodes=3, data_dir=path) as cluster:
        cluster.bootstrap_servers            # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        await cluster.kill(2)                # SIGKILL one node
        await cluster.start(2)               # and bring it back

The data dir holds `cluster.json` (cluster id, node ids, ports), a log4j2 config, and one
directory per node (`node-N/server.properties`, `node-N/data` its log dir, `node-N/logs` the
JVM's logs). Storage is formatted on first use and reused on every later start, on the same
ports when they are free. Nodes are started with `subprocess.Popen`, so they belong to no
event loop, and die with the thread that started them (see processes.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from teleprompter.apache_kafka.artifacts import (
    DEFAULT_CACHE_DIR,
    ApacheKafkaError,
    KafkaArtifacts,
    ensure_artifacts,
)
from teleprompter.apache_kafka.jvm import (
    LOG4J2_PROPERTIES,
    JvmProfile,
    ensure_class_archive,
    format_arguments,
    java_command,
    run_to_completion,
)
from teleprompter.apache_kafka.processes import die_with_parent_kill

logger = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
HEAP_MB: Final = 512
READY_TIMEOUT_S: Final = 120.0
STOP_GRACE_S: Final = 30.0
FORMAT_TIMEOUT_S: Final = 120.0
_POLL_S: Final = 0.2
_PROBE_TIMEOUT_S: Final = 2.0
_LAYOUT_FILE: Final = "cluster.json"
_LOG_CONFIG_FILE: Final = "log4j2.properties"


class ClusterStartError(ApacheKafkaError):
    """A node exited or did not serve in time; the message names it and its log."""


class DataDirError(ApacheKafkaError):
    """The data dir holds a cluster of another shape (exit code 2: choose another dir)."""


@dataclass(frozen=True, kw_only=True)
class NodeAddress:
    """One combined broker+controller node: its id and its two loopback ports."""

    node_id: int
    port: int
    controller_port: int

    def bootstrap(self, host: str = HOST) -> str:
        return f"{host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class ClusterLayout:
    """What stays the same across restarts of one data dir (kept in cluster.json)."""

    cluster_id: str
    nodes: tuple[NodeAddress, ...]

    @classmethod
    def new(cls, nodes: int) -> ClusterLayout:
        return cls(cluster_id=_new_cluster_id(), nodes=_free_addresses(nodes))

    @classmethod
    def load(cls, path: Path) -> ClusterLayout:
        document = json.loads(path.read_text())
        return cls(
            cluster_id=str(document["cluster_id"]),
            nodes=tuple(NodeAddress(**node) for node in document["nodes"]),
        )

    def save(self, path: Path) -> None:
        document = {"cluster_id": self.cluster_id, "nodes": [asdict(n) for n in self.nodes]}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n")
        temporary.replace(path)

    def with_fresh_ports(self) -> ClusterLayout:
        fresh = _free_addresses(len(self.nodes))
        return ClusterLayout(
            cluster_id=self.cluster_id,
            nodes=tuple(
                NodeAddress(node_id=n.node_id, port=f.port, controller_port=f.controller_port)
                for n, f in zip(self.nodes, fresh, strict=True)
            ),
        )


@dataclass(kw_only=True)
class _Node:
    address: NodeAddress
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.directory / "data"

    @property
    def jvm_log_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(kw_only=True)
class ApacheKafkaCluster:
    """Runs Apache Kafka nodes as child JVMs; use as `async with ApacheKafkaCluster(...)`."""

    data_dir: Path
    nodes: int = 1
    heap_mb: int = HEAP_MB
    profile: JvmProfile = "server"
    cache_dir: Path = DEFAULT_CACHE_DIR
    ready_timeout_s: float = READY_TIMEOUT_S
    stop_grace_s: float = STOP_GRACE_S
    echo: Callable[[str], None] | None = None
    _artifacts: KafkaArtifacts | None = None
    _archive: Path | None = None
    _layout: ClusterLayout | None = None
    _nodes: dict[int, _Node] = field(default_factory=dict)

    # --- what it exposes --------------------------------------------------------------------
    @property
    def layout(self) -> ClusterLayout:
        if self._layout is None:
            raise RuntimeError("the cluster is not started")
        return self._layout

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap() for node in self.layout.nodes)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(node.node_id for node in self.layout.nodes)

    @property
    def version(self) -> str:
        if self._artifacts is None:
            raise RuntimeError("the cluster is not started")
        return self._artifacts.version

    def address(self, node_id: int) -> str:
        return self._node(node_id).address.bootstrap()

    def is_running(self, node_id: int) -> bool:
        return self._node(node_id).running

    def pid(self, node_id: int) -> int | None:
        node = self._node(node_id)
        return node.process.pid if node.process is not None and node.running else None

    def log_path(self, node_id: int) -> Path:
        """The node's server log (its JVM's own output is `stdout.log` beside it)."""
        return self._node(node_id).jvm_log_dir / "server.log"

    # --- the whole cluster ------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            await self.start_all()
        except BaseException:
            await self.stop_all()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_all()

    async def start_all(self) -> None:
        """Fetch the jars if needed, format storage on first use, start every node, wait."""
        self._artifacts = await asyncio.to_thread(
            ensure_artifacts, cache_dir=self.cache_dir, echo=self.echo
        )
        self._archive = await ensure_class_archive(self._artifacts)
        self.data_dir = self.data_dir.resolve()  # the JVMs get absolute paths in their config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._layout = self._prepare_layout()
        (self.data_dir / _LOG_CONFIG_FILE).write_text(LOG4J2_PROPERTIES)
        for address in self._layout.nodes:
            node = _Node(address=address, directory=self.data_dir / f"node-{address.node_id}")
            node.jvm_log_dir.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(self._server_properties(node))
            self._nodes[address.node_id] = node
        await asyncio.gather(*(self._format(node) for node in self._nodes.values()))
        for node in self._nodes.values():
            self._spawn(node)
        await self.wait_until_serving()

    async def stop_all(self) -> None:
        """SIGTERM every node at once; SIGKILL those still running after the grace period."""
        await asyncio.gather(*(self.stop(node_id) for node_id in list(self._nodes)))

    async def wait_for_exit(self) -> int:
        """Block until any node exits; returns its id (the cluster is then degraded)."""
        while True:
            for node_id, node in self._nodes.items():
                if node.process is not None and node.process.poll() is not None:
                    return node_id
            await asyncio.sleep(_POLL_S * 5)

    # --- one node ---------------------------------------------------------------------------
    async def kill(self, node_id: int) -> None:
        """SIGKILL the node, as a crash would; returns once it is gone."""
        node = self._node(node_id)
        if node.process is not None and node.running:
            node.process.kill()
            await _exited(node.process, timeout_s=self.stop_grace_s)

    async def stop(self, node_id: int) -> None:
        """SIGTERM the node (a controlled shutdown); SIGKILL after the grace period."""
        process = self._node(node_id).process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        if not await _exited(process, timeout_s=self.stop_grace_s):
            logger.warning(
                "Apache Kafka node %d ignored SIGTERM for %.0f s: killing it",
                node_id,
                self.stop_grace_s,
            )
            process.kill()
            await _exited(process, timeout_s=self.stop_grace_s)

    async def start(self, node_id: int) -> None:
        """Start a stopped or killed node again and wait until it serves."""
        node = self._node(node_id)
        if node.running:
            raise RuntimeError(f"node {node_id} is already running")
        self._spawn(node)
        await self.wait_until_serving([node_id])

    # --- waiting and looking ----------------------------------------------------------------
    async def wait_until_serving(
        self, node_ids: Iterable[int] | None = None, *, timeout_s: float | None = None
    ) -> None:
        """Until each node answers metadata itself, listing every running node as a broker.

        A broker is listed only once the active controller has registered and unfenced it,
        so this also waits for the quorum to have elected a controller.
        """
        waiting = set(self.node_ids if node_ids is None else node_ids)
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        while waiting:
            for node_id in sorted(waiting):
                self._raise_if_exited(node_id)
                if await self._serves(node_id):
                    waiting.discard(node_id)
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(str(n) for n in sorted(waiting))
                raise ClusterStartError(
                    f"Apache Kafka node(s) {names} not serving after "
                    f"{timeout_s or self.ready_timeout_s:.0f} s (logs: {self.data_dir}/node-*/logs)"
                )
            await asyncio.sleep(_POLL_S)
        logger.info("Apache Kafka serving at %s", self.bootstrap_servers)

    async def leader_of(self, topic: str, partition: int) -> int | None:
        """The partition's leader as the cluster's metadata shows it; None while it has none."""
        metadata = await self.metadata()
        found = metadata.topics.get(topic)
        if found is None or partition not in found.partitions:
            return None
        leader: int = found.partitions[partition].leader
        return leader if leader >= 0 else None

    async def wait_for_leader(
        self,
        topic: str,
        partition: int,
        *,
        excluding: int | None = None,
        timeout_s: float = 60.0,
    ) -> int:
        """Until the partition has a leader (other than `excluding`); returns the leader."""
        deadline = time.monotonic() + timeout_s
        while True:
            leader = await self.leader_of(topic, partition)
            if leader is not None and leader != excluding:
                return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}] has no leader after {timeout_s:.0f} s")
            await asyncio.sleep(_POLL_S)

    async def under_replicated(self) -> list[tuple[str, int]]:
        """Partitions whose in-sync replicas are fewer than their replicas."""
        metadata = await self.metadata()
        return sorted(
            (name, p.id)
            for name, topic in metadata.topics.items()
            for p in topic.partitions.values()
            if len(p.isrs) < len(p.replicas)
        )

    async def wait_until_fully_replicated(self, *, timeout_s: float = 120.0) -> None:
        """Until no partition is under-replicated: the point to restart the next node."""
        deadline = time.monotonic() + timeout_s
        while lagging := await self.under_replicated():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(lagging)} partition(s) still under-replicated after {timeout_s:.0f} s,"
                    f" e.g. {lagging[:3]}"
                )
            await asyncio.sleep(_POLL_S)

    async def metadata(self) -> ClusterMetadata:
        """The cluster's metadata, from whichever running node answers first."""
        running = [n.address.bootstrap() for n in self._nodes.values() if n.running]
        if not running:
            raise ApacheKafkaError("no Apache Kafka node is running")
        found = await asyncio.to_thread(_metadata, ",".join(running), timeout_s=10.0)
        if found is None:
            raise ApacheKafkaError(f"no Apache Kafka node answered at {','.join(running)}")
        return found

    # --- internals --------------------------------------------------------------------------
    def _node(self, node_id: int) -> _Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise ValueError(f"no node {node_id} (nodes: {sorted(self._nodes)})") from None

    def _prepare_layout(self) -> ClusterLayout:
        path = self.data_dir / _LAYOUT_FILE
        if not path.exists():
            layout = ClusterLayout.new(self.nodes)
        else:
            layout = ClusterLayout.load(path)
            if len(layout.nodes) != self.nodes:
                raise DataDirError(
                    f"{self.data_dir} holds a {len(layout.nodes)}-node Apache Kafka cluster, "
                    f"not {self.nodes}: choose another data dir or delete this one"
                )
            if not all(_ports_free(n) for n in layout.nodes):
                logger.info("the ports of %s are taken: choosing new ones", self.data_dir)
                layout = layout.with_fresh_ports()
        layout.save(path)
        return layout

    def _server_properties(self, node: _Node) -> str:
        layout = self.layout
        n = len(layout.nodes)
        voters = ",".join(f"{a.node_id}@{HOST}:{a.controller_port}" for a in layout.nodes)
        replicas, min_insync = min(3, n), min(2, n)
        a = node.address
        properties = {
            "process.roles": "broker,controller",
            "node.id": a.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{HOST}:{a.port},CONTROLLER://{HOST}:{a.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{a.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.log_dir,
            # Internal topics as replicated as the cluster allows (3 and 2 on three nodes).
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_insync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_insync,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_insync,
            # A new group's first rebalance starts at once instead of waiting 3 s for members.
            "group.initial.rebalance.delay.ms": 0,
            # Workers' 3 s session timeout (TELEPROMPTER_WORKER_SESSION_TIMEOUT_S) is allowed;
            # Kafka's 6 s floor would otherwise raise it (docs/reliability.md, failover).
            "group.min.session.timeout.ms": 2000,
            # Sized for a 2-core machine running several nodes, not for a dedicated server.
            "num.network.threads": 2,
            "num.io.threads": 2,
            "background.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.threads": 1,
        }
        return "".join(f"{key}={value}\n" for key, value in properties.items())

    def _java(self, node: _Node, *, heap_mb: int) -> list[str]:
        assert self._artifacts is not None
        return java_command(
            self._artifacts,
            heap_mb=heap_mb,
            profile=self.profile,
            logs_dir=node.jvm_log_dir,
            log_config=self.data_dir / _LOG_CONFIG_FILE,
            archive=self._archive,
        )

    async def _format(self, node: _Node) -> None:
        """Format the node's log dir once; a formatted dir (meta.properties) is reused."""
        if (node.log_dir / "meta.properties").exists():
            return
        log_path = node.jvm_log_dir / "format.log"
        code = await run_to_completion(
            [
                *self._java(node, heap_mb=256),
                *format_arguments(self.layout.cluster_id, node.config_path),
            ],
            log_path=log_path,
            timeout_s=FORMAT_TIMEOUT_S,
        )
        if code != 0:
            raise ClusterStartError(
                f"formatting Apache Kafka node {node.address.node_id} failed: "
                f"{_last_line(log_path)} (log: {log_path})"
            )

    def _spawn(self, node: _Node) -> None:
        with (node.jvm_log_dir / "stdout.log").open("ab") as output:
            node.process = subprocess.Popen(
                [*self._java(node, heap_mb=self.heap_mb), "kafka.Kafka", str(node.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Safe with threads: it calls a function resolved before the fork (processes.py).
                preexec_fn=die_with_parent_kill,  # noqa: PLW1509
                # Its own session: a Ctrl-C at the terminal reaches us, and we stop the nodes.
                start_new_session=True,
            )
        logger.info(
            "Apache Kafka node %d started (pid %d) on %s",
            node.address.node_id,
            node.process.pid,
            node.address.bootstrap(),
        )

    def _raise_if_exited(self, node_id: int) -> None:
        node = self._node(node_id)
        if node.process is None:
            raise ClusterStartError(f"Apache Kafka node {node_id} is not running")
        code = node.process.poll()
        if code is not None:
            log = node.jvm_log_dir / "server.log"
            if not log.exists():
                log = node.jvm_log_dir / "stdout.log"
            raise ClusterStartError(
                f"Apache Kafka node {node_id} exited with code {code}: {_last_error(log)} "
                f"(log: {log})"
            )

    async def _serves(self, node_id: int) -> bool:
        address = self._node(node_id).address.bootstrap()
        metadata = await asyncio.to_thread(_metadata, address, timeout_s=_PROBE_TIMEOUT_S)
        if metadata is None or metadata.orig_broker_id != node_id:
            return False
        running = {n for n, node in self._nodes.items() if node.running}
        return running <= set(metadata.brokers)


class _Silent:
    """librdkafka's log lines while probing nodes that are still starting: connection refusals
    are the expected answer then, not news."""

    def log(self, level: int, message: str, *args: object) -> None:
        logger.debug(message, *args)


def _metadata(bootstrap: str, *, timeout_s: float) -> ClusterMetadata | None:
    """Metadata as the first of `bootstrap` to answer sees it; None if none answers in time.

    A new client each time: its first request goes to a bootstrap server, so a probe of one
    address hears that node and no other.
    """
    client = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
        },
        logger=_Silent(),
    )
    try:
        return client.list_topics(timeout=timeout_s)
    except KafkaException:
        return None


async def _exited(process: subprocess.Popen[bytes], *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _new_cluster_id() -> str:
    """A random cluster id in Kafka's form: a UUID in URL-safe base64, 22 characters."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka's own generator avoids these: they read as flags
            return text


def _free_addresses(count: int) -> tuple[NodeAddress, ...]:
    """2 x count distinct free loopback ports, all held open at once while picking."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(2 * count):
            sock = stack.enter_context(socket.socket())
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
    return tuple(
        NodeAddress(node_id=i + 1, port=ports[2 * i], controller_port=ports[2 * i + 1])
        for i in range(count)
    )


def _ports_free(address: NodeAddress) -> bool:
    for port in (address.port, address.controller_port):
        with socket.socket() as sock:
            # As the JVM binds: a port with connections in TIME_WAIT is still free to listen on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def _last_line(path: Path) -> str:
    lines = [line for line in _tail(path) if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _last_error(path: Path) -> str:
    lines = [line for line in _tail(path) if " ERROR " in line or "Exception" in line]
    return lines[-1].strip() if lines else _last_line(path)


def _tail(path: Path, size: int = 16384) -> list[str]:
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - size))
            return file.read().decode(errors="replace").splitlines()
    except OSError:
        return []
