"""`teleprompter up`: starts the whole system from nothing, serves a suggestion, stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.rep_client import RepClient


async def test_up_serves_a_suggestion_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "OPENAI_BASE_URL"}
        and not k.startswith("TELEPROMPTER_")
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "up",
        "--gateway-port",
        "0",
        "--broker-port",
        "0",
        "--data-dir",
        str(tmp_path),
        "--llm-ttft-ms",
        "50",
        env={**env, "TELEPROMPTER_LLM_SIM_PORT": "0"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        ws_line = await asyncio.wait_for(_read_until(process, output, "websocket:"), 120)
        match = re.search(r"(ws://[^?\s]+)\?conversation_id=([^&\s]+)&token=(\S+)", ws_line)
        assert match, ws_line
        ws_url, conversation, token = match.groups()

        async with RepClient(ws_url=ws_url, conversation_id=conversation, token=token) as rep:
            await rep.say("How long does onboarding usually take?")
            [complete] = await rep.wait_for("suggestion_complete", timeout_s=60)
            assert complete["text"]

        worker_line = await asyncio.wait_for(_read_until(process, output, "/metrics  http"), 10)
        metrics_url, health_url = worker_line.split()[1:3]
        assert metrics_url.endswith("/metrics") and health_url.endswith("/healthz")
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
            assert response.status == 200
            assert "teleprompter_worker_turns_total" in await response.text()

        process.send_signal(signal.SIGTERM)
        relay = asyncio.create_task(_read_until(process, output, None))
        assert await asyncio.wait_for(process.wait(), 60) == 0, "\n".join(output[-40:])
        await relay
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert "stopped." in output
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", "\n".join(output))}
    assert ports, "up printed no addresses"
    for port in ports:
        assert not await _listening(port), f"port {port} still open after up stopped"


async def _read_until(
    process: asyncio.subprocess.Process, output: list[str], marker: str | None
) -> str:
    assert process.stdout is not None
    async for raw in process.stdout:
        line = raw.decode(errors="replace").rstrip()
        output.append(line)
        if marker is not None and marker in line:
            return line
    if marker is not None:
        raise AssertionError(f"up ended before printing {marker!r}:\n" + "\n".join(output[-40:]))
    return ""


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True
