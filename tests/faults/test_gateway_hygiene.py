"""Findings 8 and 9 (the gateway's part): hostile text, frames too big for Kafka, slow-header
connections and expired tokens, against a real gateway process.

Before: a lone UTF-16 surrogate logged a traceback per frame and, in transcript text, came back
as `unavailable`; frames of 1,000,000-1,048,575 bytes got `unavailable` though no retry could
store them; 300 slow-header connections were all still open after 60 s; a session outlived
its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.faults.gateway_process import GatewayProcess, create_shared_topics, fault_settings

pytestmark = pytest.mark.slow

SLOW_HEADER_CONNECTIONS = 300


async def answers(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, object]]:
    got: list[dict[str, object]] = []
    while len(got) < count:
        message = await ws.receive(timeout=30)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        data = json.loads(message.data)
        if data["type"] in ("ack", "error"):
            got.append(data)
    return got


async def test_hostile_text_big_frames_slow_headers_and_expired_tokens(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fault_settings(bootstrap_servers)
    await create_shared_topics(settings)
    async with (
        GatewayProcess(settings=settings, gateway_id="gw-hygiene", data_dir=tmp_path) as gateway,
        aiohttp.ClientSession() as http,
    ):
        # Slow headers: a few bytes of a request head, then nothing, 300 times over.
        host, port = gateway.url.removeprefix("http://").split(":")
        slow = []
        for i in range(SLOW_HEADER_CONNECTIONS):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /ws?conversation_id=c HTTP/1.1\r\nHost: gw\r\n"[: 10 + i % 30])
            slow.append((reader, writer))
        opened = time.monotonic()

        # Lone surrogates, in transcript text and elsewhere: `bad_text` naming the seq.
        ws = await http.ws_connect(gateway.connect_url("hygiene") + "&client_id=c")
        for seq in range(200):
            where = ("text", "speaker", "type")[seq % 3]
            frame = {"type": "transcript_chunk", "text": "Hello.", "seq": seq}
            frame[where] = "SURROGATE"
            await ws.send_str(json.dumps(frame).replace("SURROGATE", "caf\\ud800"))
        got = await answers(ws, 200)
        assert {(m["type"], m["code"]) for m in got} == {("error", "bad_text")}
        assert sorted(int(str(m["seq"])) for m in got) == list(range(200))
        await ws.send_str(json.dumps({"type": "transcript_chunk", "text": "Fine.", "seq": 200}))
        assert (await answers(ws, 1))[0] == {"type": "ack", "seq": 200}
        await ws.close()

        # Frames Kafka could not store are refused as too big (1009), not as `unavailable`.
        for size in (1_000_000, 1_048_575):
            ws = await http.ws_connect(gateway.connect_url(f"big-{size}"), max_msg_size=0)
            await ws.send_str("x" * size)
            close = await ws.receive(timeout=30)
            while close.type is aiohttp.WSMsgType.TEXT:
                close = await ws.receive(timeout=30)
            assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 1009), close

        # A token that expires ends its session: 4001 token_expired.
        token = gateway.signer.issue("expiring", ttl_s=2)
        ws = await http.ws_connect(f"{gateway.ws_url}?conversation_id=expiring&token={token}")
        close = await ws.receive(timeout=30)
        while close.type is aiohttp.WSMsgType.TEXT:
            close = await ws.receive(timeout=30)
        assert (close.type, close.data, close.extra) == (
            aiohttp.WSMsgType.CLOSE,
            4001,
            "token_expired",
        )

        # Every slow-header connection was cut by the header timeout, well before 60 s.
        for reader, writer in slow:
            remaining = max(1.0, 60.0 - (time.monotonic() - opened))
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), remaining) == b""
            writer.close()

        log = gateway.log()
        assert "Traceback" not in log, log[-4000:]
