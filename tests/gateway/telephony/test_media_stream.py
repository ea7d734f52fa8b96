"""`GET /twilio/media` on a real gateway: a call's two tracks become two speakers' audio."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import aiohttp
import pytest

from schemas.events import AudioChunk
from teleprompter.bench.twilio_call import REP_GREETING, TwilioCall, call_speech
from teleprompter.local_system import LocalSystem
from tests.gateway.conftest import GatewayFactory, RunningGateway, read_events, sample
from tests.system_fixtures import RepClientFactory
from tests.waiting import wait_until

TIMEOUT_S = 15.0


def media_url(gateway: RunningGateway) -> str:
    return gateway.url.replace("http", "ws", 1) + "/twilio/media"


def twilio_call(
    gateway: RunningGateway, conversation_id: str, *, token: str | None = None, **kwargs: Any
) -> TwilioCall:
    """A Twilio-format stream to `gateway` for a conversation (its own token unless given)."""
    return TwilioCall(
        url=media_url(gateway),
        conversation_id=conversation_id,
        token=gateway.token(conversation_id) if token is None else token,
        **kwargs,
    )


async def closed_with(call: TwilioCall) -> tuple[int | None, str]:
    """The close code and reason the gateway ends the stream with."""
    message = await call.ws.receive(timeout=TIMEOUT_S)
    while message.type is aiohttp.WSMsgType.TEXT:  # the gateway never answers, but be sure
        message = await call.ws.receive(timeout=TIMEOUT_S)
    assert message.type is aiohttp.WSMsgType.CLOSE, message
    return message.data, message.extra or ""


async def test_each_track_reaches_the_audio_topic_as_its_speaker(
    shared_gateway: RunningGateway, bootstrap_servers: str, conversation_id: str
) -> None:
    inbound, outbound = b"\x11" * 1600, b"\x22" * 1600  # 200 ms each
    async with twilio_call(shared_gateway, conversation_id) as call:
        await call.start()
        await call.send({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "x"}})
        await call.play({"inbound": inbound, "outbound": outbound})
        await call.stop()
        assert await closed_with(call) == (1000, "")
    chunks = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.audio.name,
        conversation_id=conversation_id,
        count=6,  # per track: two 100 ms chunks and the end-of-stream marker
    )
    audio = [c for c in chunks if isinstance(c, AudioChunk)]
    assert {(c.encoding, c.sample_rate, c.session_id) for c in audio} == {
        ("mulaw", 8000, call.stream_sid)
    }
    for speaker, sent in (("customer", inbound), ("rep", outbound)):
        stream = [c for c in audio if c.speaker == speaker]
        assert b"".join(c.audio for c in stream) == sent
        assert [c.end_of_stream for c in stream][-1] is True


async def test_a_bad_token_closes_the_stream(
    shared_gateway: RunningGateway, conversation_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.telephony.media_stream")
    token_for_another = shared_gateway.token(f"{conversation_id}-other")
    async with twilio_call(shared_gateway, conversation_id, token=token_for_another) as call:
        await call.start()
        assert await closed_with(call) == (4001, "Unauthorized")
    assert re.search(
        rf"twilio stream \(not started\) refused: token refused for conversation "
        rf"'{conversation_id}' \(wrong_conversation\)",
        caplog.text,
    ), caplog.text


@pytest.mark.parametrize(
    ("bad", "close_code", "logged"),
    [
        ({"event": "transfer", "transfer": {}}, 1003, "unknown event 'transfer'"),
        (
            {"event": "media", "media": {"track": "inbound", "payload": "not base64!"}},
            1007,
            "media payload is not base64",
        ),
        (b"\x00\x01binary", 1003, "a binary frame"),
    ],
)
async def test_bad_input_closes_that_stream_and_nothing_else(
    shared_gateway: RunningGateway,
    conversation_id: str,
    caplog: pytest.LogCaptureFixture,
    bad: dict[str, object] | bytes,
    close_code: int,
    logged: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.telephony.media_stream")
    bystander, _ = await shared_gateway.connect(conversation_id)  # the rep's page
    async with twilio_call(shared_gateway, conversation_id) as call:
        await call.start()
        await call.play({"inbound": b"\xff" * 160, "outbound": b"\xff" * 160})
        if isinstance(bad, bytes):
            await call.ws.send_bytes(bad)
        else:
            await call.send(bad)
        code, _ = await closed_with(call)
    assert code == close_code
    assert f"twilio stream {call.stream_sid} (call {call.call_sid}) refused: {logged}" in (
        caplog.text
    )
    # The rep's socket and the gateway are untouched.
    await bystander.send_json({"type": "bogus"})
    reply = await bystander.receive_json(timeout=TIMEOUT_S)
    assert (reply["type"], reply["code"]) == ("error", "unknown_type")
    async with shared_gateway.http.get(f"{shared_gateway.url}/healthz") as health:
        assert health.status == 200
    await bystander.close()


async def test_a_wrong_media_format_closes_the_stream(
    shared_gateway: RunningGateway, conversation_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.telephony.media_stream")
    async with twilio_call(
        shared_gateway,
        conversation_id,
        media_format={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1},
    ) as call:
        await call.start()
        code, _ = await closed_with(call)
    assert code == 1003
    assert "refused: unsupported mediaFormat" in caplog.text


async def test_media_before_start_closes_the_stream(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    async with twilio_call(shared_gateway, conversation_id, token="unused") as call:
        await call.media("inbound", b"\xff" * 160)
        assert (await closed_with(call))[0] == 1007


async def test_the_stream_ends_when_its_token_expires(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    gateway = await gateway_factory()
    token = gateway.token(conversation_id, ttl_s=1.0)
    async with twilio_call(gateway, conversation_id, token=token) as call:
        await call.start()
        expires_at = time.time() + 1.0
        await wait_until(lambda: time.time() > expires_at + 1.0, timeout_s=TIMEOUT_S, what="expiry")
        await call.media("inbound", b"\xff" * 160)
        assert await closed_with(call) == (4001, "token_expired")


async def test_a_stream_that_never_starts_is_cut_after_a_few_frames(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    async with twilio_call(shared_gateway, conversation_id, token="unused") as call:
        for _ in range(5):  # Twilio sends `connected`, then `start`
            await call.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        assert (await closed_with(call))[0] == 1008


async def test_a_call_at_twilios_pace_fits_the_conversations_rate_limit(
    gateway_factory: GatewayFactory, conversation_id: str
) -> None:
    # The default rate, with a burst too small to hide a rate that does not keep up.
    gateway = await gateway_factory(
        ws_rate_burst_messages=100, ws_rate_burst_bytes=64 * 1024, max_msg_size=64 * 1024
    )
    assert gateway.settings.ws_rate_messages_per_s == 200.0
    async with twilio_call(gateway, conversation_id) as call:
        await call.start()
        await call.play({"inbound": b"\x11" * 24_000, "outbound": b"\x22" * 24_000})  # 3 s
        await call.stop()
        assert await closed_with(call) == (1000, "")
    dropped = sample(
        gateway.metrics, "teleprompter_gateway_protocol_errors_total", code="rate_limited"
    )
    assert dropped == 0


async def test_a_flood_is_cut_to_the_budget_the_call_shares_with_the_reps_socket(
    gateway_factory: GatewayFactory, conversation_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.telephony.media_stream")
    # 40 frames, then (almost) nothing: a refill of one frame per 100 s.
    gateway = await gateway_factory(ws_rate_messages_per_s=0.01, ws_rate_burst_messages=40)
    rep, _ = await gateway.connect(conversation_id)

    def dropped() -> float:
        return sample(
            gateway.metrics, "teleprompter_gateway_protocol_errors_total", code="rate_limited"
        )

    async with twilio_call(gateway, conversation_id) as call:
        await call.start()
        for n in range(100):  # unpaced: as fast as the socket takes them
            await call.media("inbound", bytes([n]) * 160)
        await wait_until(lambda: dropped() >= 60, timeout_s=TIMEOUT_S, what="60 frames dropped")
        assert dropped() == 60
        assert "frames over the conversation's rate limit dropped" in caplog.text
        # The call spent the conversation's budget: the rep's socket is over it too.
        await rep.send_json({"type": "transcript_chunk", "text": "Hello.", "seq": 1})
        reply = await rep.receive_json(timeout=TIMEOUT_S)
        assert (reply["type"], reply["code"], reply["seq"]) == ("error", "rate_limited", 1)
        assert not call.ws.closed  # dropped, not cut off: Twilio has no channel for an error
    await rep.close()


# --- the whole system ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_twilio_call_drives_suggestions_to_the_reps_socket(
    system: LocalSystem, rep_client: RepClientFactory
) -> None:
    """Real speech on both tracks: transcripts labelled by track, a suggestion for the customer."""
    greeting = call_speech(REP_GREETING)
    question = call_speech("Hi, I was charged twice for the premium plan. Can I get a refund?")
    silence = b"\xff" * 8000  # one second
    cid = f"twilio-{uuid.uuid4().hex[:8]}"
    async with rep_client(cid) as rep:
        async with TwilioCall(
            url=system.ws_url.removesuffix("/ws") + "/twilio/media",
            conversation_id=cid,
            token=system.token(cid, rep="sam"),
        ) as call:
            await call.start()
            await call.play(
                {"outbound": greeting.audio + silence, "inbound": b"\xff" * len(greeting.audio)}
            )
            await rep.wait_for("transcript", timeout_s=60.0)
            playing = asyncio.create_task(
                call.play({"inbound": question.audio + silence * 3, "outbound": silence * 3})
            )
            await rep.wait_for("suggestion_delta", timeout_s=60.0)
            await playing
            await call.stop()
        finals = [m for m in rep.of_type("transcript") if m["final"]]
        heard = {
            speaker: " ".join(m["text"] for m in finals if m["speaker"] == speaker).lower()
            for speaker in ("rep", "customer")
        }
        assert re.search(r"calling|help", heard["rep"]), heard
        assert re.search(r"premium|refund|charged", heard["customer"]), heard
        assert not re.search(r"premium|refund|charged", heard["rep"]), heard
        # The customer's words came before the suggestion, and it streamed to the end.
        await rep.wait_for("suggestion_complete", timeout_s=60.0)
