"""A running gateway on an ephemeral port against the session's broker, and Kafka helpers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import confluent_kafka
import pytest
from aiohttp import web
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import SecretStr

from core.kafka.catalog import TopicCatalog, TopicSpec
from core.settings import Settings
from core.tokens import TokenSigner
from gateway.app import GATEWAY_KEY, Gateway, create_app
from gateway.metrics import GatewayMetrics
from gateway.server import create_runner
from schemas.codec import default_codec
from schemas.events import Event

SECRET = "gateway-tests-signing-secret-0123456789"
TIMEOUT_S = 15.0


def gateway_settings(bootstrap_servers: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a gateway with topics and an id of its own."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "data_dir": data_dir,
        "topic_prefix": f"gwt{tag}",
        "gateway_id": f"gw-{tag}",
        "gateway_port": 0,
        "partitions": 2,
        "secret": SecretStr(SECRET),
        **overrides,
    }
    return Settings(**values)


def create_topics(bootstrap_servers: str, specs: list[TopicSpec]) -> None:
    """Create topics (blocking; call through asyncio.to_thread)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1) for s in specs],
        request_timeout=TIMEOUT_S,
    )
    for future in futures.values():
        try:
            future.result(TIMEOUT_S)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise


@dataclass(kw_only=True)
class RunningGateway:
    """A gateway app served on 127.0.0.1 with an HTTP client pointed at it."""

    settings: Settings
    runner: web.AppRunner
    url: str
    http: aiohttp.ClientSession
    signer: TokenSigner = field(default_factory=lambda: TokenSigner(SECRET.encode()))
    stopped: bool = False

    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY_KEY]

    @property
    def metrics(self) -> GatewayMetrics:
        return self.gateway.metrics

    @property
    def catalog(self) -> TopicCatalog:
        return self.gateway.catalog

    @property
    def reply_topic(self) -> str:
        return self.gateway.reply_topic.name

    def token(self, conversation_id: str, *, ttl_s: float = 300.0) -> str:
        return self.signer.issue(conversation_id, rep="tester", ttl_s=ttl_s)

    def ws_url(
        self,
        conversation_id: str | None,
        *,
        token: str | None = None,
        client_id: str | None = None,
    ) -> str:
        query = []
        if conversation_id is not None:
            query.append(f"conversation_id={conversation_id}")
        if token is not None:
            query.append(f"token={token}")
        if client_id is not None:
            query.append(f"client_id={client_id}")
        return f"{self.url}/ws?{'&'.join(query)}"

    async def connect(
        self,
        conversation_id: str,
        *,
        client_id: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
        """An authenticated socket and its `ready` message."""
        ws = await self.http.ws_connect(
            self.ws_url(
                conversation_id,
                token=token or self.token(conversation_id),
                client_id=client_id,
            ),
            **kwargs,
        )
        ready = await receive_json(ws)
        assert ready["type"] == "ready", ready
        return ws, ready

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


async def start_gateway(
    bootstrap_servers: str,
    data_dir: Path,
    http: aiohttp.ClientSession,
    *,
    app_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> RunningGateway:
    settings = gateway_settings(bootstrap_servers, data_dir, **overrides)
    catalog = TopicCatalog.from_settings(settings)
    await asyncio.to_thread(create_topics, settings.bootstrap_servers, list(catalog.shared_topics))
    app = create_app(settings, **(app_options or {}))
    runner = create_runner(app, settings, shutdown_timeout_s=TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    running = RunningGateway(
        settings=settings, runner=runner, url=f"http://{host}:{port}", http=http
    )
    await asyncio.wait_for(running.gateway.wait_ready(), TIMEOUT_S)
    return running


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def gateway_factory(
    bootstrap_servers: str, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[GatewayFactory]:
    """Starts gateways (settings overrides as keywords); all are stopped after the test."""
    started: list[RunningGateway] = []

    async def start(**overrides: Any) -> RunningGateway:
        running = await start_gateway(bootstrap_servers, tmp_path, http, **overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest.fixture(scope="module")
async def shared_gateway(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    """One gateway for the tests of a module that do not stop or reconfigure it."""
    async with aiohttp.ClientSession() as http:
        running = await start_gateway(
            bootstrap_servers, tmp_path_factory.mktemp("gateway"), http, max_msg_size=64 * 1024
        )
        try:
            yield running
        finally:
            await running.stop()


@pytest.fixture
def conversation_id() -> str:
    return f"conv-{uuid.uuid4().hex[:10]}"


# --- WebSocket helpers -----------------------------------------------------------------


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=TIMEOUT_S)
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    data: dict[str, Any] = json.loads(message.data)
    return data


async def receive_answers(
    ws: aiohttp.ClientWebSocketResponse, seqs: set[int]
) -> dict[int, dict[str, Any]]:
    """The `ack` or `error` answering each of `seqs` (other messages are skipped)."""
    answers: dict[int, dict[str, Any]] = {}
    while set(answers) != seqs:
        message = await receive_json(ws)
        if message["type"] in ("ack", "error") and message.get("seq") in seqs:
            assert message["seq"] not in answers, f"answered twice: {message}"
            answers[message["seq"]] = message
    return answers


async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The close the server sends, skipping whatever text arrives before it."""
    while True:
        message = await ws.receive(timeout=TIMEOUT_S)
        if message.type is not aiohttp.WSMsgType.TEXT:
            return message


# --- Kafka helpers ---------------------------------------------------------------------


def _read_blocking(
    bootstrap_servers: str, topic: str, key: str, count: int, timeout_s: float
) -> list[tuple[bytes | None, Event]]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = metadata.topics[topic].partitions
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in partitions
            ]
        )
        found: list[tuple[bytes | None, Event]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count and time.monotonic() < deadline:
            record = consumer.poll(0.1)
            if record is None or record.error() is not None:
                continue
            event = default_codec().decode(record.value() or b"", topic=topic)
            if event.conversation_id == key:
                found.append((record.key(), event))
        return found
    finally:
        consumer.close()


async def read_events(
    bootstrap_servers: str, topic: str, *, conversation_id: str, count: int
) -> list[Event]:
    """The first `count` events of a conversation on `topic`, checked to be keyed by it."""
    found = await asyncio.to_thread(
        _read_blocking, bootstrap_servers, topic, conversation_id, count, TIMEOUT_S
    )
    assert len(found) >= count, f"{len(found)} of {count} events for {conversation_id} on {topic}"
    for key, _event in found:
        assert key == conversation_id.encode()
    return [event for _key, event in found]


def _produce_blocking(
    bootstrap_servers: str, topic: str, records: list[tuple[bytes, bytes]]
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 0})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(TIMEOUT_S) == 0


async def produce_events(bootstrap_servers: str, topic: str, events: list[Event]) -> None:
    """Produce like a worker does: encoded with the codec, keyed by conversation, in order."""
    records = [(event.key, default_codec().encode(event)) for event in events]
    await asyncio.to_thread(_produce_blocking, bootstrap_servers, topic, records)


async def produce_raw(bootstrap_servers: str, topic: str, key: bytes, value: bytes) -> None:
    await asyncio.to_thread(_produce_blocking, bootstrap_servers, topic, [(key, value)])


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# The page's browser and stand-in gateway, for test_connection.py as well as test_page.py.
from tests.gateway.test_page import (  # noqa: E402, F401  # fixtures by import
    browser,
    chromium,
    customer_audio,
    rep_wav,
    stand_in,
)
