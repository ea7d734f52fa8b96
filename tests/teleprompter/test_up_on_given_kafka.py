"""`teleprompter up` with KAFKA_BOOTSTRAP_SERVERS: the session's Kafka, no broker of its own."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.rep_client import RepClient

CONNECT_LINE = re.compile(r"websocket: (ws://[^?\s]+)\?conversation_id=([^&\s]+)&token=(\S+)")


async def test_up_on_a_given_kafka_starts_no_broker_and_serves_a_suggestion(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEPROMPTER_", "OPENAI_"))},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "TELEPROMPTER_TOPIC_PREFIX": f"up{tag}",
        "TELEPROMPTER_GATEWAY_ID": f"gw-{tag}",
        "TELEPROMPTER_PARTITIONS": "2",
        "TELEPROMPTER_LLM_SIM_PORT": "0",
    }
    up = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "teleprompter", "up", "--gateway-port", "0"),
        *("--data-dir", str(tmp_path), "--llm-ttft-ms", "50"),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        connect = await asyncio.wait_for(_line(up, output, CONNECT_LINE), 180)
        ws_url, conversation, token = connect.groups()
        async with RepClient(ws_url=ws_url, conversation_id=conversation, token=token) as rep:
            await rep.say("Can we move our renewal date to the end of the quarter?")
            [complete] = await rep.wait_for("suggestion_complete", timeout_s=60)
            assert complete["text"]

        up.send_signal(signal.SIGTERM)
        rest = asyncio.create_task(_rest(up, output))
        assert await asyncio.wait_for(up.wait(), 90) == 0, "\n".join(output[-40:])
        await rest
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()

    assert f"{bootstrap_servers} (external)" in "\n".join(output)
    assert not [line for line in output if re.match(r"\s*broker \|", line)], "a broker started"
    topics = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=30).topics
    assert {f"up{tag}.turns", f"up{tag}.replies.gw-{tag}"} <= set(topics)


async def _line(
    process: asyncio.subprocess.Process, output: list[str], pattern: re.Pattern[str]
) -> re.Match[str]:
    """Collect output until a line matches `pattern`."""
    assert process.stdout is not None
    async for raw in process.stdout:
        output.append(raw.decode(errors="replace").rstrip())
        if found := pattern.search(output[-1]):
            return found
    raise AssertionError("up ended before printing its address:\n" + "\n".join(output[-40:]))


async def _rest(process: asyncio.subprocess.Process, output: list[str]) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        output.append(raw.decode(errors="replace").rstrip())
