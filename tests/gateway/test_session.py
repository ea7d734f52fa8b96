"""A session: its send queue, then acks, resend ids, audio offsets and token expiry end to end
(real WebSocket clients, the real app, the session's real broker)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import aiohttp
import pytest

from core.tokens import TokenSigner
from gateway.protocol import (
    ErrorMessage,
    ServerMessage,
    SuggestionCancelled,
    SuggestionComplete,
    SuggestionDelta,
    SuggestionFailed,
    Throttled,
    Transcript,
)
from gateway.session import QUEUED_MESSAGE_OVERHEAD_BYTES, Outgoing, SendQueue
from schemas.events import AudioChunk, TranscriptSegment
from tests.gateway.conftest import (
    SECRET,
    GatewayFactory,
    RunningGateway,
    read_events,
    receive_answers,
    receive_close,
    receive_json,
)
from tests.waiting import wait_until

# Room for one of the small messages below (each under 100 bytes of JSON).
SLOT = QUEUED_MESSAGE_OVERHEAD_BYTES + 100


def delta(turn: str, seq: int, full: str) -> SuggestionDelta:
    return SuggestionDelta(turn_id=turn, seq=seq, text=full[-1], full_text=full)


async def take_all(queue: SendQueue) -> list[ServerMessage]:
    return [(await queue.get()).message for _ in range(len(queue))]


async def test_a_queue_with_room_keeps_everything_in_order() -> None:
    queue = SendQueue(capacity_bytes=3 * SLOT)
    items: list[ServerMessage] = [
        delta("t", 0, "a"),
        delta("t", 1, "ab"),
        Transcript(speaker="customer", text="x", final=True),
    ]
    assert all(queue.put(Outgoing(message=m)) for m in items)
    assert await take_all(queue) == items


async def test_when_full_the_deltas_of_a_turn_merge_into_the_newest_without_losing_text() -> None:
    merged: list[int] = []
    queue = SendQueue(capacity_bytes=3 * SLOT, on_coalesce=merged.append)
    for seq, full in enumerate(["T", "Th", "Tha", "Than", "Thank"]):
        assert queue.put(Outgoing(message=delta("t1", seq, full)))
    messages = await take_all(queue)
    assert len(messages) <= 3
    assert all(isinstance(m, SuggestionDelta) for m in messages)
    # Appending fragments and showing fullText both give the exact text.
    assert "".join(m.text for m in messages if isinstance(m, SuggestionDelta)) == "Thank"
    last = messages[-1]
    assert isinstance(last, SuggestionDelta)
    assert (last.seq, last.full_text) == (4, "Thank")
    assert sum(merged) == 5 - len(messages)


@pytest.mark.parametrize(
    "end",
    [
        SuggestionComplete(turn_id="t1", text="ab"),
        SuggestionCancelled(turn_id="t1", reason="superseded"),
        SuggestionFailed(turn_id="t1", reason="llm_unavailable"),
        Throttled(turn_id="t1", reason="capacity"),
    ],
    ids=lambda end: type(end).__name__,
)
async def test_deltas_never_merge_across_turns_or_across_a_turns_end(end: ServerMessage) -> None:
    queue = SendQueue(capacity_bytes=4 * SLOT)
    sequence: list[ServerMessage] = [
        delta("t1", 0, "a"),
        delta("t2", 0, "x"),
        delta("t1", 1, "ab"),
        end,
        delta("t1", 2, "abc"),  # a stray delta after the end stays after it
        delta("t2", 1, "xy"),
    ]
    for message in sequence:
        assert queue.put(Outgoing(message=message))
    messages = await take_all(queue)
    assert messages == [
        SuggestionDelta(turn_id="t1", seq=1, text="ab", full_text="ab"),
        end,
        delta("t1", 2, "abc"),
        SuggestionDelta(turn_id="t2", seq=1, text="xy", full_text="xy"),
    ]


async def test_a_queue_that_stays_full_refuses_and_keeps_what_it_had() -> None:
    queue = SendQueue(capacity_bytes=2 * SLOT)
    first = ErrorMessage(code="bad_json", message="1")
    second = ErrorMessage(code="bad_json", message="2")
    assert queue.put(Outgoing(message=first))
    assert queue.put(Outgoing(message=second))
    assert not queue.put(Outgoing(message=ErrorMessage(code="bad_json", message="3")))
    assert await take_all(queue) == [first, second]


async def test_get_waits_for_a_put() -> None:
    queue = SendQueue(capacity_bytes=SLOT)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # let the getter start waiting
    assert not getter.done()
    message = Transcript(speaker="rep", text="hi", final=True)
    queue.put(Outgoing(message=message, received_at=1.0))
    item = await asyncio.wait_for(getter, timeout=5)
    assert item == Outgoing(message=message, received_at=1.0)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SendQueue(capacity_bytes=0)


async def test_the_queue_is_bounded_in_bytes_not_in_messages() -> None:
    queue = SendQueue(capacity_bytes=64 * 1024)
    big = Transcript(speaker="customer", text="x" * 40_000, final=True)
    assert queue.put(Outgoing(message=big))
    assert not queue.put(Outgoing(message=big))  # two messages, but 80 kB
    assert len(queue) == 1
    assert queue.size_bytes == len(Outgoing(message=big).text) + QUEUED_MESSAGE_OVERHEAD_BYTES
    small = [ErrorMessage(code="bad_json", message=str(i)) for i in range(30)]
    assert all(queue.put(Outgoing(message=m)) for m in small)
    assert await take_all(queue) == [big, *small]
    assert queue.size_bytes == 0


async def test_merging_deltas_makes_room_in_bytes() -> None:
    queue = SendQueue(capacity_bytes=8 * 1024)
    full = ""
    for seq in range(200):  # 200 deltas of one turn: far more than 8 kB unmerged
        full += "word "
        assert queue.put(
            Outgoing(message=SuggestionDelta(turn_id="t", seq=seq, text="word ", full_text=full))
        )
    assert queue.size_bytes <= 8 * 1024
    messages = await take_all(queue)
    assert "".join(m.text for m in messages if isinstance(m, SuggestionDelta)) == full


# --- acks --------------------------------------------------------------------------------------


def chunk(text: str, seq: int | None = None, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "transcript_chunk", "text": text, **fields}
    if seq is not None:
        message["seq"] = seq
    return message


async def test_a_message_with_a_seq_is_acked_once_kafka_has_stored_it(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, _ready = await gw.connect(conversation_id, client_id="page-1")
    await ws.send_json(chunk("Do you ship to Norway?", seq=0))
    await ws.send_json({"type": "context", "profile": {"name": "Ada"}, "seq": 1})
    await ws.send_json({"type": "audio_config", "seq": 2})  # nothing to store: acked at once
    answers = await receive_answers(ws, {0, 1, 2})
    assert [answers[seq] for seq in (0, 1, 2)] == [{"type": "ack", "seq": n} for n in (0, 1, 2)]
    # Acked means stored: the segment is on the topic, keyed by the client's identity and seq.
    (segment,) = await read_events(
        bootstrap_servers, gw.catalog.transcripts.name, conversation_id=conversation_id, count=1
    )
    assert isinstance(segment, TranscriptSegment)
    assert (segment.segment_id, segment.text) == ("page-1:0", "Do you ship to Norway?")
    await ws.close()


async def test_a_message_without_a_seq_gets_no_ack(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    await ws.send_json(chunk("No seq here."))
    await ws.send_json(chunk("This one has one.", seq=5))
    assert await receive_json(ws) == {"type": "ack", "seq": 5}  # and nothing before it
    await ws.close()


async def test_a_resend_after_a_reconnect_carries_the_same_segment_id(
    gateway_factory: GatewayFactory, conversation_id: str, bootstrap_servers: str
) -> None:
    first = await gateway_factory()
    second = await gateway_factory(topic_prefix=first.settings.topic_prefix)
    client_id = uuid.uuid4().hex
    ws, ready_1 = await first.connect(conversation_id, client_id=client_id)
    await ws.send_json(chunk("I was charged twice.", seq=0))
    await receive_answers(ws, {0})
    await ws.close()
    # The client never saw an ack for seq 0 (say), so it resends it, to another gateway.
    ws, ready_2 = await second.connect(conversation_id, client_id=client_id)
    await ws.send_json(chunk("I was charged twice.", seq=0))
    await ws.send_json(chunk("Can you refund one?", seq=1))
    assert set(await receive_answers(ws, {0, 1})) == {0, 1}
    segments = await read_events(
        bootstrap_servers, first.catalog.transcripts.name, conversation_id=conversation_id, count=3
    )
    assert [(s.segment_id, s.session_id) for s in segments if isinstance(s, TranscriptSegment)] == [
        (f"{client_id}:0", ready_1["session_id"]),
        (f"{client_id}:0", ready_2["session_id"]),  # the same dedupe key: one turn
        (f"{client_id}:1", ready_2["session_id"]),
    ]
    await ws.close()


async def test_a_bad_message_with_a_seq_gets_an_error_naming_it(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id, client_id="c")
    await ws.send_json(chunk("hi", seq=3, speaker="robot"))
    await ws.send_json({"type": "end", "seq": 4})
    await ws.send_json(chunk("after the end", seq=5))
    answers = await receive_answers(ws, {3, 4, 5})
    assert (answers[3]["type"], answers[3]["code"]) == ("error", "bad_field")
    assert answers[4] == {"type": "ack", "seq": 4}
    assert (answers[5]["type"], answers[5]["code"]) == ("error", "conversation_ended")
    await ws.close()


async def test_surrogates_get_bad_text_with_no_traceback_and_the_session_goes_on(
    shared_gateway: RunningGateway, conversation_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id, client_id="c")
    with caplog.at_level(logging.DEBUG):
        for seq in range(20):
            frame = '{"type": "transcript_chunk", "text": "caf\\ud800", "seq": SEQ}'
            await ws.send_str(frame.replace("SEQ", str(seq)))
        answers = await receive_answers(ws, set(range(20)))
    assert {answer["code"] for answer in answers.values()} == {"bad_text"}
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
    await ws.send_json(chunk("Still fine.", seq=20))
    assert (await receive_answers(ws, {20}))[20]["type"] == "ack"
    await ws.close()


async def test_an_error_quotes_at_most_a_couple_of_hundred_bytes_of_a_huge_frame(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    huge = "x" * (shared_gateway.settings.max_msg_size - 100)
    await ws.send_str(json.dumps({"type": huge}))
    error = await ws.receive(timeout=15)
    assert error.type is aiohttp.WSMsgType.TEXT
    assert len(error.data.encode()) < 400
    assert json.loads(error.data)["code"] == "unknown_type"
    await ws.close()


# --- audio acks by byte offset ---------------------------------------------------------------


async def receive_audio_acks(ws: aiohttp.ClientWebSocketResponse, until: int) -> list[int]:
    offsets: list[int] = []
    while not offsets or offsets[-1] < until:
        message = await receive_json(ws)
        if message["type"] == "ack" and "audio_offset" in message:
            offsets.append(message["audio_offset"])
    return offsets


async def test_audio_is_acked_by_byte_offset_once_stored(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, _ready = await gw.connect(conversation_id, client_id="mic")
    for _ in range(10):  # 10 x 20 ms: two 100 ms chunks of 3200 bytes
        await ws.send_bytes(bytes(640))
    assert await receive_audio_acks(ws, 6400) == [3200, 6400]
    stored = await read_events(
        bootstrap_servers, gw.catalog.audio.name, conversation_id=conversation_id, count=2
    )
    assert [len(c.audio) for c in stored if isinstance(c, AudioChunk)] == [3200, 3200]
    # A refused frame is named by its range, and acks move past it.
    await ws.send_bytes(bytes(641))
    error = await receive_json(ws)
    assert (error["code"], error["audio_offset"], error["audio_bytes"]) == ("bad_audio", 6400, 641)
    assert await receive_audio_acks(ws, 7041) == [7041]
    # A pause hands on the held tail, and its bytes are acked too.
    await ws.send_bytes(bytes(1000))
    assert await receive_audio_acks(ws, 8041) == [8041]
    await ws.close()


async def test_a_resumed_audio_stream_counts_from_the_offset_the_client_gives(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id, client_id="mic")
    await ws.send_json({"type": "audio_config", "offset": 96_000, "seq": 0})
    assert await receive_json(ws) == {"type": "ack", "audio_offset": 96_000}
    assert await receive_json(ws) == {"type": "ack", "seq": 0}
    await ws.send_bytes(bytes(6400))
    assert await receive_audio_acks(ws, 102_400) == [102_400]
    await ws.send_json({"type": "audio_config", "offset": 50, "seq": 1})  # never backwards
    error = await receive_json(ws)
    assert (error["code"], error["seq"]) == ("bad_audio", 1)
    await ws.close()


async def test_a_socket_without_a_client_id_gets_no_audio_acks(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    await ws.send_bytes(bytes(6400))
    await read_events(
        bootstrap_servers,
        shared_gateway.catalog.audio.name,
        conversation_id=conversation_id,
        count=1,
    )
    await ws.send_json(chunk("marker", seq=1))
    assert await receive_json(ws) == {"type": "ack", "seq": 1}  # no audio ack came before it
    await ws.close()


# --- Kafka down: retried within the bound, then an error naming the seq ------------------------


async def test_a_message_kafka_never_stores_gets_unavailable_naming_its_seq(
    gateway_factory: GatewayFactory, conversation_id: str, tmp_path: Any
) -> None:
    from broker import BrokerThread  # noqa: PLC0415  # a broker of this test's own, to stop

    broker = BrokerThread(data_dir=tmp_path / "broker")
    broker.start()
    try:
        gw = await gateway_factory(
            kafka_bootstrap_servers=broker.bootstrap_servers, ws_delivery_timeout_s=1.0
        )
        ws, _ready = await gw.connect(conversation_id, client_id="c")
        await ws.send_json(chunk("Stored.", seq=0))
        assert (await receive_answers(ws, {0}))[0]["type"] == "ack"
        await asyncio.to_thread(broker.stop)
        await ws.send_json(chunk("Never stored.", seq=1))
        answer = (await receive_answers(ws, {1}))[1]
        assert (answer["type"], answer["code"]) == ("error", "unavailable")
        await ws.close()
    finally:
        await asyncio.to_thread(broker.stop)


# --- token expiry and renewal ---------------------------------------------------------------


@pytest.fixture
async def strict_gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    """A gateway that tolerates no clock skew: a token ends exactly at its expiry."""
    return await gateway_factory(app_options={"signer": TokenSigner(SECRET.encode(), leeway_s=0.0)})


async def test_a_session_ends_4001_token_expired_when_its_token_expires(
    strict_gateway: RunningGateway, conversation_id: str
) -> None:
    gw = strict_gateway
    token = gw.signer.issue(conversation_id, ttl_s=1)
    ws, _ready = await gw.connect(conversation_id, token=token)
    close = await receive_close(ws)
    assert close.type is aiohttp.WSMsgType.CLOSE
    assert (close.data, close.extra) == (4001, "token_expired")


async def test_a_renewed_token_keeps_the_session_past_the_old_expiry(
    strict_gateway: RunningGateway, conversation_id: str
) -> None:
    gw = strict_gateway
    short = gw.signer.issue(conversation_id, ttl_s=1)
    expires_at = time.time() + 1
    ws, _ready = await gw.connect(conversation_id, token=short)
    await ws.send_json({"type": "token", "token": gw.token("another-conversation"), "seq": 0})
    await ws.send_json({"type": "token", "token": gw.token(conversation_id), "seq": 1})
    answers = await receive_answers(ws, {0, 1})
    assert (answers[0]["type"], answers[0]["code"]) == ("error", "bad_token")
    assert answers[1] == {"type": "ack", "seq": 1}
    await wait_until(lambda: time.time() > expires_at + 1.5, timeout_s=10, what="the old expiry")
    await ws.send_json(chunk("Still here.", seq=2))
    assert (await receive_answers(ws, {2}))[2]["type"] == "ack"
    await ws.close()
