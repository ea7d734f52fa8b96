"""The LLM simulator over real HTTP, read by the real openai client and by raw SSE."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from core.settings import Settings
from streams.llm_sim.playbook import match_play, reply_fragments
from streams.llm_sim.server import create_app, serve
from tests.streams.conftest import start_simulator

PRICE = "Customer: Honestly, this is way too expensive for a team our size."
MESSAGES: list[Any] = [
    {"role": "system", "content": "Suggest what the rep says next."},
    {"role": "user", "content": f"Rep: So that's the Pro plan.\n{PRICE}"},
]
UTTERANCE = PRICE.removeprefix("Customer: ")
WAIT_S = 10.0


@pytest.fixture
async def client(sim: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=str(sim.make_url("/v1")), api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def stats(http: aiohttp.ClientSession, root: URL) -> dict[str, Any]:
    async with http.get(root.join(URL("/v1/sim/stats"))) as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def wait_for_outcome(
    http: aiohttp.ClientSession, root: URL, request_id: str, outcome: str
) -> dict[str, Any]:
    """The request's record once it reaches `outcome`; polls the stats endpoint."""
    async with asyncio.timeout(WAIT_S):
        while True:
            records = (await stats(http, root))["requests"]
            if records.get(request_id, {}).get("outcome") == outcome:
                record: dict[str, Any] = records[request_id]
                return record
            await asyncio.sleep(0.01)


async def test_streamed_reply_is_the_playbook_answer_one_token_per_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert tuple(contents) == reply_fragments(UTTERANCE)
    assert "".join(contents) in match_play(UTTERANCE).answers
    assert match_play(UTTERANCE).name == "price"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert len({c.id for c in chunks}) == 1


async def test_usage_chunk_comes_last_when_asked_for(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    contents = [c for c in chunks if c.choices and c.choices[0].delta.content]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(contents)
    assert last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + len(contents)
    assert all(c.usage is None for c in chunks[:-1])


async def test_max_tokens_cuts_the_reply_with_finish_reason_length(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, max_tokens=3
    )
    chunks = [chunk async for chunk in stream]
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert tuple(contents) == reply_fragments(UTTERANCE)[:3]
    assert chunks[-1].choices[0].finish_reason == "length"

    plain = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert plain.choices[0].message.content == "".join(reply_fragments(UTTERANCE)[:3])
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None and plain.usage.completion_tokens == 3


async def test_plain_completion_carries_the_whole_reply(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="m", messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(reply_fragments(UTTERANCE))
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion"


async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in client.models.list()]
    assert "teleprompter-sim" in ids


async def test_stats_report_the_configured_clock_and_each_request_by_its_id(
    http: aiohttp.ClientSession,
) -> None:
    server = await start_simulator(ttft_ms=25.0, tokens_per_s=700.0)
    try:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        headers = {"X-Request-Id": "turn-42"}
        async with http.post(
            server.make_url("/v1/chat/completions"), json=body, headers=headers
        ) as response:
            assert response.headers["X-Request-Id"] == "turn-42"
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = [line async for line in response.content if line.startswith(b"data: ")]
        assert events[-1] == b"data: [DONE]\n"
        report = await stats(http, server.make_url("/"))
        assert (report["ttft_ms"], report["tokens_per_s"]) == (25.0, 700.0)
        record = report["requests"]["turn-42"]
        assert record["outcome"] == "completed"
        assert record["stream"] is True and record["model"] == "m"
        assert record["completion_tokens"] == len(reply_fragments(UTTERANCE))
        assert record["ttft_ms"] is not None and record["total_ms"] >= record["ttft_ms"]
        assert report["active"] == 0 and report["cpu_s"] > 0
    finally:
        await server.close()


async def test_a_request_without_id_gets_one(http: aiohttp.ClientSession, sim: TestServer) -> None:
    body = {"model": "m", "messages": MESSAGES}
    async with http.post(sim.make_url("/v1/chat/completions"), json=body) as response:
        request_id = response.headers["X-Request-Id"]
    assert request_id in (await stats(http, sim.make_url("/")))["requests"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": ["hello"]}, "messages[0]"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"n": 2}, "n"),
        ({"seed": 1.5}, "seed"),
    ],
)
async def test_bad_requests_get_400_naming_the_field(
    http: aiohttp.ClientSession, sim: TestServer, change: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "messages": MESSAGES} | change
    body = {key: value for key, value in body.items() if value is not None}
    async with http.post(sim.make_url("/v1/chat/completions"), json=body) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert f"'{param}'" in error["message"]


async def test_bad_request_surfaces_in_the_openai_client(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[], stream=True)
    assert caught.value.param == "messages"
    assert "'messages'" in caught.value.message


async def test_a_body_that_is_not_json_is_a_400(
    http: aiohttp.ClientSession, sim: TestServer
) -> None:
    async with http.post(sim.make_url("/v1/chat/completions"), data=b"{nope") as response:
        assert response.status == 400
        assert "not valid JSON" in (await response.json())["error"]["message"]


async def test_unknown_paths_get_an_openai_style_404(
    http: aiohttp.ClientSession, sim: TestServer
) -> None:
    async with http.get(sim.make_url("/v1/embeddings")) as response:
        assert response.status == 404
        assert "/v1/embeddings" in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, openai.RateLimitError), (503, openai.InternalServerError)],
)
async def test_a_forced_status_fails_the_request(
    sim: TestServer, status: int, error: type[openai.APIStatusError]
) -> None:
    async with openai.AsyncOpenAI(
        base_url=str(sim.make_url("/v1")),
        api_key="test",
        max_retries=0,
        default_headers={"X-Sim-Status": str(status)},
    ) as client:
        with pytest.raises(error) as caught:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == status


async def test_a_bad_forced_status_is_named(http: aiohttp.ClientSession, sim: TestServer) -> None:
    body = {"model": "m", "messages": MESSAGES}
    headers = {"X-Sim-Status": "200"}
    url = sim.make_url("/v1/chat/completions")
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "X-Sim-Status"


@pytest.mark.parametrize(
    ("handler_cancellation", "tokens_per_s"),
    # Cancelled at once when the connection drops; or, as aiohttp's default runner does,
    # noticed at the next token's write (so tokens come every 0.2 s, of ~30).
    [(True, 0.01), (False, 5.0)],
)
async def test_client_disconnect_mid_stream_ends_that_stream_quietly(
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_cancellation: bool,
    tokens_per_s: float,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(ttft_ms=0.0, tokens_per_s=tokens_per_s)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        await disconnect_mid_stream(http, URL(f"http://127.0.0.1:{runner.addresses[0][1]}/"))
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def disconnect_mid_stream(http: aiohttp.ClientSession, root: URL) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    url = root.join(URL("/v1/chat/completions"))
    async with http.post(url, json=body, headers={"X-Request-Id": "gone"}) as response:
        first = await response.content.readline()
        assert b'"role": "assistant"' in first
        record = (await stats(http, root))["requests"]["gone"]
        assert record["outcome"] == "running" and record["completion_tokens"] >= 1
        response.close()
    record = await wait_for_outcome(http, root, "gone", "disconnected")
    assert 1 <= record["completion_tokens"] < len(reply_fragments(UTTERANCE))
    report = await stats(http, root)
    assert report["active"] == 0 and report["disconnects_total"] == 1
    # The simulator serves on.
    async with http.post(url, json=body | {"max_tokens": 1}) as response:
        assert response.status == 200
        assert (await response.read()).endswith(b"data: [DONE]\n\n")


async def test_disconnect_before_the_first_token(http: aiohttp.ClientSession) -> None:
    server = await start_simulator(ttft_ms=100_000.0, tokens_per_s=40.0)
    try:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        url = server.make_url("/v1/chat/completions")
        async with http.post(url, json=body, headers={"X-Request-Id": "early"}) as response:
            # Headers come at once; the first token only after the configured TTFT.
            assert response.status == 200
            record = (await stats(http, server.make_url("/")))["requests"]["early"]
            assert (record["ttft_ms"], record["completion_tokens"]) == (None, 0)
            response.close()
        record = await wait_for_outcome(http, server.make_url("/"), "early", "disconnected")
        assert record["ttft_ms"] is None
    finally:
        await server.close()


async def test_cli_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "llm-sim",
        "--port",
        "0",
        "--ttft-ms",
        "1",
        "--tokens-per-s",
        "1000",
        stdout=asyncio.subprocess.PIPE,
        env=os.environ | {"TELEPROMPTER_LOG_LEVEL": "WARNING"},
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        match = re.search(rb"serving (http://\S+/v1)", line)
        assert match, line
        url = match.group(1).decode()
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        async with http.post(f"{url}/chat/completions", json=body) as response:
            payload = await response.read()
        content = [
            json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            for line in payload.split(b"\n")
            if line.startswith(b"data: {")
        ]
        assert tuple(c for c in content if c) == reply_fragments(UTTERANCE)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_in_this_loop_until_stopped(http: aiohttp.ClientSession) -> None:
    settings = Settings(llm_sim_port=0, llm_ttft_ms=1.0, llm_tokens_per_s=500.0)
    stop, bound = asyncio.Event(), asyncio.Event()
    urls: list[str] = []

    def ready(url: str) -> None:
        urls.append(url)
        bound.set()

    task = asyncio.create_task(serve(settings, ready=ready, stop=stop))
    try:
        async with asyncio.timeout(WAIT_S):
            await bound.wait()
        report = await stats(http, URL(urls[0]))
        assert (report["ttft_ms"], report["tokens_per_s"]) == (1.0, 500.0)
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await stats(http, URL(urls[0]))
