"""SuggestionModel against the LLM simulator over real HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.settings import Settings
from streams.llm import LlmError, ServerSentEvents, SuggestionModel
from streams.llm_sim.playbook import match_play, reply_fragments
from streams.prompt import ConversationContext, Prompt, PromptBuilder
from tests.streams.conftest import start_simulator

UTTERANCE = "I think we were double charged on the last invoice."
WAIT_S = 10.0


def model_for(server: TestServer, **options: Any) -> SuggestionModel:
    return SuggestionModel(
        base_url=str(server.make_url("/v1")),
        api_key="test",
        model="suggest-model",
        summary_model="summary-model",
        **options,
    )


@pytest.fixture
async def model(sim: TestServer) -> AsyncIterator[SuggestionModel]:
    async with model_for(sim, max_streams=8) as model:
        yield model


def suggestion_prompt() -> Prompt:
    context = ConversationContext("c-1")
    context.set_profile({"company": "Acme", "plan": "Pro"})
    context.add("rep", "Thanks for calling, how can I help?", at_ms=1_000)
    context.add("customer", UTTERANCE, at_ms=4_000)
    return PromptBuilder().suggestion(context)


async def sim_record(server: TestServer, request_id: str) -> dict[str, Any] | None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.make_url("/v1/sim/stats"), params={"request_id": request_id}) as response,
    ):
        records: dict[str, Any] = (await response.json())["requests"]
        return records.get(request_id)


async def wait_for_outcome(server: TestServer, request_id: str, outcome: str) -> dict[str, Any]:
    """The simulator's record of the request once it reaches `outcome`."""
    async with asyncio.timeout(WAIT_S):
        while True:
            record = await sim_record(server, request_id)
            if record is not None and record["outcome"] == outcome:
                return record
            await asyncio.sleep(0.01)


async def test_the_text_streams_as_the_endpoint_sends_it(
    model: SuggestionModel, sim: TestServer
) -> None:
    fragments = [text async for text in model.stream(suggestion_prompt(), request_id="t-1")]
    # Tokens that arrive in one read come out as one fragment; none is lost or empty.
    assert "".join(fragments) == "".join(reply_fragments(UTTERANCE))
    assert all(fragments)
    assert "".join(fragments) in match_play(UTTERANCE).answers
    record = await sim_record(sim, "t-1")
    assert record is not None
    assert (record["model"], record["stream"], record["outcome"]) == (
        "suggest-model",
        True,
        "completed",
    )


async def test_prompt_max_tokens_overrides_the_configured_length(
    model: SuggestionModel,
) -> None:
    prompt = suggestion_prompt()
    short = Prompt(messages=prompt.messages, max_tokens=2)
    text = "".join([piece async for piece in model.stream(short)])
    assert text == "".join(reply_fragments(UTTERANCE)[:2])


async def test_complete_asks_the_summary_model_for_the_whole_answer(
    model: SuggestionModel, sim: TestServer
) -> None:
    context = ConversationContext("c-1")
    context.add("customer", "Can we get a discount for two years?", at_ms=1_000)
    request = PromptBuilder().summary(context)
    assert request is not None
    text = await model.complete(request.prompt, request_id="s-1")
    assert text in match_play("Can we get a discount for two years?").answers
    record = await sim_record(sim, "s-1")
    assert record is not None
    assert (record["model"], record["stream"]) == ("summary-model", False)


async def test_cancelling_the_consumer_closes_the_http_stream() -> None:
    server = await start_simulator(ttft_ms=0.0, tokens_per_s=0.01)  # the second token is 100 s away
    first = asyncio.Event()
    received: list[str] = []

    async def consume(model: SuggestionModel) -> None:
        async for text in model.stream(suggestion_prompt(), request_id="cancel-me"):
            received.append(text)
            first.set()

    try:
        async with model_for(server) as model:
            task = asyncio.create_task(consume(model))
            async with asyncio.timeout(WAIT_S):
                await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The simulator sees the connection drop: the stream was closed, not abandoned.
            record = await wait_for_outcome(server, "cancel-me", "disconnected")
            assert record["completion_tokens"] == 1
            assert received == [reply_fragments(UTTERANCE)[0]]
    finally:
        await server.close()


async def test_stopping_early_inside_aclosing_closes_the_stream() -> None:
    server = await start_simulator(ttft_ms=0.0, tokens_per_s=0.01)
    try:
        async with model_for(server) as model:
            async with aclosing(model.stream(suggestion_prompt(), request_id="early")) as texts:
                async for _ in texts:
                    break
            await wait_for_outcome(server, "early", "disconnected")
    finally:
        await server.close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_an_unreachable_endpoint_raises_llm_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    async with SuggestionModel(base_url=url, api_key="test") as model:
        with pytest.raises(LlmError) as streamed:
            async for _ in model.stream(suggestion_prompt()):
                pass
        with pytest.raises(LlmError) as completed:
            await model.complete(suggestion_prompt())
    for caught in (streamed.value, completed.value):
        assert caught.kind == "unavailable"
        assert caught.url == url
        assert url in str(caught)


async def test_a_refused_request_is_a_bad_request_naming_the_field(
    model: SuggestionModel,
) -> None:
    with pytest.raises(LlmError) as caught:
        async for _ in model.stream(Prompt(messages=())):
            pass
    assert caught.value.kind == "bad_request"
    assert caught.value.status == 400
    assert "'messages'" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "kind"),
    [("429", "rate_limited"), ("503", "unavailable"), ("500", "unavailable"), ("408", "timeout")],
)
async def test_error_statuses_map_to_kinds(sim: TestServer, status: str, kind: str) -> None:
    async with model_for(sim, default_headers={"X-Sim-Status": status}) as model:
        with pytest.raises(LlmError) as caught:
            async for _ in model.stream(suggestion_prompt()):
                pass
    assert caught.value.kind == kind
    assert caught.value.status == int(status)


async def test_no_first_token_within_the_timeout_is_a_timeout() -> None:
    server = await start_simulator(ttft_ms=100_000.0, tokens_per_s=40.0)
    try:
        async with model_for(server, timeout_s=0.2) as model:
            with pytest.raises(LlmError) as caught:
                async for _ in model.stream(suggestion_prompt()):
                    pass
        assert caught.value.kind == "timeout"
    finally:
        await server.close()


async def test_built_from_settings(sim: TestServer) -> None:
    settings = Settings(openai_base_url=str(sim.make_url("/v1")), llm_max_tokens=3)
    async with SuggestionModel.from_settings(settings) as model:
        assert model.base_url == settings.llm_base_url
        fragments = [text async for text in model.stream(suggestion_prompt())]
    assert "".join(fragments) == "".join(reply_fragments(UTTERANCE)[:3])


async def test_many_concurrent_streams_share_one_client(model: SuggestionModel) -> None:
    async def collect() -> str:
        return "".join([text async for text in model.stream(suggestion_prompt())])

    replies = await asyncio.gather(*(collect() for _ in range(40)))
    assert set(replies) == {"".join(reply_fragments(UTTERANCE))}


# --- the stream, read raw -----------------------------------------------------------------


def test_server_sent_events_are_split_wherever_the_chunks_break() -> None:
    body = (
        b": a comment\r\n"
        b'data: {"a": 1}\r\n\r\n'
        b"event: ignored\n"
        b"data: first line\n"
        b"data:second line\n\n"
        b"data: [DONE]\n\n"
    )
    expected = [b'{"a": 1}', b"first line\nsecond line", b"[DONE]"]
    for size in (1, 3, 7, len(body)):
        events = ServerSentEvents()
        got = [
            data for at in range(0, len(body), size) for data in events.feed(body[at : at + size])
        ]
        assert got == expected, size


async def serve_events(body: bytes, *, cut: bool = False) -> TestServer:
    """An endpoint that answers every completion with `body` as its event stream (and, with
    `cut`, drops the connection after it)."""

    async def completions(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(body)
        if cut:
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.mark.parametrize(
    ("body", "cut", "kind", "named"),
    [
        (
            b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
            b'data: {"error": {"message": "overloaded"}}\n\n',
            False,
            "unavailable",
            "overloaded",
        ),
        (b"data: {not json\n\n", False, "unavailable", "malformed"),
        (
            b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n',
            True,
            "unavailable",
            "mid-stream",
        ),
    ],
    ids=["error event", "malformed event", "connection dropped"],
)
async def test_a_stream_failing_midway_is_an_llm_error_naming_why(
    body: bytes, cut: bool, kind: str, named: str
) -> None:
    server = await serve_events(body, cut=cut)
    try:
        async with model_for(server) as model:
            received: list[str] = []
            with pytest.raises(LlmError) as caught:
                async for text in model.stream(suggestion_prompt()):
                    received.append(text)
        assert caught.value.kind == kind
        assert named in str(caught.value)
        assert str(server.make_url("/v1")) in str(caught.value)
    finally:
        await server.close()


async def test_choices_without_text_and_the_usage_chunk_yield_nothing() -> None:
    body = (
        b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "Sure."}}]}\n\n'
        b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
        b'data: {"choices": [], "usage": {"completion_tokens": 1}}\n\n'
        b"data: [DONE]\n\n"
    )
    server = await serve_events(body)
    try:
        async with model_for(server) as model:
            assert [text async for text in model.stream(suggestion_prompt())] == ["Sure."]
    finally:
        await server.close()
