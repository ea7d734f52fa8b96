"""`teleprompter up`: starts the whole system from nothing, serves a suggestion, stops cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.rep_client import RepClient
from tests.up_process import UpProcess, clean_environment, port_is_listening

CONNECT_LINE = r"websocket: (ws://[^?\s]+)\?conversation_id=([^&\s]+)&token=(\S+)"


async def test_up_serves_a_suggestion_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    args = ["--gateway-port", "0", "--broker-port", "0", "--llm-port", "0"]
    args += ["--data-dir", str(tmp_path), "--llm-ttft-ms", "50"]
    async with UpProcess(args, env=clean_environment()) as up:
        ws_url, conversation, token = (await up.line(CONNECT_LINE)).groups()

        async with RepClient(ws_url=ws_url, conversation_id=conversation, token=token) as rep:
            await rep.say("How long does onboarding usually take?")
            [complete] = await rep.wait_for("suggestion_complete", timeout_s=60)
            assert complete["text"]

        worker_line = await up.line(r"/metrics  http")
        metrics_url, health_url = worker_line.string.split()[1:3]
        assert metrics_url.endswith("/metrics") and health_url.endswith("/healthz")
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
            assert response.status == 200
            assert "teleprompter_worker_turns_total" in await response.text()

        assert await up.stop() == 0, up.tail()

    assert "stopped." in up.output
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", "\n".join(up.output))}
    assert ports, "up printed no addresses"
    for port in ports:
        assert not await port_is_listening(port), f"port {port} still open after up stopped"
