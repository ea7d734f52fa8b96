"""The suggestion pipeline end to end: real WebSocket clients, gateway, broker, worker, LLM."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.asr.audio import SAMPLE_RATE, Samples
from streams.asr.corpus import (
    SENTENCES,
    VOICES,
    SpokenSentence,
    build_corpus,
    espeak_path,
    speak,
    word_error_rate,
)
from teleprompter.local_system import LocalSystem
from tests.rep_client import RepClient
from tests.streams.asr.conftest import to_mulaw_8k, to_pcm_s16le, with_pause
from tests.system_fixtures import RepClientFactory, system_settings
from tests.waiting import wait_until


def suggestion_text(client: RepClient, turn_id: str) -> str:
    return "".join(d["text"] for d in client.of_type("suggestion_delta", turn_id=turn_id))


async def test_a_customer_sentence_streams_deltas_in_order_then_complete(
    rep_client: RepClientFactory,
) -> None:
    async with rep_client() as rep, rep_client() as bystander:
        await rep.say("How much does the premium plan cost per seat?")
        [complete] = await rep.wait_for("suggestion_complete")

        turn_id = complete["turn_id"]
        deltas = rep.of_type("suggestion_delta", turn_id=turn_id)
        assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
        assert [d["fullText"] for d in deltas] == [
            suggestion_text(rep, turn_id)[: len(d["fullText"])] for d in deltas
        ]
        assert complete["text"] == deltas[-1]["fullText"].strip()
        assert complete["timings"]["total"] > 0
        assert "llm_request->llm_first_token" in complete["timings"]
        assert bystander.of_type("suggestion_delta") == []


async def test_interleaved_conversations_each_get_only_their_own_suggestions(
    rep_client: RepClientFactory,
) -> None:
    async with rep_client() as a, rep_client() as b:
        await a.say("Is my data encrypted at rest?")
        await b.say("Can I get a discount if I sign for two years?")
        await a.wait_for("suggestion_complete")
        await b.wait_for("suggestion_complete")
        await b.say("What about three years?")
        await a.say("And who can access it?")
        a_done = await a.wait_for("suggestion_complete", count=2)
        b_done = await b.wait_for("suggestion_complete", count=2)

        a_turns = {m["turn_id"] for m in a.received if "turn_id" in m}
        b_turns = {m["turn_id"] for m in b.received if "turn_id" in m}
        assert a_turns == {m["turn_id"] for m in a_done}
        assert b_turns == {m["turn_id"] for m in b_done}
        assert a.of_type("suggestion_cancelled") == b.of_type("suggestion_cancelled") == []


async def test_new_customer_speech_cancels_the_in_flight_suggestion(
    rep_client: RepClientFactory,
) -> None:
    async with rep_client() as rep:
        await rep.say("We already use one of your competitors.")
        [first] = await rep.wait_for("suggestion_delta")
        await rep.say("And honestly they are cheaper.")

        [cancelled] = await rep.wait_for("suggestion_cancelled")
        assert cancelled["turn_id"] == first["turn_id"]
        [complete] = await rep.wait_for("suggestion_complete")
        assert complete["turn_id"] != first["turn_id"]


async def test_a_pause_without_punctuation_still_makes_a_turn(
    rep_client: RepClientFactory,
) -> None:
    async with rep_client() as rep:
        await rep.say("we were hoping to roll this out to the whole team")
        [complete] = await rep.wait_for("suggestion_complete")
        assert complete["text"]


async def test_rep_speech_alone_never_triggers_a_suggestion(
    rep_client: RepClientFactory,
) -> None:
    async with rep_client() as rep:
        await rep.say("Thanks for joining, let me pull up your account.", speaker="rep")
        await rep.say("Does it integrate with Salesforce?")
        [complete] = await rep.wait_for("suggestion_complete")
        assert len(rep.of_type("suggestion_delta", turn_id=complete["turn_id"])) > 0
        assert len({m["turn_id"] for m in rep.of_type("suggestion_delta")}) == 1


@pytest.mark.parametrize("where", ["same gateway", "another gateway"])
async def test_a_reconnecting_client_gets_the_text_so_far_then_the_rest(
    where: str, system: LocalSystem, rep_client: RepClientFactory
) -> None:
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    # The other gateway is up before the suggestion starts: starting a process can take longer
    # than the suggestion streams, and a reconnect only resumes a suggestion still in flight.
    ws_url = system.ws_url if where == "same gateway" else await _second_gateway(system)
    async with rep_client(conversation) as before:
        await before.say("What happens if we want to cancel after the first year?")
        seen = await before.wait_for("suggestion_delta", count=2)
    turn_id = seen[0]["turn_id"]

    async with rep_client(conversation, ws_url=ws_url) as after:
        [complete] = await after.wait_for("suggestion_complete", turn_id=turn_id)
        resumed = after.of_type("suggestion_delta", turn_id=turn_id)
        assert resumed, "no delta after reconnecting"
        assert resumed[0]["fullText"].startswith(seen[-1]["fullText"])
        assert complete["text"] == resumed[-1]["fullText"].strip()


async def test_later_turns_are_answered_after_a_worker_restart(
    system: LocalSystem, rep_client: RepClientFactory
) -> None:
    async with rep_client() as rep:
        await rep.say("Do you support single sign-on?")
        await rep.wait_for("suggestion_complete")
        await system.restart_worker()
        await rep.say("What about audit logs?")
        await rep.wait_for("suggestion_complete", count=2, timeout_s=60)


async def test_turns_beyond_capacity_are_throttled_at_once(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = system_settings(
        bootstrap_servers, tmp_path, llm_max_streams=1, llm_max_waiting=1, llm_ttft_ms=1500.0
    )
    async with LocalSystem(settings=settings) as small:
        clients = [
            RepClient(ws_url=small.ws_url, conversation_id=f"c{n}", token=small.token(f"c{n}"))
            for n in range(3)
        ]
        for client in clients:
            await client.__aenter__()
        try:
            for client in clients:
                await client.say("Can you walk me through pricing?")
            await asyncio.gather(*(_first_outcome(client) for client in clients))
            outcomes = sorted(
                "throttled" if c.of_type("throttled") else "answered" for c in clients
            )
            assert outcomes == ["answered", "answered", "throttled"]
        finally:
            for client in clients:
                await client.close()


async def _first_outcome(client: RepClient) -> None:
    done = asyncio.create_task(client.wait_for("suggestion_complete", timeout_s=30))
    throttled = asyncio.create_task(client.wait_for("throttled", timeout_s=30))
    finished, pending = await asyncio.wait({done, throttled}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in finished:
        task.result()


_SECOND_GATEWAY: dict[int, str] = {}


async def _second_gateway(system: LocalSystem) -> str:
    if id(system) not in _SECOND_GATEWAY:
        _SECOND_GATEWAY[id(system)] = await system.add_gateway(f"{system.resolved.gateway_id}-b")
    return _SECOND_GATEWAY[id(system)]


# --- audio: spoken customer sentences through the WebSocket ------------------------------------

FRAME_MS = 100
SILENCE_S = 1.0


@pytest.fixture(scope="session")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> list[SpokenSentence]:
    """Four customer sentences in two espeak-ng voices."""
    if espeak_path() is None:
        pytest.fail("espeak-ng is not installed; scripts/test.sh installs it")
    return build_corpus(
        sentences=SENTENCES[:4], voices=VOICES[:2], cache_dir=tmp_path_factory.mktemp("speech")
    )


async def stream_audio(rep: RepClient, pcm: bytes, *, bytes_per_ms: int = 32) -> None:
    """Real-time-sized frames (100 ms), sent back to back."""
    frame = FRAME_MS * bytes_per_ms
    for start in range(0, len(pcm), frame):
        await rep.send_bytes(pcm[start : start + frame])


def silence(seconds: float) -> Samples:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def finals(rep: RepClient) -> list[str]:
    """The text of each recognised segment, as its newest revision has it."""
    latest: dict[str, str] = {}
    for message in rep.of_type("transcript"):
        if message["final"]:
            latest[message["segment_id"]] = message["text"]
    return list(latest.values())


def heard_as(rep: RepClient, text: str, wer: float) -> bool:
    """Whether the recognised segments, as revised so far, say `text` within `wer`."""
    return word_error_rate([text], [" ".join(finals(rep))]) <= wer


async def test_spoken_sentences_come_back_as_transcripts_each_followed_by_a_suggestion(
    spoken: list[SpokenSentence], rep_client: RepClientFactory
) -> None:
    references: list[str] = []
    heard: list[str] = []
    for voice in VOICES[:2]:
        async with rep_client() as rep:
            await rep.send({"type": "audio_config", "encoding": "pcm_s16le", "sample_rate": 16000})
            sentences = [s for s in spoken if s.voice == voice]
            for n, sentence in enumerate(sentences, start=1):
                await stream_audio(
                    rep, to_pcm_s16le(np.concatenate([sentence.audio, silence(SILENCE_S)]))
                )
                await wait_until(lambda n=n: len(finals(rep)) >= n, timeout_s=60, what="a final")
                # Revisions may supersede a turn: a suggestion after this sentence's final.
                answered = len(rep.of_type("suggestion_complete"))
                await rep.wait_for("suggestion_complete", count=answered + 1, timeout_s=60)
            references += [s.text for s in sentences]
            heard.append(" ".join(finals(rep)))
            assert rep.of_type("error") == []
    assert word_error_rate([" ".join(references)], [" ".join(heard)]) <= 0.15, heard


async def test_silence_and_noise_make_no_transcript(
    spoken: list[SpokenSentence], rep_client: RepClientFactory
) -> None:
    noise = np.random.default_rng(7).normal(0.0, 0.05, 2 * SAMPLE_RATE).astype(np.float32)
    sentence = spoken[0]
    async with rep_client() as rep:
        await stream_audio(rep, to_pcm_s16le(np.concatenate([silence(2.0), noise, silence(0.5)])))
        await stream_audio(rep, to_pcm_s16le(np.concatenate([sentence.audio, silence(SILENCE_S)])))
        await rep.wait_for("suggestion_complete", timeout_s=60)
        await wait_until(lambda: heard_as(rep, sentence.text, 0.25), timeout_s=60, what="the words")
        assert len(finals(rep)) == 1, finals(rep)


async def test_a_sentence_with_a_comma_pause_is_revised_whole_and_answered_from_the_revision(
    rep_client: RepClientFactory,
) -> None:
    first = speak("We are thinking about upgrading to the premium plan", VOICES[0])
    second = speak("but the price is a concern.", VOICES[0])
    async with rep_client() as rep:
        await stream_audio(rep, to_pcm_s16le(with_pause(first, second, pause_s=0.4)))
        await stream_audio(rep, to_pcm_s16le(silence(SILENCE_S)))

        def revised() -> list[dict[str, Any]]:
            return [m for m in rep.of_type("transcript") if m["final"] and m["revision"] > 0]

        await wait_until(lambda: bool(revised()), timeout_s=60, what="a revised transcript")
        revision = revised()[-1]
        heard = [m for m in rep.of_type("transcript") if m["final"]]
        assert {m["segment_id"] for m in heard} == {revision["segment_id"]}
        assert word_error_rate([f"{first.text}, {second.text}"], [revision["text"]]) <= 0.2
        # The turn made from the revision is answered: a suggestion for a turn not seen before.
        at = rep.received.index(revision)
        seen_before = {m["turn_id"] for m in rep.received[:at] if "turn_id" in m}
        await wait_until(
            lambda: any(
                m["type"] == "suggestion_complete" and m["turn_id"] not in seen_before
                for m in rep.received[at:]
            ),
            timeout_s=60,
            what="a suggestion answering the revised turn",
        )


async def test_telephony_mulaw_at_8khz_is_recognised(
    spoken: list[SpokenSentence], rep_client: RepClientFactory
) -> None:
    sentence = spoken[0]
    async with rep_client() as rep:
        await rep.send({"type": "audio_config", "encoding": "mulaw", "sample_rate": 8000})
        mulaw = to_mulaw_8k(np.concatenate([sentence.audio, silence(SILENCE_S)]))
        await stream_audio(rep, mulaw, bytes_per_ms=8)
        await rep.wait_for("suggestion_complete", timeout_s=60)
        # The first final may be "Hi." (the comma pause); its revision brings the rest.
        await wait_until(lambda: heard_as(rep, sentence.text, 0.25), timeout_s=60, what="the words")


async def test_bad_audio_gets_an_error_and_the_session_goes_on(
    rep_client: RepClientFactory,
) -> None:
    async with rep_client() as rep:
        await rep.send_bytes(b"\x01\x02\x03")
        [odd] = await rep.wait_for("error")
        assert odd["code"] == "bad_audio"
        await rep.send({"type": "audio_config", "encoding": "mp3", "sample_rate": 16000})
        await rep.send({"type": "audio_config", "encoding": "pcm_s16le", "sample_rate": 96000})
        errors = await rep.wait_for("error", count=3)
        assert [e["code"] for e in errors[1:]] == ["bad_field", "bad_field"] or all(
            e["code"] in {"bad_field", "bad_audio"} for e in errors[1:]
        )
        await rep.say("Are you still there?")
        await rep.wait_for("suggestion_complete")
