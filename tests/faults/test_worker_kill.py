"""Findings 4 and 5: after a worker's kill -9, one turn per utterance; every suggestion ends."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from core.kafka.catalog import TopicCatalog
from schemas.events import SuggestionEvent, TranscriptSegment, Turn
from teleprompter.local_system import LocalSystem
from tests.faults.workers import (
    conversation_owned_by,
    kill_worker,
    produce,
    read_topic,
)
from tests.rep_client import RepClient
from tests.system_fixtures import system_settings
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# Slow tokens: the suggestion is still streaming when its worker is killed.
SLOW_LLM: dict[str, Any] = {"llm_ttft_ms": 50.0, "llm_tokens_per_s": 8.0}


def streamed_turns(rep: RepClient) -> set[str]:
    return {m["turn_id"] for m in rep.of_type("suggestion_delta")}


def client(system: LocalSystem, cid: str) -> RepClient:
    return RepClient(ws_url=system.ws_url, conversation_id=cid, token=system.token(cid))


async def test_a_suggestion_cut_by_a_kill_is_cancelled_and_answered_again_by_the_restart(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = system_settings(
        bootstrap_servers, tmp_path, turn_recovery_window_s=120.0, **SLOW_LLM
    )
    async with LocalSystem(settings=settings) as system, client(system, "cut-1") as rep:
        await rep.say("Can we pay by invoice every quarter?")
        [first] = await rep.wait_for("suggestion_delta")
        turn_id = first["turn_id"]

        await kill_worker(system, "worker")
        await system.restart_worker()

        [cancelled] = await rep.wait_for("suggestion_cancelled", turn_id=turn_id, timeout_s=60)
        assert cancelled["reason"] == "worker_lost"
        retry = f"{turn_id}-r"
        [complete] = await rep.wait_for("suggestion_complete", turn_id=retry, timeout_s=60)
        assert complete["text"]
        assert rep.of_type("suggestion_complete", turn_id=turn_id) == []

        await rep.say("And can we pay by card instead?")
        await rep.wait_for("suggestion_complete", count=2, timeout_s=60)
        assert [m["turn_id"] for m in rep.of_type("suggestion_cancelled")] == [turn_id]


async def test_a_turn_lost_longer_ago_than_the_window_is_only_cancelled(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = system_settings(bootstrap_servers, tmp_path, turn_recovery_window_s=0.0, **SLOW_LLM)
    async with LocalSystem(settings=settings) as system, client(system, "old-1") as rep:
        await rep.say("Do you have a data processing agreement?")
        [first] = await rep.wait_for("suggestion_delta")

        await kill_worker(system, "worker")
        await system.restart_worker()

        [cancelled] = await rep.wait_for(
            "suggestion_cancelled", turn_id=first["turn_id"], timeout_s=60
        )
        assert cancelled["reason"] == "worker_lost"
        await rep.say("Where is our data stored?")
        [complete] = await rep.wait_for("suggestion_complete", timeout_s=60)
        assert not complete["turn_id"].endswith("-r")


async def test_with_a_second_worker_the_survivor_ends_the_cut_suggestion_and_answers_on(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = system_settings(
        bootstrap_servers, tmp_path, workers=2, turn_recovery_window_s=120.0, **SLOW_LLM
    )
    async with LocalSystem(settings=settings) as system:
        cid = await conversation_owned_by(system, "worker-1", prefix="survivor")
        async with client(system, cid) as rep:
            await rep.say("How long is the onboarding?")
            [first] = await rep.wait_for("suggestion_delta")

            await kill_worker(system, "worker-1")

            [cancelled] = await rep.wait_for(
                "suggestion_cancelled", turn_id=first["turn_id"], timeout_s=60
            )
            assert cancelled["reason"] == "worker_lost"
            await rep.wait_for("suggestion_complete", turn_id=f"{first['turn_id']}-r", timeout_s=60)
            await rep.say("Who runs it?")
            await rep.wait_for("suggestion_complete", count=2, timeout_s=60)


SENTENCES = 24


async def test_each_utterance_is_one_turn_across_a_kill_and_a_resend(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    # Nothing is committed before the kill: the restarted worker re-reads every transcript.
    settings = system_settings(bootstrap_servers, tmp_path, worker_commit_interval_s=600.0)
    catalog = TopicCatalog.from_settings(settings)
    async with LocalSystem(settings=settings) as system, client(system, "dup-1") as rep:
        for n in range(SENTENCES):
            await rep.say(f"Question number {n}, is that right?")
            # The worker has made this sentence's turn: a new turn's suggestion is streaming.
            await wait_until(
                lambda n=n: len(streamed_turns(rep)) > n, timeout_s=60, what=f"turn {n}"
            )
            if n == SENTENCES // 2:
                await kill_worker(system, "worker")
                await system.restart_worker()
        # A gateway's resend after a reconnect: a segment already stored, stored again.
        transcripts = await asyncio.to_thread(
            read_topic, system.resolved.bootstrap_servers, catalog.transcripts.name
        )
        [resent] = [
            e
            for e in transcripts
            if isinstance(e, TranscriptSegment) and e.text.startswith("Question number 3,")
        ]
        await asyncio.to_thread(
            produce, system.resolved.bootstrap_servers, catalog.transcripts.name, [resent]
        )
        await rep.say("That was the last question.")
        await rep.wait_for("suggestion_complete", timeout_s=60)

        turns = await _turns_once_settled(system, catalog.turns.name)
        by_sentence: dict[int, set[str]] = {n: set() for n in range(SENTENCES)}
        for turn in turns:
            for n in range(SENTENCES):
                if f"number {n}," in turn.text:
                    by_sentence[n].add(turn.turn_id)
        assert {n: len(ids) for n, ids in by_sentence.items()} == dict.fromkeys(by_sentence, 1)

        outcomes = await asyncio.to_thread(
            read_topic, system.resolved.bootstrap_servers, catalog.suggestions.name
        )
        answered = [
            e.turn_id for e in outcomes if isinstance(e, SuggestionEvent) and e.kind == "complete"
        ]
        assert len(answered) == len(set(answered)), "a turn was answered twice"


async def _turns_once_settled(system: LocalSystem, topic: str) -> list[Turn]:
    """The turns topic once the last sentence's turn is on it."""
    deadline = time.monotonic() + 60
    while True:
        events = await asyncio.to_thread(read_topic, system.resolved.bootstrap_servers, topic)
        turns = [e for e in events if isinstance(e, Turn)]
        if any("last question" in t.text for t in turns):
            return turns
        if time.monotonic() > deadline:
            raise TimeoutError(f"the last turn never reached {topic}")
