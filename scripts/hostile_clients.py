"""Gateway memory under hostile WebSocket clients: its RSS while 100 of them attack it.

    python scripts/hostile_clients.py [--clients 100] [--duration 30] [--frame-bytes 1000000]
                                      [--kinds echo,valid,binary,flood] [--tree PATH]
                                      [--stop-above-mb 3000] [--json FILE]

Starts an embedded broker and one `teleprompter gateway` process (the code in --tree, this
checkout by default: point it at another checkout to measure "before"), then runs the
clients, a quarter of each kind, each on a conversation of its own, none ever reading what
the gateway sends back:

- echo:   text frames of --frame-bytes whose `type` is the whole frame (an error used to quote
          it back in full);
- valid:  transcript_chunk frames of --frame-bytes (stored in Kafka, acked if seq'd);
- binary: audio frames of --frame-bytes;
- flood:  tiny transcript_chunk frames as fast as the socket takes them.

A client the gateway closes comes straight back (100 ms later). The gateway's RSS is sampled
every 0.5 s; the report gives its RSS before, the median and peak (VmHWM) during, what the
gateway counted (closes, errors, replaced sockets), and the load average. The attack stops
early if the gateway passes --stop-above-mb. docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from core.tokens import TokenSigner

SECRET = "hostile-clients-signing-secret-0123456789"
KINDS = ("echo", "valid", "binary", "flood")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


REPORTED_METRICS = (
    "teleprompter_gateway_slow_client_closes_total",
    "teleprompter_gateway_protocol_errors_total",
    "teleprompter_gateway_connection_attempts_total",
    "teleprompter_gateway_replaced_sockets_total",
    "teleprompter_gateway_produce_failures_total",
)


async def gateway_metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """What the gateway counted (of REPORTED_METRICS), from its /metrics."""
    try:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError as exc:
        return {"unavailable": 0.0, type(exc).__name__: 0.0}
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith(REPORTED_METRICS)
        for name, value in [line.rsplit(maxsplit=1)]
    }


async def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)  # the broker is starting
            continue
        writer.close()
        return


async def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)  # polling an HTTP endpoint
    raise TimeoutError(f"{url} never said 200")


def create_topics(settings: Settings) -> None:
    catalog = TopicCatalog.from_settings(settings)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=1)
            for s in catalog.shared_topics
        ],
        request_timeout=30,
    )
    for future in futures.values():
        try:
            future.result(30)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class Client:
    """One hostile client: sends its kind of frame until the run ends, never reads."""

    def __init__(self, *, kind: str, url: str, frame_bytes: int, stats: Counter[str]) -> None:
        self.kind = kind
        self.url = url
        self.stats = stats
        self.stop = False
        if kind == "echo":
            self.frame: str | bytes = json.dumps({"type": "x" * (frame_bytes - 12)})
        elif kind == "valid":
            text = "y" * (frame_bytes - 60)
            self.frame = json.dumps({"type": "transcript_chunk", "text": text})
        elif kind == "binary":
            self.frame = bytes(frame_bytes - frame_bytes % 2)
        else:
            self.frame = json.dumps({"type": "transcript_chunk", "text": "spam"})

    async def run(self, http: aiohttp.ClientSession, until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until and not self.stop:
            try:
                # autoping off and never receive(): aiohttp stops reading once its buffer fills.
                ws = await http.ws_connect(self.url, autoping=False, max_msg_size=0)
            except (aiohttp.ClientError, OSError) as exc:
                self.stats[f"connect failed: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)  # a hostile client comes back
                continue
            self.stats["connections"] += 1
            try:
                while loop.time() < until and not ws.closed and not self.stop:
                    if isinstance(self.frame, bytes):
                        await ws.send_bytes(self.frame)
                    else:
                        await ws.send_str(self.frame)
                    self.stats[f"{self.kind} frames"] += 1
                    if self.kind == "flood":
                        await asyncio.sleep(0)  # let the other clients send too
            except (ConnectionError, aiohttp.ClientError):
                pass
            self.stats["disconnects"] += 1
            await ws.close()
            await asyncio.sleep(0.1)


async def start_gateway(
    tree: Path, work: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, asyncio.subprocess.Process, str]:
    """An embedded broker (this checkout's) and a gateway (the tree's) on it; its URL."""
    port = free_port()
    broker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "broker",
        "--port",
        str(port),
        "--data-dir",
        str(work / "broker"),
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(work / "broker.log").open("wb"),
    )
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{port}", topic_prefix="hostile", partitions=4
    )
    await wait_port(port)
    deadline = time.monotonic() + 60
    while True:
        try:
            await asyncio.to_thread(create_topics, settings)
            break
        except confluent_kafka.KafkaException:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)  # the broker is starting
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "gateway",
        "--port",
        "0",
        "--gateway-id",
        "gw-hostile",
        env={
            **env,
            "PYTHONPATH": str(tree),
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "TELEPROMPTER_SECRET": SECRET,
            "TELEPROMPTER_DATA_DIR": str(work / "gateway"),
            "TELEPROMPTER_TOPIC_PREFIX": settings.topic_prefix,
        },
        cwd=tree,  # `python -m` looks in the working directory first
        stdout=asyncio.subprocess.PIPE,
        stderr=(work / "gateway.log").open("wb"),
    )
    assert gateway.stdout is not None
    line = await asyncio.wait_for(gateway.stdout.readline(), 60)
    url = line.decode().split()[-1]
    await wait_http(f"{url}/healthz")
    return broker, gateway, url


async def attack(
    args: argparse.Namespace, gateway: asyncio.subprocess.Process, url: str
) -> dict[str, Any]:
    """Run the clients for the duration; the gateway's memory and what happened to them."""
    signer = TokenSigner(SECRET.encode())
    before_kib = rss_kib(gateway.pid, "VmRSS")
    load_before = os.getloadavg()
    stats: Counter[str] = Counter()
    clients = []
    for index in range(args.clients):
        cid = f"hostile-{index}-{uuid.uuid4().hex[:6]}"
        token = signer.issue(cid, ttl_s=3600)
        clients.append(
            Client(
                kind=args.kinds[index % len(args.kinds)],
                url=f"{url.replace('http', 'ws', 1)}/ws?conversation_id={cid}&token={token}",
                frame_bytes=args.frame_bytes,
                stats=stats,
            )
        )
    samples: list[int] = []
    loop = asyncio.get_running_loop()
    until = loop.time() + args.duration

    stopped_at_s: float | None = None
    started = loop.time()

    async def sample() -> None:
        nonlocal stopped_at_s
        while loop.time() < until:
            samples.append(rss_kib(gateway.pid, "VmRSS"))
            if samples[-1] > args.stop_above_mb * 1024:
                # A shared machine: stop before the gateway takes it down.
                stopped_at_s = round(loop.time() - started, 1)
                for client in clients:
                    client.stop = True
                return
            await asyncio.sleep(0.5)  # the sampling interval

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(sample(), *(client.run(http, until) for client in clients))
        metrics = await gateway_metrics(http, url)
    return {
        "clients": args.clients,
        "duration_s": args.duration,
        "frame_bytes": args.frame_bytes,
        "kinds": args.kinds,
        "rss_before_mb": round(before_kib / 1024, 1),
        "rss_median_mb": round(statistics.median(samples) / 1024, 1),
        "rss_peak_mb": round(rss_kib(gateway.pid, "VmHWM") / 1024, 1),
        "rss_after_mb": round(rss_kib(gateway.pid, "VmRSS") / 1024, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "gateway_alive": gateway.returncode is None,
        "stopped_above_limit_after_s": stopped_at_s,
        "clients_saw": dict(sorted(stats.items())),
        "gateway_counted": metrics,
    }


async def main(args: argparse.Namespace, tree: Path, work: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEPROMPTER_")}
    broker: asyncio.subprocess.Process | None = None
    gateway: asyncio.subprocess.Process | None = None
    try:
        broker, gateway, url = await start_gateway(tree, work, env)
        return {"tree": str(tree), **await attack(args, gateway, url)}
    finally:
        for process in (gateway, broker):
            if process is not None and process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of attack")
    parser.add_argument("--frame-bytes", type=int, default=1_000_000)
    parser.add_argument(
        "--kinds",
        type=lambda value: value.split(","),
        default=list(KINDS),
        help=f"comma-separated, from {','.join(KINDS)} (all by default, in equal shares)",
    )
    parser.add_argument(
        "--stop-above-mb",
        type=float,
        default=3000.0,
        help="end the attack early if the gateway's RSS passes this (a shared machine)",
    )
    parser.add_argument("--tree", default=str(REPO), help="the checkout whose gateway runs")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        result = asyncio.run(main(arguments, Path(arguments.tree).resolve(), scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n")
