"""The load driver's bookkeeping, against a scripted WebSocket server standing in for a gateway.

The server answers each customer sentence in a set way (a suggestion, throttled, cancelled
before any token, silence), so every outcome the driver can record is exercised over a real
WebSocket with the real timing code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from teleprompter.bench.driver import drive
from teleprompter.bench.schedule import ConversationScript, Line, Schedule

ANSWERS = ("suggest", "throttle", "cancel", "suggest", "ignore")


async def _scripted_gateway(request: web.Request) -> web.WebSocketResponse:
    assert request.query["token"] == f"token-for-{request.query['conversation_id']}"
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"type": "ready", "conversation_id": request.query["conversation_id"]})
    turn = 0
    async for frame in ws:
        if frame.type != WSMsgType.TEXT:
            continue
        message = json.loads(frame.data)
        if "seq" in message:
            await ws.send_json({"type": "ack", "seq": message["seq"]})
        if message.get("type") != "transcript_chunk" or message.get("speaker") != "customer":
            continue
        if not message.get("final", True):
            continue
        answer, turn_id = ANSWERS[turn % len(ANSWERS)], f"t{turn}"
        turn += 1
        if answer == "suggest":
            await ws.send_json({"type": "suggestion_delta", "turn_id": turn_id, "text": "Sure"})
            await ws.send_json({"type": "suggestion_delta", "turn_id": turn_id, "text": ","})
            await ws.send_json(
                {"type": "suggestion_complete", "turn_id": turn_id, "timings": {"a->b": 1.5}}
            )
        elif answer == "throttle":
            await ws.send_json({"type": "throttled", "reason": "capacity", "turn_id": turn_id})
        elif answer == "cancel":
            await ws.send_json({"type": "suggestion_cancelled", "turn_id": turn_id})
    return ws


@pytest.fixture
async def gateway_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", _scripted_gateway)
    server = TestServer(app, port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/ws")).replace("http://", "ws://")
    finally:
        await server.close()


def _schedule(conversations: int, turns: int) -> Schedule:
    scripts = []
    for index in range(conversations):
        lines = []
        for n in range(turns):
            start = 0.05 + n * 0.1
            lines.append(
                Line(
                    speaker="customer",
                    text=f"Question number {n}?",
                    start_s=start,
                    end_s=start + 0.04,
                    partials=((start + 0.02, "Question"),),
                    turn_key=f"{index}:{n}",
                )
            )
            lines.append(
                Line(speaker="rep", text="Sure.", start_s=start + 0.05, end_s=start + 0.06)
            )
        scripts.append(ConversationScript(index=index, lines=tuple(lines)))
    return Schedule(conversations=tuple(scripts), duration_s=turns * 0.1 + 0.1, seed=0)


async def test_each_answer_settles_its_own_turn_and_silence_is_lost(gateway_url: str) -> None:
    started: list[bool] = []
    result = await drive(
        _schedule(conversations=3, turns=5),
        ws_url=gateway_url,
        token_for=lambda cid: f"token-for-{cid}",
        run_tag="test",
        deadline_s=0.5,
        on_start=lambda: started.append(True),
    )
    assert started == [True]
    assert not result.errors
    by_conversation: dict[int, list[str]] = {}
    for turn in sorted(result.turns, key=lambda t: t.key):
        by_conversation.setdefault(turn.conversation, []).append(turn.outcome)
    expected = ["answered", "throttled", "cancelled", "answered", "lost"]
    assert by_conversation == {0: expected, 1: expected, 2: expected}
    answered = [t for t in result.turns if t.outcome == "answered"]
    assert {t.turn_id for t in answered} == {"t0", "t3"}
    assert all(t.end_to_end_ms is not None and t.end_to_end_ms >= 0 for t in answered)
    assert all(t.timings == {"a->b": 1.5} for t in answered)
    assert result.deltas == 2 * len(answered)
    assert len(result.send_lags_ms) == 3 * 5 * 3  # partial, final, rep line per turn


async def test_a_gateway_that_cannot_be_reached_is_an_error_not_a_crash() -> None:
    result = await drive(
        _schedule(conversations=2, turns=1),
        ws_url="ws://127.0.0.1:9/ws",
        token_for=lambda cid: "x",
        run_tag="test",
        deadline_s=0.2,
    )
    assert sum(result.errors.values()) == 2
    assert all(next(iter(result.errors)).startswith("connect") for _ in result.errors)
    assert [t.outcome for t in result.turns] == ["not_sent", "not_sent"]


class ForgetfulGateway:
    """Drops each conversation's first connection after two messages, acking neither; acks
    everything on the next one, except the messages it was told to ignore."""

    def __init__(self, *, never_ack: set[str]) -> None:
        self.never_ack = never_ack
        self.connections: dict[str, int] = {}
        self.received: dict[str, list[dict[str, object]]] = {}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        cid = request.query["conversation_id"]
        self.connections[cid] = self.connections.get(cid, 0) + 1
        first = self.connections[cid] == 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "ready", "conversation_id": cid})
        async for frame in ws:
            message = json.loads(frame.data)
            received = self.received.setdefault(cid, [])
            received.append({**message, "client_id": request.query["client_id"]})
            if first and len(received) == 2:
                await ws.close(code=1011, message=b"lost")
                break
            if not first and message.get("text") not in self.never_ack and "seq" in message:
                await ws.send_json({"type": "ack", "seq": message["seq"]})
        return ws


async def test_unacked_messages_are_resent_after_a_drop_and_never_acked_ones_count_as_lost() -> (
    None
):
    gateway = ForgetfulGateway(never_ack={"Sure."})
    app = web.Application()
    app.router.add_get("/ws", gateway.handle)
    server = TestServer(app, port=0)
    await server.start_server()
    try:
        result = await drive(
            _schedule(conversations=1, turns=2),
            ws_url=str(server.make_url("/ws")).replace("http://", "ws://"),
            token_for=lambda cid: "x",
            run_tag="test",
            deadline_s=0.2,
            ack_wait_s=1.0,
        )
    finally:
        await server.close()
    (cid,) = gateway.received
    assert gateway.connections[cid] == 2
    first, second = (
        gateway.received[cid][:2],
        gateway.received[cid][2:],
    )
    assert [m["seq"] for m in first] == [0, 1]
    # The dropped connection's two messages came again, first, with their seq and client.
    assert [(m["seq"], m["text"]) for m in second[:2]] == [(m["seq"], m["text"]) for m in first]
    assert {m["client_id"] for m in gateway.received[cid]} == {first[0]["client_id"]}
    assert [m["seq"] for m in second] == list(range(7))  # 6 lines and `end`
    assert result.delivery.reconnects == 1
    assert result.delivery.resent == 2
    assert result.delivery.messages_sent == 7
    assert result.unacked_messages == 2  # the rep's two lines: sent, never acked
    assert result.errors["sent, never acked"] == 2
    assert result.errors["closed by server: 1011"] == 1
