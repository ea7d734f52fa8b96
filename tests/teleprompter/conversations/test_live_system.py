"""replay, replay --follow and replay --through on calls made through the real system: gateway,
worker and LLM simulator as processes, a real WebSocket client, the session's Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from teleprompter.cli import main
from teleprompter.local_system import LocalSystem
from tests.signals import interruptible
from tests.system_fixtures import RepClientFactory

CUSTOMER_LINES = (
    "Hi, I'm calling about the invoice I got this morning.",
    "Can you tell me what the premium plan costs per month?",
    "Is there a discount if we pay for the whole year up front?",
)


def system_env(system: LocalSystem) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": system.resolved.bootstrap_servers,
        "TELEPROMPTER_TOPIC_PREFIX": system.resolved.topic_prefix,
    }


async def cli(system: LocalSystem, *args: str) -> Result:
    """The CLI in a thread of its own: the commands run their own event loops."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(args), env=system_env(system))


async def record_call(
    rep_client: RepClientFactory, lines: tuple[str, ...]
) -> tuple[str, list[str]]:
    """A call with these customer lines, each answered before the next; returns the id and the
    suggestions the rep saw."""
    cid = f"live-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    async with rep_client(cid) as rep:
        await rep.send({"type": "context", "profile": {"name": "Dana", "plan": "Team"}})
        for n, line in enumerate(lines, start=1):
            await rep.say(line)
            (complete, *_) = (await rep.wait_for("suggestion_complete", count=n))[-1:]
            seen.append(complete["text"])
        await rep.send({"type": "end"})
    return cid, seen


async def test_replay_shows_a_real_call(system: LocalSystem, rep_client: RepClientFactory) -> None:
    cid, suggestions = await record_call(rep_client, CUSTOMER_LINES[:2])

    result = await cli(system, "replay", cid, "--format", "jsonl")

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    said = [
        line["event"]["text"]
        for line in lines
        if line["type"] == "TranscriptSegment" and line["event"]["text"]
    ]
    assert said == list(CUSTOMER_LINES[:2])
    outcomes = [
        line["event"]
        for line in lines
        if line["type"] == "SuggestionEvent" and line["event"]["kind"] == "complete"
    ]
    assert [o["text"] for o in outcomes] == suggestions
    assert all("llm_request->llm_first_token" in o["timings"] for o in outcomes)
    runs = [line for line in lines if line["type"] == "DeltaRun"]
    assert [r["event"]["text"].strip() for r in runs] == suggestions
    assert {r["topic"] for r in runs} == {
        f"{system.resolved.topic_prefix}.replies.{system.resolved.gateway_id}"
    }
    assert lines[0]["type"] == "SessionRoute" and lines[0]["event"]["connected"] is True
    assert any(line["event"].get("end_of_conversation") for line in lines)


async def test_follow_prints_a_live_call_as_it_happens_and_stops_at_its_end(
    system: LocalSystem, rep_client: RepClientFactory
) -> None:
    cid = f"follow-{uuid.uuid4().hex[:8]}"
    follow = await start_follow(system, cid)
    try:
        await follow.stderr_line(lambda line: "waiting for it" in line)
        async with rep_client(cid) as rep:
            await rep.say(CUSTOMER_LINES[1])
            (complete,) = await rep.wait_for("suggestion_complete")
            # The outcome shows up while the call is still going on.
            await follow.line(
                lambda line: (
                    line["type"] == "SuggestionEvent" and line["event"]["kind"] == "complete"
                )
            )
            await rep.send({"type": "end"})
        await asyncio.wait_for(follow.process.wait(), 60)
    finally:
        await follow.stop()

    assert follow.process.returncode == 0, follow.stderr
    types = [line["type"] for line in follow.lines]
    assert {"SessionRoute", "TranscriptSegment", "Turn", "DeltaRun", "SuggestionEvent"} <= set(
        types
    )
    # What caused what comes first, though read from different topics.
    assert types.index("TranscriptSegment") < types.index("Turn") < types.index("DeltaRun")
    assert types.index("DeltaRun") < types.index("SuggestionEvent")
    runs = [line for line in follow.lines if line["type"] == "DeltaRun"]
    assert len(runs) == 1, "\n".join(map(json.dumps, follow.lines))
    (run,) = runs
    assert run["event"]["text"].strip() == complete["text"]
    assert follow.lines[-1]["event"].get("end_of_conversation") or any(
        line["event"].get("end_of_conversation") for line in follow.lines
    )


async def test_follow_stops_cleanly_on_ctrl_c_and_sigterm(
    system: LocalSystem, rep_client: RepClientFactory
) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        cid = f"stop-{uuid.uuid4().hex[:8]}"
        async with rep_client(cid) as rep:
            await rep.say(CUSTOMER_LINES[0])
            await rep.wait_for("suggestion_complete")
            follow = await start_follow(system, cid)
            try:
                await follow.line(lambda line: line["type"] == "Turn")
                follow.process.send_signal(signum)
                await follow.exited(timeout_s=30)
            finally:
                await follow.stop()

        assert follow.process.returncode == 0, (signum, follow.stderr)
        assert "Traceback" not in follow.stderr


async def test_what_if_reruns_each_turn_with_the_context_it_had(
    system: LocalSystem, rep_client: RepClientFactory, tmp_path: Path
) -> None:
    cid, suggestions = await record_call(rep_client, CUSTOMER_LINES)
    output = tmp_path / "whatif.jsonl"

    result = await cli(
        system,
        "replay",
        cid,
        "--through",
        "--llm-base-url",
        system.resolved.llm_base_url,
        "-o",
        str(output),
    )

    assert result.exit_code == 0, result.output
    comparisons = [json.loads(line) for line in output.read_text().splitlines()]
    assert [c["customer_text"] for c in comparisons] == list(CUSTOMER_LINES)
    assert [c["original"]["text"] for c in comparisons] == suggestions
    assert all(c["original"]["ttft_ms"] > 0 and c["new"]["ttft_ms"] > 0 for c in comparisons)
    # The simulator answers the last customer line it finds in the prompt: the same answers
    # mean each prompt was rebuilt with the transcript as it stood at its turn.
    assert [c["new"]["text"] for c in comparisons] == suggestions
    third = comparisons[2]["prompt"][-1]["content"]
    assert CUSTOMER_LINES[1] in third and "- name: Dana" in third
    assert CUSTOMER_LINES[2] not in comparisons[1]["prompt"][-1]["content"]
    assert "turn 3 of 3" in result.stdout and "ORIGINAL complete" in result.stdout
    assert "3 turns re-run; median time to first token" in result.stdout


async def test_what_if_with_another_system_prompt(
    system: LocalSystem, rep_client: RepClientFactory, tmp_path: Path
) -> None:
    cid, _ = await record_call(rep_client, CUSTOMER_LINES[:1])
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are terse. Answer in five words.\n")
    output = tmp_path / "whatif.jsonl"

    result = await cli(
        system,
        "replay",
        cid,
        "--through",
        "--llm-base-url",
        system.resolved.llm_base_url,
        "--prompt",
        str(prompt),
        "--model",
        "teleprompter-sim",
        "-o",
        str(output),
    )

    assert result.exit_code == 0, result.output
    (comparison,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert comparison["prompt"][0] == {
        "role": "system",
        "content": "You are terse. Answer in five words.",
    }
    assert comparison["new"]["model"] == "teleprompter-sim"


async def test_what_if_refuses_an_unreadable_prompt_file(
    system: LocalSystem, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")

    missing = await cli(system, "replay", "any", "--through", "--prompt", str(tmp_path / "nope"))
    blank = await cli(system, "replay", "any", "--through", "--prompt", str(empty))

    assert (missing.exit_code, blank.exit_code) == (2, 2)
    assert missing.stderr.startswith("teleprompter: cannot read --prompt file")
    assert blank.stderr.strip() == f"teleprompter: --prompt file {empty} is empty"


# --- a followed replay, as a process ------------------------------------------------------------
class Follow:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        self._arrived = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def line(self, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 60) -> None:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: any(wanted(line) for line in self.lines)), timeout_s
            )

    async def stderr_line(self, wanted: Callable[[str], bool], timeout_s: float = 60) -> None:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: any(map(wanted, self.stderr.splitlines()))),
                timeout_s,
            )

    async def exited(self, timeout_s: float = 30) -> None:
        """Wait for the process to end; if it hangs, fail with where every thread of it was
        (faulthandler, on in `start_follow`, prints their stacks on SIGABRT)."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.send_signal(signal.SIGABRT)
            await self.process.wait()
            await asyncio.gather(*self._readers)
            pytest.fail(f"still running {timeout_s:g} s after the signal; stderr:\n{self.stderr}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await asyncio.gather(*self._readers)

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._arrived:
                self.lines.append(json.loads(raw))
                self._arrived.notify_all()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._arrived:
                self.stderr += raw.decode()
                self._arrived.notify_all()


async def start_follow(system: LocalSystem, cid: str) -> Follow:
    process = await asyncio.create_subprocess_exec(
        *interruptible("teleprompter", "replay", cid, "--follow", "--format", "jsonl"),
        # A hang is then diagnosable: SIGABRT prints every thread's stack (Follow.exited).
        env={**os.environ, **system_env(system), "PYTHONFAULTHANDLER": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Follow(process)
