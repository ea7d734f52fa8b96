"""The gateway end to end: real WebSocket clients, the real app, the session's real broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from core.settings import Settings, SettingsError
from gateway.app import create_app
from schemas.events import (
    AudioChunk,
    CustomerProfile,
    LlmStatus,
    SessionRoute,
    SuggestionEvent,
    TranscriptSegment,
)
from tests.gateway.conftest import (
    SECRET,
    GatewayFactory,
    RunningGateway,
    produce_events,
    produce_raw,
    read_events,
    receive_answers,
    receive_close,
    receive_json,
    sample,
)
from tests.waiting import wait_until

# --- connecting ---------------------------------------------------------------------------


async def test_an_authenticated_client_is_greeted_with_ready(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, ready = await shared_gateway.connect(conversation_id)
    assert ready["conversation_id"] == conversation_id
    assert ready["gateway_id"] == shared_gateway.settings.gateway_id
    assert len(ready["session_id"]) == 32
    await ws.close()


async def test_the_token_may_come_in_an_authorization_header(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    headers = {"Authorization": f"Bearer {shared_gateway.token(conversation_id)}"}
    ws = await shared_gateway.http.ws_connect(
        shared_gateway.ws_url(conversation_id), headers=headers
    )
    assert (await receive_json(ws))["type"] == "ready"
    await ws.close()


async def assert_unauthorized(ws: aiohttp.ClientWebSocketResponse) -> None:
    close = await ws.receive(timeout=10)
    assert close.type is aiohttp.WSMsgType.CLOSE, close
    assert (close.data, close.extra) == (4001, "Unauthorized")


async def test_bad_or_missing_tokens_are_closed_4001(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    gw = shared_gateway
    expired = gw.signer.issue(conversation_id, ttl_s=10, now=0)
    other = gw.token("someone-else")
    urls = [
        gw.ws_url(conversation_id),  # no token
        gw.ws_url(conversation_id, token="garbage"),
        gw.ws_url(conversation_id, token=expired),
        gw.ws_url(conversation_id, token=other),  # another conversation's token
        gw.ws_url(None, token=gw.token(conversation_id)),  # no conversation named
    ]
    before = sample(
        gw.metrics, "teleprompter_gateway_connection_attempts_total", outcome="unauthorized"
    )
    for url in urls:
        await assert_unauthorized(await gw.http.ws_connect(url))
    bearer = {"Authorization": f"Bearer {other}"}
    await assert_unauthorized(await gw.http.ws_connect(gw.ws_url(conversation_id), headers=bearer))
    after = sample(
        gw.metrics, "teleprompter_gateway_connection_attempts_total", outcome="unauthorized"
    )
    assert after - before == len(urls) + 1


# --- client messages to Kafka -------------------------------------------------------------


async def test_a_transcript_chunk_lands_on_the_transcripts_topic_keyed_by_conversation(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, ready = await shared_gateway.connect(conversation_id)
    await ws.send_json({"type": "transcript_chunk", "text": "Do you ship to Norway?"})
    await ws.send_json(
        {"type": "transcript_chunk", "text": "Yes.", "speaker": "rep", "final": False}
    )
    first, second = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.transcripts.name,
        conversation_id=conversation_id,
        count=2,
    )
    assert isinstance(first, TranscriptSegment)
    assert isinstance(second, TranscriptSegment)
    assert (first.text, first.speaker, first.final, first.source) == (
        "Do you ship to Norway?",
        "customer",
        True,
        "text",
    )
    assert (second.text, second.speaker, second.final) == ("Yes.", "rep", False)
    assert first.session_id == ready["session_id"]
    # Without `seq` a message cannot be told from a resend: each gets an id of its own.
    assert [first.segment_id, second.segment_id] == [
        f"{ready['session_id']}:n0",
        f"{ready['session_id']}:n1",
    ]
    assert "gateway_in" in first.trace
    await ws.close()


async def test_connecting_and_leaving_are_announced_on_the_routes_topic(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, ready = await shared_gateway.connect(conversation_id)
    await ws.close()
    connected, disconnected = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.routes.name,
        conversation_id=conversation_id,
        count=2,
    )
    assert isinstance(connected, SessionRoute)
    assert isinstance(disconnected, SessionRoute)
    assert (connected.connected, disconnected.connected) == (True, False)
    for route in (connected, disconnected):
        assert route.session_id == ready["session_id"]
        assert route.gateway_id == shared_gateway.settings.gateway_id
        assert route.reply_topic == shared_gateway.reply_topic


async def test_context_lands_on_the_profiles_topic(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    profile = {"name": "Ada", "plan": "pro", "notes": ["prefers email"]}
    await ws.send_json({"type": "context", "profile": profile})
    (event,) = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.profiles.name,
        conversation_id=conversation_id,
        count=1,
    )
    assert isinstance(event, CustomerProfile)
    assert json.loads(event.profile_json) == profile
    await ws.close()


async def test_bad_messages_get_an_error_and_the_connection_stays_usable(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    for frame, code in [
        ("{oops", "bad_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "transcript_chunk"}', "missing_field"),
        ('{"type": "transcript_chunk", "text": "hi", "speaker": "robot"}', "bad_field"),
    ]:
        await ws.send_str(frame)
        error = await receive_json(ws)
        assert error["type"] == "error"
        assert error["code"] == code, error
        assert error["message"]
    await ws.send_json({"type": "transcript_chunk", "text": "Still here."})
    (event,) = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.transcripts.name,
        conversation_id=conversation_id,
        count=1,
    )
    assert isinstance(event, TranscriptSegment)
    assert event.text == "Still here."
    await ws.close()


async def test_a_frame_above_the_limit_is_closed_1009(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    await ws.send_bytes(bytes(shared_gateway.settings.max_msg_size + 2))
    close = await receive_close(ws)
    assert close.type is aiohttp.WSMsgType.CLOSE
    assert close.data == 1009


async def test_a_text_frame_that_is_not_utf8_is_closed_1007(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    # aiohttp's public send_str cannot send invalid UTF-8; its frame writer can.
    await ws._writer.send_frame(b'{"type": "end", "x": "\xff\xfe"}', aiohttp.WSMsgType.TEXT)
    close = await receive_close(ws)
    assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 1007)


@pytest.mark.parametrize("size", [1_000_000, 1_048_575])
async def test_by_default_a_frame_kafka_could_not_store_is_closed_1009_not_unavailable(
    gateway_factory: GatewayFactory, conversation_id: str, size: int
) -> None:
    gw = await gateway_factory()  # the default frame limit
    ws, _ready = await gw.connect(conversation_id, client_id="c")
    text = json.dumps({"type": "transcript_chunk", "text": "", "seq": 0})
    await ws.send_str(text.replace('""', '"' + "x" * (size - len(text)) + '"'))
    close = await receive_close(ws)
    assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 1009)


async def test_the_largest_frame_under_the_default_limit_is_stored(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    gw = await gateway_factory()
    ws, _ready = await gw.connect(conversation_id, client_id="c")
    text = json.dumps({"type": "transcript_chunk", "text": "", "seq": 0})
    size = gw.settings.max_msg_size - 1  # aiohttp's limit is exclusive
    await ws.send_str(text.replace('""', '"' + "x" * (size - len(text)) + '"'))
    assert (await receive_answers(ws, {0}))[0] == {"type": "ack", "seq": 0}
    await ws.close()


# --- audio ------------------------------------------------------------------------------------


async def test_audio_is_rechunked_to_the_audio_topic_and_end_closes_everything(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, ready = await gw.connect(conversation_id)
    await ws.send_json({"type": "audio_config", "encoding": "pcm_s16le", "sample_rate": 16000})
    audio = bytes(i % 256 for i in range(32_000 + 1000))  # 1 s + 31.25 ms of PCM
    for start in range(0, len(audio), 640):  # 20 ms frames, as a browser sends them
        await ws.send_bytes(audio[start : start + 640])
    await ws.send_json({"type": "end"})
    # Ten 100 ms chunks, the 31.25 ms tail flushed by `end`, then the end-of-stream marker.
    chunks = await read_events(
        bootstrap_servers, gw.catalog.audio.name, conversation_id=conversation_id, count=12
    )
    audio_chunks = [chunk for chunk in chunks if isinstance(chunk, AudioChunk)]
    assert len(audio_chunks) == 12
    assert [chunk.seq for chunk in audio_chunks] == list(range(12))
    assert [len(chunk.audio) for chunk in audio_chunks] == [3200] * 10 + [1000, 0]
    assert [chunk.end_of_stream for chunk in audio_chunks] == [False] * 11 + [True]
    assert b"".join(chunk.audio for chunk in audio_chunks) == audio
    assert all(
        (c.encoding, c.sample_rate, c.speaker, c.session_id)
        == ("pcm_s16le", 16000, "customer", ready["session_id"])
        for c in audio_chunks
    )
    assert all("gateway_in" in chunk.trace for chunk in audio_chunks)
    (end,) = await read_events(
        bootstrap_servers, gw.catalog.transcripts.name, conversation_id=conversation_id, count=1
    )
    assert isinstance(end, TranscriptSegment)
    assert (end.end_of_conversation, end.text, end.final) == (True, "", True)
    routes = await read_events(
        bootstrap_servers, gw.catalog.routes.name, conversation_id=conversation_id, count=2
    )
    assert [route.connected for route in routes if isinstance(route, SessionRoute)] == [True, False]
    await ws.send_json({"type": "transcript_chunk", "text": "after the end"})
    assert (await receive_json(ws))["code"] == "conversation_ended"
    await ws.close()


async def test_bad_audio_gets_an_error_and_the_session_continues(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, _ready = await gw.connect(conversation_id)
    await ws.send_bytes(bytes(641))  # half a PCM sample at the end
    error = await receive_json(ws)
    assert (error["type"], error["code"]) == ("error", "bad_audio")
    assert "641" in error["message"]
    await ws.send_json({"type": "audio_config", "encoding": "opus"})
    assert (await receive_json(ws))["code"] == "bad_audio"
    await ws.send_json({"type": "audio_config", "encoding": "mulaw", "sample_rate": 44100})
    assert (await receive_json(ws))["code"] == "bad_audio"
    await ws.send_bytes(b"")
    assert (await receive_json(ws))["code"] == "bad_audio"
    # Telephony audio is accepted as declared and passed on undecoded.
    await ws.send_json({"type": "audio_config", "encoding": "mulaw", "sample_rate": 8000})
    await ws.send_bytes(bytes(range(255)) * 8)  # 2040 bytes = 255 ms of mu-law
    chunks = await read_events(
        bootstrap_servers, gw.catalog.audio.name, conversation_id=conversation_id, count=2
    )
    assert all(isinstance(chunk, AudioChunk) for chunk in chunks)
    assert b"".join(c.audio for c in chunks if isinstance(c, AudioChunk)) == bytes(range(255)) * 8
    assert {(c.encoding, c.sample_rate) for c in chunks if isinstance(c, AudioChunk)} == {
        ("mulaw", 8000)
    }
    await ws.close()


async def test_leaving_mid_stream_hands_over_the_tail_and_ends_the_stream(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    await ws.send_bytes(bytes(7000))  # one 200 ms chunk and a 600-byte tail
    await ws.close()
    chunks = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.audio.name,
        conversation_id=conversation_id,
        count=3,
    )
    assert [
        (c.seq, len(c.audio), c.end_of_stream) for c in chunks if isinstance(c, AudioChunk)
    ] == [
        (0, 6400, False),
        (1, 600, False),
        (2, 0, True),
    ]


async def test_a_pause_in_audio_flushes_the_held_back_tail(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    ws, _ready = await shared_gateway.connect(conversation_id)
    await ws.send_bytes(bytes(640))  # 20 ms, less than a chunk, then nothing
    (chunk,) = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.audio.name,
        conversation_id=conversation_id,
        count=1,
    )
    assert isinstance(chunk, AudioChunk)
    assert len(chunk.audio) == 640
    await ws.close()


# --- replies to clients -------------------------------------------------------------------


def delta(
    conversation_id: str, turn_id: str, seq: int, full_text: str, text: str
) -> SuggestionEvent:
    return SuggestionEvent(
        conversation_id=conversation_id,
        turn_id=turn_id,
        kind="delta",
        seq=seq,
        text=text,
        full_text=full_text,
    )


def streamed(conversation_id: str, turn_id: str, words: list[str]) -> list[SuggestionEvent]:
    events = []
    for seq, word in enumerate(words):
        events.append(delta(conversation_id, turn_id, seq, "".join(words[: seq + 1]), word))
    return events


async def test_replies_reach_only_their_conversation_in_order(
    shared_gateway: RunningGateway, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws_a, _ = await gw.connect("conv-reply-a")
    ws_b, _ = await gw.connect("conv-reply-b")
    words_a = ["Sure", ",", " we", " ship", " there", "."]
    words_b = ["Let", " me", " check", "."]
    events: list[Any] = []
    for i in range(max(len(words_a), len(words_b))):  # interleaved, as two workers would
        events.extend(streamed("conv-reply-a", "turn-a", words_a)[i : i + 1])
        events.extend(streamed("conv-reply-b", "turn-b", words_b)[i : i + 1])
    complete_a = SuggestionEvent(
        conversation_id="conv-reply-a",
        turn_id="turn-a",
        kind="complete",
        full_text="Sure, we ship there.",
        timings={"llm_ttft": 120.0},
    )
    complete_a.stamp("worker_out")
    events.append(complete_a)
    events.append(
        SuggestionEvent(conversation_id="conv-reply-b", turn_id="turn-b", kind="cancelled")
    )
    events.append(
        SuggestionEvent(
            conversation_id="conv-reply-b",
            turn_id="turn-d",
            kind="failed",
            reason="llm_timeout",
        )
    )
    events.append(
        TranscriptSegment(
            conversation_id="conv-reply-b",
            session_id="asr",
            segment_id="asr:1",
            text="Is it in stock?",
            source="asr",
            final=False,
        )
    )
    events.append(
        SuggestionEvent(
            conversation_id="conv-reply-b", turn_id="turn-c", kind="throttled", reason="capacity"
        )
    )
    await produce_events(bootstrap_servers, gw.reply_topic, events)

    got_a = [await receive_json(ws_a) for _ in range(len(words_a) + 1)]
    assert [m["type"] for m in got_a] == ["suggestion_delta"] * len(words_a) + [
        "suggestion_complete"
    ]
    assert [m["seq"] for m in got_a[:-1]] == list(range(len(words_a)))
    assert "".join(m["text"] for m in got_a[:-1]) == "Sure, we ship there."
    assert got_a[-2]["fullText"] == "Sure, we ship there."
    assert got_a[-1]["text"] == "Sure, we ship there."
    assert got_a[-1]["timings"]["llm_ttft"] == 120.0
    assert got_a[-1]["timings"]["gateway_out"] >= 0

    got_b = [await receive_json(ws_b) for _ in range(len(words_b) + 4)]
    assert all(m.get("turn_id") in ("turn-b", "turn-c", "turn-d", None) for m in got_b)
    assert "".join(m["text"] for m in got_b[: len(words_b)]) == "Let me check."
    assert got_b[len(words_b) :] == [
        {"type": "suggestion_cancelled", "turn_id": "turn-b", "reason": "superseded"},
        {"type": "suggestion_failed", "turn_id": "turn-d", "reason": "llm_timeout"},
        {
            "type": "transcript",
            "speaker": "customer",
            "text": "Is it in stock?",
            "final": False,
            "segment_id": "asr:1",
            "revision": 0,
        },
        {"type": "throttled", "reason": "capacity", "turn_id": "turn-c"},
    ]
    await ws_a.close()
    await ws_b.close()


async def test_every_socket_of_a_conversation_gets_its_replies(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    first, _ = await gw.connect(conversation_id)
    second, _ = await gw.connect(conversation_id)
    await produce_events(
        bootstrap_servers, gw.reply_topic, [delta(conversation_id, "t", 0, "Hi", "Hi")]
    )
    for ws in (first, second):
        message = await receive_json(ws)
        assert (message["type"], message["fullText"]) == ("suggestion_delta", "Hi")
    await first.close()
    await second.close()


async def test_an_undecodable_reply_is_skipped_and_routing_goes_on(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, _ = await gw.connect(conversation_id)
    before = sample(gw.metrics, "teleprompter_gateway_reply_records_total", outcome="undecodable")
    await produce_raw(bootstrap_servers, gw.reply_topic, conversation_id.encode(), b"not avro")
    await produce_events(
        bootstrap_servers, gw.reply_topic, [delta(conversation_id, "t", 0, "After", "After")]
    )
    message = await receive_json(ws)
    assert message["fullText"] == "After"
    after = sample(gw.metrics, "teleprompter_gateway_reply_records_total", outcome="undecodable")
    assert after == before + 1
    await ws.close()


async def test_a_conversation_resumes_on_another_gateway(
    gateway_factory: GatewayFactory, bootstrap_servers: str, conversation_id: str
) -> None:
    first = await gateway_factory()
    second = await gateway_factory(topic_prefix=first.settings.topic_prefix)
    ws, ready_1 = await first.connect(conversation_id)
    await produce_events(
        bootstrap_servers, first.reply_topic, [delta(conversation_id, "t", 0, "We", "We")]
    )
    assert (await receive_json(ws))["fullText"] == "We"
    await ws.close()

    ws, ready_2 = await second.connect(conversation_id)
    routes = await read_events(
        bootstrap_servers, first.catalog.routes.name, conversation_id=conversation_id, count=3
    )
    assert [
        (r.session_id, r.reply_topic, r.connected) for r in routes if isinstance(r, SessionRoute)
    ] == [
        (ready_1["session_id"], first.reply_topic, True),
        (ready_1["session_id"], first.reply_topic, False),
        (ready_2["session_id"], second.reply_topic, True),
    ]
    # Playing the worker: the in-flight text so far, then the rest, to the new route.
    await produce_events(
        bootstrap_servers,
        second.reply_topic,
        [
            delta(conversation_id, "t", 1, "We can", "We can"),
            delta(conversation_id, "t", 2, "We can help.", " help."),
        ],
    )
    assert [(await receive_json(ws))["fullText"] for _ in range(2)] == ["We can", "We can help."]
    await ws.close()


async def test_a_slow_client_does_not_stall_a_fast_one(
    gateway_factory: GatewayFactory, bootstrap_servers: str
) -> None:
    gw = await gateway_factory(ws_send_queue_bytes=16 * 1024, app_options={"close_timeout_s": 0.5})
    slow, _ = await gw.connect("conv-slow")  # connected, never reads again
    fast, _ = await gw.connect("conv-fast")
    fragment = "x" * 64 * 1024
    events: list[Any] = []
    for i in range(120):  # ~8 MB for the slow client: more than every buffer on the way
        # A new turn each time, so merging deltas cannot make room.
        events.append(delta("conv-slow", f"slow-{i}", 0, fragment, fragment))
        events.append(delta("conv-fast", "fast", i, f"{i}", f"{i}"))
    await produce_events(bootstrap_servers, gw.reply_topic, events)

    # A burst beyond the fast client's queue merges its deltas: fewer messages, same text.
    got = [await receive_json(fast)]
    while got[-1]["fullText"] != "119":
        got.append(await receive_json(fast))
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs))
    assert "".join(m["text"] for m in got) == "".join(str(i) for i in range(120))
    await wait_until(
        lambda: sample(gw.metrics, "teleprompter_gateway_slow_client_closes_total") == 1,
        what="the slow client to be closed",
    )
    while (message := await slow.receive(timeout=15)).type is aiohttp.WSMsgType.TEXT:
        pass  # what reached the socket before the close
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert slow.close_code in (1013, 1006)
    assert not fast.closed
    await fast.close()


# --- one conversation's sockets and budget -----------------------------------------------------


async def test_a_reconnect_of_the_same_client_replaces_its_old_socket_with_4002(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    gw = shared_gateway
    old, _ = await gw.connect(conversation_id, client_id="tab-1")
    new, _ = await gw.connect(conversation_id, client_id="tab-1")
    close = await receive_close(old)
    assert (close.type, close.data, close.extra) == (aiohttp.WSMsgType.CLOSE, 4002, "replaced")
    await new.send_json({"type": "transcript_chunk", "text": "Hi.", "seq": 0})
    assert (await receive_answers(new, {0}))[0]["type"] == "ack"
    await new.close()


async def test_beyond_the_socket_cap_the_oldest_socket_is_replaced(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    gw = await gateway_factory(ws_sockets_per_conversation=2)
    sockets = [(await gw.connect(conversation_id, client_id=f"tab-{i}"))[0] for i in range(5)]
    for ws in sockets[:3]:
        close = await receive_close(ws)
        assert (close.data, close.extra) == (4002, "replaced")
    for i, ws in enumerate(sockets[3:]):
        await ws.send_json({"type": "transcript_chunk", "text": "Hi.", "seq": i})
        assert (await receive_answers(ws, {i}))[i]["type"] == "ack"
    assert sample(gw.metrics, "teleprompter_gateway_connections") == 2
    assert (
        sample(gw.metrics, "teleprompter_gateway_replaced_sockets_total", reason="socket_cap") == 3
    )
    for ws in sockets[3:]:
        await ws.close()


async def test_a_malformed_client_id_is_refused_with_1008(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    gw = shared_gateway
    url = gw.ws_url(conversation_id, token=gw.token(conversation_id), client_id="no%20spaces")
    ws = await gw.http.ws_connect(url)
    close = await ws.receive(timeout=10)
    assert (close.type, close.data, close.extra) == (
        aiohttp.WSMsgType.CLOSE,
        1008,
        "bad client_id",
    )


async def test_over_the_message_rate_a_conversation_gets_rate_limited_naming_each_seq(
    gateway_factory: GatewayFactory, conversation_id: str, bootstrap_servers: str
) -> None:
    # A refill so slow that only the burst can pass during the test.
    gw = await gateway_factory(ws_rate_messages_per_s=0.001, ws_rate_burst_messages=5)
    first, _ = await gw.connect(conversation_id, client_id="a")
    second, _ = await gw.connect(conversation_id, client_id="b")  # shares the budget
    for seq in range(4):
        await first.send_json({"type": "transcript_chunk", "text": f"Line {seq}.", "seq": seq})
    for seq in range(4, 8):
        await second.send_json({"type": "transcript_chunk", "text": f"Line {seq}.", "seq": seq})
    answers = {
        **await receive_answers(first, {0, 1, 2, 3}),
        **await receive_answers(second, {4, 5, 6, 7}),
    }
    assert [answers[seq]["type"] for seq in range(8)] == ["ack"] * 5 + ["error"] * 3
    assert {answers[seq]["code"] for seq in range(5, 8)} == {"rate_limited"}
    assert "dropped" in answers[5]["message"]
    # Dropped means not stored: only the five acked lines reached Kafka.
    stored = await read_events(
        bootstrap_servers, gw.catalog.transcripts.name, conversation_id=conversation_id, count=5
    )
    assert sorted(e.text for e in stored if isinstance(e, TranscriptSegment)) == [
        f"Line {seq}." for seq in range(5)
    ]
    await first.close()
    await second.close()


async def test_a_flood_of_frames_without_seq_hears_rate_limited_once_a_second_not_per_frame(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    gw = await gateway_factory(ws_rate_messages_per_s=0.001, ws_rate_burst_messages=1)
    ws, _ = await gw.connect(conversation_id)
    for n in range(200):
        await ws.send_json({"type": "transcript_chunk", "text": f"Spam {n}."})
    await ws.send_json({"type": "transcript_chunk", "text": "Named.", "seq": 7})
    errors = []
    while not errors or errors[-1].get("seq") != 7:
        errors.append(await receive_json(ws))
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert len(errors) < 10  # one a second (and the named one), not 199
    await ws.close()


async def test_over_the_byte_rate_text_and_audio_are_refused(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    gw = await gateway_factory(
        max_msg_size=64 * 1024, ws_rate_bytes_per_s=1.0, ws_rate_burst_bytes=64 * 1024
    )
    ws, _ = await gw.connect(conversation_id, client_id="c")
    await ws.send_bytes(bytes(40_000))
    await ws.send_bytes(bytes(40_000))  # over the 64 KiB burst
    error = await receive_json(ws)
    while error["type"] != "error":
        error = await receive_json(ws)
    assert (error["code"], error["audio_offset"], error["audio_bytes"]) == (
        "rate_limited",
        40_000,
        40_000,
    )
    await ws.send_json({"type": "transcript_chunk", "text": "x" * 30_000, "seq": 0})
    answer = (await receive_answers(ws, {0}))[0]
    assert (answer["type"], answer["code"]) == ("error", "rate_limited")
    await ws.close()


# --- heartbeat --------------------------------------------------------------------------------


async def test_a_silent_client_is_pinged_then_dropped_and_a_ponging_one_stays(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    gw = await gateway_factory(heartbeat_s=0.2, client_timeout_s=0.5)
    ponging, _ = await gw.connect(conversation_id, autoping=False)
    pings = 0
    texts: list[dict[str, Any]] = []

    async def answer_pings() -> None:
        nonlocal pings
        while True:
            message = await ponging.receive()
            if message.type is aiohttp.WSMsgType.PING:
                pings += 1
                await ponging.pong(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                texts.append(json.loads(message.data))
            else:
                return

    answering = asyncio.create_task(answer_pings())
    silent, _ = await gw.connect(conversation_id, autoping=False)
    assert (await silent.receive(timeout=10)).type is aiohttp.WSMsgType.PING
    ending = await silent.receive(timeout=10)  # no pong: the server hangs up
    assert ending.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await wait_until(lambda: pings >= 5, what="five pings answered")
    await ponging.send_str("{}")
    await wait_until(lambda: bool(texts), what="an answer on the ponging socket")
    assert texts[0]["code"] == "unknown_type"
    await ponging.close()
    await answering


def test_the_client_timeout_must_exceed_the_heartbeat(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, secret=SecretStr(SECRET), heartbeat_s=30, client_timeout_s=20
    )
    with pytest.raises(SettingsError, match="TELEPROMPTER_CLIENT_TIMEOUT_S"):
        create_app(settings)


# --- HTTP ---------------------------------------------------------------------------------------


async def test_healthz_is_200_when_ready(shared_gateway: RunningGateway) -> None:
    async with shared_gateway.http.get(f"{shared_gateway.url}/healthz") as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ok"
    assert body["gateway_id"] == shared_gateway.settings.gateway_id
    assert body["llm"] == "ok"


async def test_a_degraded_llm_reaches_the_client_and_healthz_until_it_recovers(
    shared_gateway: RunningGateway, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, _ = await gw.connect("conv-llm-status")

    def status(llm: Literal["ok", "degraded"], reason: str = "") -> LlmStatus:
        return LlmStatus(conversation_id="conv-llm-status", worker_id="w1", llm=llm, reason=reason)

    await produce_events(bootstrap_servers, gw.reply_topic, [status("degraded", "answered 503")])
    assert await receive_json(ws) == {"type": "status", "llm": "degraded", "reason": "answered 503"}
    async with gw.http.get(f"{gw.url}/healthz") as response:
        assert response.status == 200  # the gateway can still serve: transcripts, acks
        body = await response.json()
    assert (body["llm"], body["llm_reason"]) == ("degraded", "answered 503")

    await produce_events(bootstrap_servers, gw.reply_topic, [status("ok")])
    assert await receive_json(ws) == {"type": "status", "llm": "ok", "reason": ""}
    async with gw.http.get(f"{gw.url}/healthz") as response:
        assert (await response.json())["llm"] == "ok"
    await ws.close()


async def test_without_kafka_the_gateway_is_not_ready_and_refuses_sockets(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",  # nothing listens there
        data_dir=tmp_path,
        secret=SecretStr(SECRET),
        gateway_id="gw-nokafka",
    )
    runner = web.AppRunner(create_app(settings, kafka_timeout_s=0.5))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with http.get(f"http://{host}:{port}/healthz") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "starting"
        async with http.get(f"http://{host}:{port}/ws") as response:
            assert response.status == 503
    finally:
        await runner.cleanup()


async def test_metrics_expose_connections_messages_and_stage_latency(
    shared_gateway: RunningGateway, conversation_id: str, bootstrap_servers: str
) -> None:
    gw = shared_gateway
    ws, _ = await gw.connect(conversation_id)
    await ws.send_json({"type": "transcript_chunk", "text": "Counting."})
    await read_events(
        bootstrap_servers, gw.catalog.transcripts.name, conversation_id=conversation_id, count=1
    )
    await wait_until(
        lambda: (
            sample(gw.metrics, "teleprompter_stage_latency_seconds_count", stage="gateway_produce")
            > 0
        ),
        what="the produce latency to be observed",
    )
    async with gw.http.get(f"{gw.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    lines = text.splitlines()
    open_sessions = next(
        line for line in lines if line.startswith("teleprompter_gateway_connections ")
    )
    assert float(open_sessions.split()[1]) >= 1
    assert any(
        line.startswith('teleprompter_gateway_messages_in_total{type="transcript_chunk"}')
        for line in lines
    )
    assert any(
        line.startswith('teleprompter_gateway_messages_out_total{type="ready"}') for line in lines
    )
    assert any(
        line.startswith(
            'teleprompter_stage_latency_seconds_bucket{le="0.01",stage="gateway_produce"}'
        )
        for line in lines
    )
    await ws.close()


async def test_the_reps_page_and_static_files_are_served(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<h1>teleprompter</h1>")
    (static / "app.js").write_text("console.log('hi')")
    gw = await gateway_factory(app_options={"static_dir": static})
    async with gw.http.get(f"{gw.url}/") as response:
        assert response.status == 200
        assert await response.text() == "<h1>teleprompter</h1>"
    async with gw.http.get(f"{gw.url}/static/app.js") as response:
        assert response.status == 200
    async with gw.http.get(f"{gw.url}/static/../conftest.py") as response:
        assert response.status in (403, 404)


# --- shutdown -----------------------------------------------------------------------------------


async def test_shutdown_hands_routes_back_and_closes_sockets_1001(
    gateway_factory: GatewayFactory, bootstrap_servers: str
) -> None:
    gw = await gateway_factory()
    clients = [await gw.connect(f"conv-bye-{i}") for i in range(3)]
    stopping = asyncio.create_task(gw.stop())
    for ws, _ in clients:
        close = await receive_close(ws)
        assert close.type is aiohttp.WSMsgType.CLOSE
        assert (close.data, close.extra) == (1001, "Server shutting down")
    await stopping
    for i, (_ws, ready) in enumerate(clients):
        routes = await read_events(
            bootstrap_servers, gw.catalog.routes.name, conversation_id=f"conv-bye-{i}", count=2
        )
        assert [(r.session_id, r.connected) for r in routes if isinstance(r, SessionRoute)] == [
            (ready["session_id"], True),
            (ready["session_id"], False),
        ]
