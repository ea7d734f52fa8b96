"""`teleprompter gateway` as a real process: serves, then stops cleanly on SIGTERM; and the
server's HTTP limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from tests.gateway.conftest import (
    TIMEOUT_S,
    GatewayFactory,
    create_topics,
    receive_close,
    receive_json,
)


async def wait_healthy(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            async with http.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/healthz never said 200")
        await asyncio.sleep(0.05)  # polling an HTTP endpoint: it has nothing to wait on


async def test_gateway_command_serves_until_sigterm_and_closes_sockets_1001(
    bootstrap_servers: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "TELEPROMPTER_DATA_DIR": str(tmp_path),
        "TELEPROMPTER_TOPIC_PREFIX": f"srv{tag}",
        "TELEPROMPTER_PARTITIONS": "1",
    }
    env.pop("TELEPROMPTER_SECRET", None)  # the gateway creates one under its data dir
    catalog = TopicCatalog.from_settings(Settings(topic_prefix=f"srv{tag}", partitions=1))
    await asyncio.to_thread(create_topics, bootstrap_servers, list(catalog.shared_topics))
    with (tmp_path / "gateway.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teleprompter",
            "gateway",
            "--port",
            "0",
            "--gateway-id",
            f"gw-{tag}",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)
        assert line.startswith(b"gateway listening on http://"), line
        url = line.decode().split()[-1]
        await wait_healthy(http, url)

        # `teleprompter token` reads the secret the gateway created in the same data dir.
        tokens = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teleprompter",
            "token",
            "--conversation",
            "conv-sigterm",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        token_out, _ = await asyncio.wait_for(tokens.communicate(), TIMEOUT_S)
        assert tokens.returncode == 0
        token = token_out.decode().strip()

        ws = await http.ws_connect(f"{url}/ws?conversation_id=conv-sigterm&token={token}")
        assert (await receive_json(ws))["type"] == "ready"
        process.send_signal(signal.SIGTERM)
        close = await receive_close(ws)
        assert close.type is aiohttp.WSMsgType.CLOSE
        assert close.data == 1001
        assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0
        log = (tmp_path / "gateway.log").read_text()
        assert '"GET /ws"' in log  # requests are logged...
        assert token not in log  # ...but never their tokens
        # Stopped accepting: nothing listens on the port any more.
        try:
            async with http.get(f"{url}/healthz") as response:
                raise AssertionError(f"still serving after SIGTERM: {response.status}")
        except aiohttp.ClientConnectionError:
            pass
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_connection_that_never_finishes_its_request_head_is_closed(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(http_header_timeout_s=0.5)
    host, port = gw.url.removeprefix("http://").split(":")
    slow = []
    for i in range(20):
        reader, writer = await asyncio.open_connection(host, int(port))
        if i % 2:  # half send part of a head and stop; half send nothing at all
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            await writer.drain()
        slow.append((reader, writer))
    for reader, writer in slow:
        # The server hangs up: EOF (or a reset), never a response.
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
        writer.close()
    # A client that sends its head in time is served as usual.
    async with gw.http.get(f"{gw.url}/healthz") as response:
        assert response.status == 200
