"""Finding 6: an LLM outage fails suggestions with a reason and shows as degraded until it heals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streams.llm_sim.server import create_app
from teleprompter.local_system import LocalSystem
from tests.rep_client import RepClient
from tests.system_fixtures import system_settings

pytestmark = pytest.mark.slow


class SwitchableLlm:
    """The LLM simulator behind a switch: while `down`, every request is answered 503."""

    def __init__(self) -> None:
        self.down = False
        self.app = create_app(ttft_ms=50.0, tokens_per_s=40.0)
        self.app.middlewares.append(self._outage)

    @web.middleware
    async def _outage(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.down:
            return web.json_response(
                {"error": {"message": "upstream is down", "type": "server_error"}}, status=503
            )
        response: web.StreamResponse = await handler(request)
        return response


@pytest.fixture
async def llm() -> AsyncIterator[tuple[SwitchableLlm, str]]:
    switchable = SwitchableLlm()
    server = TestServer(switchable.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield switchable, str(server.make_url("/v1"))
    finally:
        await server.close()


async def healthz(system: LocalSystem) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{system.http_url}/healthz") as response,
    ):
        return response.status, await response.json()


async def test_an_outage_fails_suggestions_with_a_reason_and_shows_degraded_until_it_heals(
    bootstrap_servers: str, tmp_path: Path, llm: tuple[SwitchableLlm, str]
) -> None:
    switch, url = llm
    settings = system_settings(bootstrap_servers, tmp_path, openai_base_url=url)
    async with LocalSystem(settings=settings) as system:
        cid = "outage-1"
        async with RepClient(
            ws_url=system.ws_url, conversation_id=cid, token=system.token(cid)
        ) as rep:
            switch.down = True
            await rep.say("Can I get a refund for last month?")
            [failed] = await rep.wait_for("suggestion_failed")
            assert failed["reason"] == "llm_unavailable"

            await rep.say("Hello, is anyone there?")
            await rep.wait_for("suggestion_failed", count=2)
            [degraded] = await rep.wait_for("status")
            assert degraded["llm"] == "degraded"
            assert "503" in degraded["reason"]
            status, body = await healthz(system)
            assert (status, body["llm"]) == (200, "degraded")  # the gateway itself can serve
            assert rep.of_type("suggestion_cancelled") == []

            switch.down = False
            [_, recovered] = await rep.wait_for("status", count=2, timeout_s=60)
            assert recovered["llm"] == "ok"
            assert (await healthz(system))[1]["llm"] == "ok"
            await rep.say("So, about that refund?")
            await rep.wait_for("suggestion_complete")
