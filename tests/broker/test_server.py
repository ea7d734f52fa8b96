"""The broker end to end with real clients: produce/consume, and bad input on the wire."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import Counter
from typing import Literal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition

from broker import BrokerThread
from broker.records import read_header
from tests.broker.helpers import create_topic

Client = Literal["confluent", "aiokafka"]
CLIENTS: list[Client] = ["confluent", "aiokafka"]

Record = tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]


def _records(count: int) -> list[Record]:
    return [
        (f"key-{i % 7}".encode(), f"value-{i}".encode(), (("n", str(i).encode()), ("src", b"t")))
        for i in range(count)
    ]


async def _produce(client: Client, bootstrap: str, topic: str, records: list[Record]) -> None:
    if client == "confluent":
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for key, value, headers in records:
            producer.produce(topic, value=value, key=key, headers=list(headers))
        assert producer.flush(20) == 0
        return
    aio = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await aio.start()
    try:
        for key, value, headers in records:
            await aio.send(topic, value=value, key=key, headers=list(headers))
        await aio.flush()
    finally:
        await aio.stop()


async def _consume(
    client: Client, bootstrap: str, topic: str, group: str, count: int
) -> list[tuple[int, Record]]:
    """(partition, record) for `count` records read by a group member from the beginning."""
    got: list[tuple[int, Record]] = []
    deadline = time.monotonic() + 30
    if client == "confluent":
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([topic])
        try:
            while len(got) < count and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                headers = tuple((k, v or b"") for k, v in message.headers() or [])
                got.append((message.partition(), (message.key(), message.value(), headers)))
        finally:
            consumer.close()
        return got
    aio = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await aio.start()
    try:
        while len(got) < count and time.monotonic() < deadline:
            batches = await aio.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    headers = tuple((k, v or b"") for k, v in message.headers)
                    got.append((tp.partition, (message.key, message.value, headers)))
    finally:
        await aio.stop()
    return got


@pytest.mark.parametrize("producer", CLIENTS)
@pytest.mark.parametrize("consumer", CLIENTS)
async def test_records_keep_keys_headers_and_key_partitioning(
    bootstrap_servers: str, unique_name: str, producer: Client, consumer: Client
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=3)
    sent = _records(60)

    await _produce(producer, bootstrap_servers, topic, sent)
    received = await _consume(consumer, bootstrap_servers, topic, unique_name, len(sent))

    assert Counter(record for _, record in received) == Counter(sent)
    partitions_of_key: dict[bytes, set[int]] = {}
    for partition, (key, _, _) in received:
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())
    assert len({partition for partition, _ in received}) > 1


@pytest.mark.parametrize("client", CLIENTS)
async def test_compacted_topic_accepts_and_serves_keyed_records(
    bootstrap_servers: str, unique_name: str, client: Client
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, partitions=2, config={"cleanup.policy": "compact"}
    )
    sent = _records(20)

    await _produce(client, bootstrap_servers, topic, sent)

    received = await _consume(client, bootstrap_servers, topic, unique_name, len(sent))
    assert sorted(record for _, record in received) == sorted(sent)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_stored_and_served_untouched(
    bootstrap_servers: str, embedded_broker: BrokerThread | None, unique_name: str, codec: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "compression.type": codec, "linger.ms": 20}
    )
    sent = [f"{codec}-{i}-".encode() * 20 for i in range(50)]
    for value in sent:
        producer.produce(topic, value)
    assert producer.flush(20) == 0

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name})
    consumer.assign([ConfluentPartition(topic, 0, 0)])
    received: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(received) < len(sent) and time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and not message.error():
            received.append(message.value())
    consumer.close()
    assert received == sent
    if embedded_broker is not None:
        stored = embedded_broker.call(_stored_codec, embedded_broker, topic)
        assert stored == CODEC_IDS[codec]


CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _stored_codec(runner: BrokerThread, topic: str) -> int:
    log = runner.broker.topics.partition(topic, 0)
    assert log is not None
    return read_header(log.read(0, 1 << 20, at_least_one=True)).attributes & 0x07


@pytest.mark.parametrize("client", CLIENTS)
async def test_idempotent_producers_get_a_producer_id_and_write_once(
    bootstrap_servers: str, unique_name: str, client: Client
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=2)
    sent = _records(40)
    if client == "confluent":
        producer = Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True})
        for key, value, headers in sent:
            producer.produce(topic, value=value, key=key, headers=list(headers))
        assert producer.flush(20) == 0
    else:
        aio = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
        await aio.start()
        try:
            for key, value, headers in sent:
                await aio.send(topic, value=value, key=key, headers=list(headers))
            await aio.flush()
        finally:
            await aio.stop()

    received = await _consume(client, bootstrap_servers, topic, unique_name, len(sent))
    assert Counter(record for _, record in received) == Counter(sent)


# --- bad input ----------------------------------------------------------------------------------


def _address(bootstrap_servers: str) -> tuple[str, int]:
    host, port = bootstrap_servers.split(",", maxsplit=1)[0].rsplit(":", 1)
    return host, int(port)


def _frame(
    api_key: int, version: int, correlation_id: int, body: bytes = b"", *, flexible: bool = False
) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test"
    if flexible:
        header += b"\x00"  # the flexible request header's (empty) tagged fields
    return struct.pack(">i", len(header) + len(body)) + header + body


def _read_frame(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", _read_exactly(sock, 4))[0]
    return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the broker closes (or resets) the connection instead of answering."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _api_versions_answered(bootstrap_servers: str) -> bool:
    with socket.create_connection(_address(bootstrap_servers), timeout=10) as sock:
        sock.sendall(_frame(18, 0, 77))
        reply = _read_frame(sock)
    correlation_id, error_code = struct.unpack_from(">ih", reply)
    return correlation_id == 77 and error_code == 0


@pytest.mark.parametrize(
    ("case", "payload"),
    [
        ("garbage", b"\x00\x00\x00\x0c" + b"\xde\xad\xbe\xef" * 3),
        ("oversized frame", struct.pack(">i", 0x7FFF_FFFF) + b"\x00" * 16),
        ("negative length", struct.pack(">i", -5)),
        ("unknown api key", _frame(9999, 0, 1)),
        ("unsupported version", _frame(1, 99, 1)),
        ("truncated body", _frame(3, 1, 1, b"\x00\x00\x00\x05\x00")),
    ],
)
def test_bad_input_drops_only_that_connection(
    bootstrap_servers: str,
    embedded_broker: BrokerThread | None,
    caplog: pytest.LogCaptureFixture,
    case: str,
    payload: bytes,
) -> None:
    bystander = socket.create_connection(_address(bootstrap_servers), timeout=10)
    caplog.set_level(logging.WARNING, logger="broker.server")

    with socket.create_connection(_address(bootstrap_servers), timeout=10) as offender:
        offender.sendall(payload)
        assert _closed_by_peer(offender), case

    # The connection opened before, and new ones, are still served.
    with bystander:
        bystander.sendall(_frame(18, 1, 5))
        assert struct.unpack_from(">ih", _read_frame(bystander)) == (5, 0)
    assert _api_versions_answered(bootstrap_servers)
    if embedded_broker is not None:
        assert any("closing connection" in r.getMessage() for r in caplog.records), case


def test_newer_api_versions_request_gets_v0_error_with_the_supported_range(
    bootstrap_servers: str,
) -> None:
    """KIP-511: the answer is ApiVersions v0 with UNSUPPORTED_VERSION listing (at least, and on
    Apache Kafka only) ApiVersions' own range. An unknown version is read with the flexible
    request header, as Apache Kafka reads it."""
    with socket.create_connection(_address(bootstrap_servers), timeout=10) as sock:
        sock.sendall(_frame(18, 99, 9, flexible=True))
        reply = _read_frame(sock)
        correlation_id, error_code, count = struct.unpack_from(">ihi", reply)
        ranges = [struct.unpack_from(">hhh", reply, 10 + 6 * i) for i in range(count)]
        assert (correlation_id, error_code) == (9, 35)
        api_versions = next(r for r in ranges if r[0] == 18)
        assert api_versions[1] == 0
        assert api_versions[2] >= 1
        # The connection stays usable: the client retries with a version listed.
        sock.sendall(_frame(18, 1, 10))
        assert struct.unpack_from(">ih", _read_frame(sock)) == (10, 0)


async def test_a_parked_fetch_returns_as_soon_as_a_record_arrives(
    bootstrap_servers: str, unique_name: str
) -> None:
    """The consumer long-polls with a max wait far above the test's timeout; getting the record
    at all proves the parked fetch was woken by the append rather than left to time out."""
    topic = create_topic(bootstrap_servers, unique_name)
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, fetch_max_wait_ms=60_000)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        assert await consumer.position(partition) == 0
        waiting = asyncio.ensure_future(consumer.getone())
        await producer.send_and_wait(topic, b"wake up")
        message = await asyncio.wait_for(waiting, 10)
        assert message.value == b"wake up"
    finally:
        await producer.stop()
        await consumer.stop()
