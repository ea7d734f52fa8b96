"""Finding 3, silent transcript loss: every message a client sends is acked once Kafka has it,
or resent by the client until it is, across a broker outage and a gateway killed with -9.

The clients are the bench's `ResendingSocket` (the page's connection.js in Python): real
WebSockets to real gateway processes, and real Kafka.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from pathlib import Path

import aiohttp
import pytest

from broker import BrokerThread
from schemas.events import TranscriptSegment
from teleprompter.bench.resending_socket import ResendingSocket
from tests.faults.gateway_process import GatewayProcess, create_shared_topics, fault_settings
from tests.gateway.conftest import read_events

pytestmark = pytest.mark.slow

ACK_WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ignore(message: dict[str, object], at: float) -> None:
    """These clients only send; what the server says besides acks does not matter here."""


async def segment_ids(
    bootstrap_servers: str, topic: str, conversation_id: str, count: int
) -> set[str]:
    events = await read_events(
        bootstrap_servers, topic, conversation_id=conversation_id, count=count
    )
    return {e.segment_id for e in events if isinstance(e, TranscriptSegment)}


async def test_a_broker_down_for_15_s_loses_none_of_1260_chunks(tmp_path: Path) -> None:
    """Before: the gateway gave up after 10 s and 80 of 1,260 chunks were lost, the client
    hearing only "unavailable", at most once a second, without learning which."""
    port = free_port()
    brokers = [BrokerThread(data_dir=tmp_path / "broker", port=port)]
    brokers[0].start()
    try:
        settings = fault_settings(brokers[0].bootstrap_servers)
        catalog = await create_shared_topics(settings)
        conversations = [f"outage-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
        async with (
            GatewayProcess(
                settings=settings, gateway_id="gw-outage", data_dir=tmp_path / "gw"
            ) as gateway,
            aiohttp.ClientSession() as http,
        ):
            clients = [
                ResendingSocket(http=http, urls=[gateway.connect_url(cid)], on_message=ignore)
                for cid in conversations
            ]
            assert all([await client.connect() for client in clients])

            async def talk(client: ResendingSocket) -> None:
                for n in range(420):  # 20 chunks a second for 21 s
                    await client.send_json(
                        {"type": "transcript_chunk", "text": f"Chunk {n}.", "final": n % 5 == 4}
                    )
                    await asyncio.sleep(0.05)  # the client's pace

            async def outage() -> None:
                await asyncio.sleep(3.0)
                await asyncio.to_thread(brokers[0].stop)
                await asyncio.sleep(15.0)  # the broker is down this long
                brokers.append(BrokerThread(data_dir=tmp_path / "broker", port=port))
                await asyncio.to_thread(brokers[-1].start)

            await asyncio.gather(outage(), *(talk(client) for client in clients))
            settled = [await client.wait_settled(ACK_WAIT_S) for client in clients]
            counts = [client.counts for client in clients]
            for client in clients:
                await client.close()
            assert sum(c.messages_sent for c in counts) == 1260
            assert [c.refusals for c in counts] == [{}, {}, {}], "a chunk was refused"
            assert settled == [True, True, True], "a chunk was never acked"
            assert sum(c.messages_acked for c in counts) == 1260
            for client, cid in zip(clients, conversations, strict=True):
                stored = await segment_ids(
                    settings.bootstrap_servers, catalog.transcripts.name, cid, 420
                )
                assert stored >= {f"{client.client_id}:{n}" for n in range(420)}
    finally:
        for broker in brokers:
            await asyncio.to_thread(broker.stop)


async def test_chunks_sent_to_a_gateway_killed_with_9_are_resent_to_another(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    """Before: a gateway kill -9 lost the chunks sent just before it."""
    settings = fault_settings(bootstrap_servers)
    catalog = await create_shared_topics(settings)
    cid = f"kill9-{uuid.uuid4().hex[:6]}"
    async with (
        GatewayProcess(
            settings=settings, gateway_id="gw-doomed", data_dir=tmp_path / "a"
        ) as doomed,
        GatewayProcess(settings=settings, gateway_id="gw-spare", data_dir=tmp_path / "b") as spare,
        aiohttp.ClientSession() as http,
    ):
        client = ResendingSocket(
            http=http, urls=[doomed.connect_url(cid), spare.connect_url(cid)], on_message=ignore
        )
        assert await client.connect()
        for n in range(20):
            await client.send_json({"type": "transcript_chunk", "text": f"Before {n}."})
        assert await client.wait_settled(ACK_WAIT_S)
        # Frozen, the gateway can neither store nor ack what comes next; then it dies.
        assert doomed.process is not None
        doomed.process.send_signal(signal.SIGSTOP)
        for n in range(20):
            await client.send_json({"type": "transcript_chunk", "text": f"Unacked {n}."})
        doomed.process.send_signal(signal.SIGKILL)
        await doomed.process.wait()
        for n in range(20):
            await client.send_json({"type": "transcript_chunk", "text": f"After {n}."})
        assert await client.wait_settled(ACK_WAIT_S), "a chunk was never acked"
        await client.close()
        assert client.counts.reconnects >= 1
        assert client.counts.resent >= 20  # the frozen gateway's chunks went again
        assert client.counts.messages_acked == 60
        stored = await segment_ids(bootstrap_servers, catalog.transcripts.name, cid, 60)
        assert stored >= {f"{client.client_id}:{n}" for n in range(60)}
