"""Findings 1 and 2: nobody can exhaust a gateway's memory, or flood Kafka and the workers,
through its WebSocket. Hostile clients against a real gateway process and real Kafka.

Before: the send queue was bounded by count (256), errors echoed their input, sockets per
conversation were unlimited (50 on one token accepted) and nothing limited rates: one client
sending 1 MB frames and never reading pinned ~250 MB, 4 took the gateway from 68 MB to
1,065 MB, and 4 sockets sent 91,400 chunks in 30 s. scripts/hostile_clients.py measures RSS
under 100 such clients; docs/reliability.md has the figures.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teleprompter.bench.resending_socket import ResendingSocket
from tests.faults.gateway_process import (
    GatewayProcess,
    count_events,
    create_shared_topics,
    fault_settings,
    rss_mb,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# Far above the bound docs/reliability.md measures, far below the 1 GB of the finding: this
# catches the bug coming back, it is not a memory target.
RSS_GROWTH_LIMIT_MB = 300.0


def ignore(message: dict[str, Any], at: float) -> None:
    """These clients only send."""


async def honest_client(
    http: aiohttp.ClientSession, gateway: GatewayProcess, stop: asyncio.Event
) -> ResendingSocket:
    """A rep typing a line every 100 ms until `stop`: every line must be acked."""
    client = ResendingSocket(
        http=http, urls=[gateway.connect_url(f"honest-{uuid.uuid4().hex[:6]}")], on_message=ignore
    )
    assert await client.connect()
    n = 0
    while not stop.is_set():
        await client.send_json({"type": "transcript_chunk", "text": f"Honest line {n}."})
        n += 1
        await asyncio.sleep(0.1)  # a human's pace
    return client


CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def last_frame(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """Read (at last) what the server sent, up to its close."""
    while True:
        message = await ws.receive(timeout=60)
        if message.type in CLOSED:
            return message


async def never_reading(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A socket whose client never calls receive(): aiohttp stops reading from TCP once its
    small buffer is full, so the gateway's writes back up."""
    return await http.ws_connect(url, autoping=False, max_msg_size=0)


async def test_hostile_clients_cannot_pin_the_gateways_memory(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fault_settings(bootstrap_servers)
    await create_shared_topics(settings)
    async with (
        GatewayProcess(settings=settings, gateway_id="gw-memory", data_dir=tmp_path) as gateway,
        aiohttp.ClientSession() as http,
    ):
        stop = asyncio.Event()
        honest = asyncio.create_task(honest_client(http, gateway, stop))
        before_mb = rss_mb(gateway.pid)
        frame = settings.max_msg_size - 1
        echo_bait = json.dumps({"type": "x" * (frame - 12)})  # an error used to echo this
        valid = json.dumps({"type": "transcript_chunk", "text": "y" * (frame - 80), "seq": 0})

        async def big_frames(cid: str, payload: str) -> None:
            ws = await never_reading(http, gateway.connect_url(cid))
            for _ in range(40):  # 20 MB each
                await ws.send_str(payload)

        async def flood(cid: str) -> aiohttp.ClientWebSocketResponse:
            ws = await never_reading(http, gateway.connect_url(cid))
            for seq in range(20_000):
                # Each names its seq, so each gets an error of its own: never read.
                await ws.send_str(f'{{"seq": {seq}}}')
            return ws

        await asyncio.gather(
            *(big_frames("hostile-echo", echo_bait) for _ in range(4)),
            *(big_frames("hostile-valid", valid) for _ in range(4)),
        )
        flooders = await asyncio.gather(*(flood(f"hostile-flood-{i}") for i in range(2)))
        # 50 sockets on one token: the gateway keeps at most its cap open.
        crowd = [await http.ws_connect(gateway.connect_url("hostile-crowd")) for _ in range(50)]
        stop.set()
        client = await honest
        assert await client.wait_settled(60.0), "the honest rep's lines were not all acked"
        await client.close()

        grown_mb = rss_mb(gateway.pid, "VmHWM") - before_mb
        assert grown_mb < RSS_GROWTH_LIMIT_MB, f"the gateway grew {grown_mb:.0f} MB"
        print(f"gateway RSS {before_mb:.0f} MB, peak {before_mb + grown_mb:.0f} MB")
        # The flooders' unread errors filled their byte-bounded queues: closed 1013 or cut.
        assert await gateway.metric("teleprompter_gateway_slow_client_closes_total") >= 2
        for ws in flooders:
            assert (await last_frame(ws)).type in CLOSED, "a flooder was never closed"
        for ws in crowd[:-4]:
            close = await last_frame(ws)
            assert (close.type, close.data, close.extra) == (
                aiohttp.WSMsgType.CLOSE,
                4002,
                "replaced",
            )
        replaced = await gateway.metric("teleprompter_gateway_replaced_sockets_total")
        assert replaced >= 46
        for ws in crowd:
            await ws.close()


async def test_a_flood_is_rate_limited_per_conversation_and_others_are_served(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fault_settings(bootstrap_servers)
    catalog = await create_shared_topics(settings)
    flooded = f"flood-{uuid.uuid4().hex[:6]}"
    async with (
        GatewayProcess(settings=settings, gateway_id="gw-flood", data_dir=tmp_path) as gateway,
        aiohttp.ClientSession() as http,
    ):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        honest = [asyncio.create_task(honest_client(http, gateway, stop)) for _ in range(3)]
        answers: dict[str, int] = {}

        async def flood(index: int) -> int:
            """Chunks as fast as the socket takes them for 5 s; returns how many were sent."""
            ws = await http.ws_connect(f"{gateway.connect_url(flooded)}&client_id=f{index}")
            assert json.loads((await ws.receive(timeout=30)).data)["type"] == "ready"
            answered: set[int] = set()

            async def read() -> None:
                async for frame in ws:
                    message = json.loads(frame.data)
                    if "seq" in message and message["seq"] not in answered:
                        answered.add(message["seq"])
                        kind = message.get("code") or message["type"]
                        answers[kind] = answers.get(kind, 0) + 1

            reader = asyncio.create_task(read())
            sent = 0
            deadline = loop.time() + 5.0
            while loop.time() < deadline and not ws.closed:
                try:
                    await ws.send_str(
                        json.dumps(
                            {"type": "transcript_chunk", "text": f"Spam {sent}.", "seq": sent}
                        )
                    )
                except (ConnectionError, aiohttp.ClientError):
                    break  # cut for reading too slowly (1013)
                sent += 1
                if sent % 20 == 0:
                    await asyncio.sleep(0)  # let the reader keep up
            # Every chunk is answered, unless the gateway cut this client for reading too
            # slowly (1013): then its unanswered chunks are the client's to resend.
            await wait_until(
                lambda: len(answered) == sent or ws.closed,
                timeout_s=60,
                what="an answer to every chunk",
            )
            await ws.close()
            await reader
            return sent

        started = loop.time()
        sent = await asyncio.gather(*(flood(i) for i in range(4)))
        elapsed_s = loop.time() - started
        stop.set()
        for task in honest:
            client = await task
            assert await client.wait_settled(60.0), "an honest conversation lost a line"
            assert client.counts.refusals == {}
            await client.close()

        stored = await count_events(
            bootstrap_servers, catalog.transcripts.name, conversation_id=flooded
        )
        budget = settings.ws_rate_burst_messages + settings.ws_rate_messages_per_s * elapsed_s
        assert answers.get("ack", 0) <= stored <= budget, (answers, stored, budget)
        assert answers.get("rate_limited", 0) > 0
        print(f"flood: {sum(sent)} chunks sent in {elapsed_s:.1f} s, {stored} stored, {answers}")
