"""Speculator: the LLM starts on words waiting for the pause; the turn takes the stream or not."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from schemas.events import Speaker, SuggestionEvent, TranscriptSegment, Turn
from streams.admission import AdmissionGate
from streams.coalescer import TurnCoalescer
from streams.llm import LlmError
from streams.prompt import ChatMessage, ConversationContext, Prompt, PromptBuilder
from streams.speculation import Speculation, SpeculationOutcome, Speculator, prompt_key
from streams.suggester import SuggestionStreamer
from teleprompter.local_system import LocalSystem
from tests.rep_client import RepClient
from tests.system_fixtures import RepClientFactory, system_settings
from tests.waiting import wait_until, wait_until_async

ERROR = "<error>"


@dataclass(kw_only=True)
class Call:
    """One streamed request to the scripted endpoint; the test says what it answers."""

    request_id: str
    prompt: Prompt
    fragments: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    ended: str | None = None  # "completed" or "closed early"

    def say(self, *fragments: str, done: bool = False) -> None:
        for fragment in fragments:
            self.fragments.put_nowait(fragment)
        if done:
            self.fragments.put_nowait(None)


class ScriptedEndpoint:
    """Stands in for the LLM endpoint, recording every request and how its stream ended."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def stream(self, prompt: Prompt, request_id: str) -> AsyncIterator[str]:
        call = Call(request_id=request_id, prompt=prompt)
        self.calls.append(call)
        completed = False
        try:
            while (fragment := await call.fragments.get()) is not None:
                if fragment == ERROR:
                    raise LlmError(
                        "LLM endpoint answered 503", kind="unavailable", url="http://llm"
                    )
                yield fragment
            completed = True
        finally:
            call.ended = "completed" if completed else "closed early"


class Worker:
    """A worker's wiring of coalescer, contexts, speculator and suggester, without Kafka."""

    def __init__(
        self,
        *,
        speculate: bool = True,
        max_active: int = 8,
        max_waiting: int = 3,
        unclaimed_s: float = 5.0,
    ) -> None:
        self.coalescer = TurnCoalescer(pause_ms=600)
        self.contexts: dict[str, ConversationContext] = {}
        self.builder = PromptBuilder()
        self.endpoint = ScriptedEndpoint()
        self.gate = AdmissionGate(max_active=max_active, max_waiting=max_waiting)
        self.outcomes: list[SpeculationOutcome] = []
        self.published: list[SuggestionEvent] = []
        self.speculator = (
            Speculator(
                gate=self.gate,
                prompt_for=self.prompt_for,
                stream=self.endpoint.stream,
                waiting=self.coalescer.waiting_segments,
                pause_ms=0.0,
                unclaimed_s=unclaimed_s,
                on_end=self.outcomes.append,
            )
            if speculate
            else None
        )
        self.streamer = SuggestionStreamer(
            gate=self.gate,
            compose=lambda turn: self.endpoint.stream(
                self.prompt_for(turn.conversation_id), turn.turn_id
            ),
            publish=self._publish,
            speculator=self.speculator,
        )
        self._ids = itertools.count()

    def prompt_for(self, conversation_id: str) -> Prompt:
        context = self.contexts.setdefault(conversation_id, ConversationContext(conversation_id))
        return self.builder.suggestion(context)

    async def hear(
        self,
        text: str,
        *,
        speaker: Speaker = "customer",
        final: bool = True,
        cid: str = "c1",
        end: bool = False,
    ) -> Turn | None:
        """One transcript segment through the coalescer, the context and the speculator, as the
        coalesce agent takes it; a turn it makes is answered."""
        segment = TranscriptSegment(
            conversation_id=cid,
            session_id="s1",
            segment_id=f"s1:{next(self._ids)}",
            speaker=speaker,
            text=text,
            final=final,
            end_of_conversation=end,
        )
        assert self.coalescer.admit(segment)
        if final and text:
            self.contexts.setdefault(cid, ConversationContext(cid)).add_segment(segment)
        turn = self.coalescer.accept(segment, now_ms=0.0)
        if self.speculator is not None:
            self.speculator.heard(segment)
        if turn is not None:
            await self.streamer.submit(turn)
        return turn

    async def pause(self) -> Turn:
        """The turn pause runs out: the words waiting become a turn, which is answered."""
        [turn] = self.coalescer.due(now_ms=10_000.0)
        await self.streamer.submit(turn)
        return turn

    async def calls(self, count: int) -> list[Call]:
        await wait_until(lambda: len(self.endpoint.calls) >= count, what=f"{count} LLM calls")
        return self.endpoint.calls

    def kinds(self, turn_id: str | None = None) -> list[str]:
        return [e.kind for e in self.published if turn_id is None or e.turn_id == turn_id]

    async def _publish(self, event: SuggestionEvent) -> None:
        self.published.append(event)


async def test_the_turn_takes_the_speculation_and_gets_what_it_held_at_once_then_the_rest() -> None:
    worker = Worker()
    await worker.hear("we were hoping to roll this out to the whole team")
    [call] = await worker.calls(1)
    call.say("That ", "sounds ")
    await wait_until(call.fragments.empty, what="the speculation reading")
    assert worker.published == []  # held back: the words are not a turn yet

    turn = await worker.pause()
    await wait_until(lambda: worker.kinds() == ["delta"], what="the held text released")
    call.say("great.", done=True)
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")

    assert call.request_id == turn.turn_id  # the endpoint's timings for it are the turn's
    assert worker.kinds() == ["delta", "delta", "complete"]
    first, second, complete = worker.published
    assert (first.seq, first.text, first.full_text) == (1, "That sounds ", "That sounds ")
    assert (second.seq, second.text, second.full_text) == (2, "great.", "That sounds great.")
    assert complete.text == "That sounds great."
    assert complete.trace["llm_request"] <= complete.trace["suggest_in"]  # asked before the turn
    assert len(worker.endpoint.calls) == 1 and call.ended == "completed"
    assert worker.outcomes == ["confirmed"]


async def test_a_speculation_that_finished_before_the_turn_is_released_whole() -> None:
    worker = Worker()
    await worker.hear("so what about the onboarding")
    [call] = await worker.calls(1)
    call.say("It takes ", "two weeks.", done=True)
    await wait_until(lambda: call.ended == "completed", what="the speculation complete")

    await worker.pause()
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")
    assert [(e.kind, e.seq, e.text) for e in worker.published] == [
        ("delta", 1, "It takes two weeks."),
        ("complete", 1, "It takes two weeks."),
    ]


async def test_the_customer_going_on_cancels_the_speculation_and_the_client_never_sees_it() -> None:
    worker = Worker()
    await worker.hear("we already use")
    [early] = await worker.calls(1)
    early.say("Great ")
    await worker.hear("a compet", final=False)  # an interim transcript: more words are coming
    await wait_until(lambda: early.ended == "closed early", what="the LLM stream closed")

    await worker.hear("a competitor")
    [_, late] = await worker.calls(2)
    turn = await worker.pause()
    late.say("Which one do you use?", done=True)
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")

    assert {e.turn_id for e in worker.published} == {turn.turn_id}
    assert worker.kinds() == ["delta", "complete"]
    assert all("Great" not in e.full_text + e.text for e in worker.published)
    assert worker.published[-1].text == "Which one do you use?"
    assert worker.outcomes == ["speech", "confirmed"]
    assert len(worker.endpoint.calls) == 2


async def test_a_final_with_new_words_cancels_the_speculation_at_once() -> None:
    worker = Worker()
    await worker.hear("our team is growing")
    [early] = await worker.calls(1)
    await worker.hear("quickly")
    await wait_until(lambda: early.ended == "closed early", what="the LLM stream closed")
    [_, late] = await worker.calls(2)
    assert late.prompt != early.prompt
    assert worker.outcomes == ["speech"]


async def test_late_punctuation_still_matches_and_the_turn_takes_the_stream() -> None:
    worker = Worker()
    await worker.hear("I was charged twice")
    [call] = await worker.calls(1)
    call.say("Sorry about that.", done=True)
    turn = await worker.hear(".")  # a recogniser sending the sentence's end on its own
    assert turn is not None and turn.reason == "sentence_end"
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")

    assert worker.published[-1].text == "Sorry about that."
    assert len(worker.endpoint.calls) == 1 and worker.outcomes == ["confirmed"]


async def test_a_turn_whose_prompt_changed_meanwhile_is_answered_afresh() -> None:
    worker = Worker()
    await worker.hear("so about the invoice")
    [speculated] = await worker.calls(1)
    speculated.say("The invoice ")
    await worker.hear("Sure, go on.", speaker="rep")  # the prompt now ends with the rep's line

    turn = await worker.pause()
    [_, fresh] = await worker.calls(2)
    fresh.say("Which invoice?", done=True)
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")

    assert speculated.ended == "closed early"
    assert fresh.request_id == turn.turn_id
    assert "Rep: Sure, go on." in fresh.prompt.messages[-1].content
    assert worker.kinds() == ["delta", "complete"]
    assert worker.published[-1].text == "Which invoice?"
    assert worker.outcomes == ["mismatch"]


async def test_a_sentence_end_makes_the_turn_at_once_and_nothing_is_speculated() -> None:
    worker = Worker()
    turn = await worker.hear("How much does the premium plan cost?")
    assert turn is not None
    [call] = await worker.calls(1)
    call.say("It is listed per seat.", done=True)
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")
    assert call.request_id == turn.turn_id
    assert worker.outcomes == [] and len(worker.speculator or ()) == 0


async def test_a_turn_that_needs_the_slot_takes_it_from_a_speculation() -> None:
    worker = Worker(max_active=1, max_waiting=0)
    await worker.hear("we were thinking about the premium plan", cid="a")
    [speculated] = await worker.calls(1)
    assert worker.gate.lent == 1

    turn = await worker.hear("Is it SOC 2 compliant?", cid="b")
    assert turn is not None
    [_, answered] = await worker.calls(2)
    assert speculated.ended == "closed early"
    assert worker.outcomes == ["preempted"]
    answered.say("Yes, it is.", done=True)
    await wait_until(lambda: worker.kinds(turn.turn_id)[-1:] == ["complete"], what="complete")
    assert "throttled" not in worker.kinds()


async def test_no_speculation_starts_while_no_slot_is_free() -> None:
    worker = Worker(max_active=1, max_waiting=1)
    turn = await worker.hear("Is there a limit on users?", cid="a")
    assert turn is not None
    [busy] = await worker.calls(1)
    await worker.hear("and what about", cid="b")
    await wait_until(lambda: worker.outcomes == ["no_slot"], what="the speculation refused")
    busy.say("No limit.", done=True)
    await wait_until(lambda: worker.kinds(turn.turn_id)[-1:] == ["complete"], what="complete")
    assert len(worker.endpoint.calls) == 1


async def test_a_speculation_no_turn_claims_expires_and_closes_its_stream() -> None:
    worker = Worker(unclaimed_s=0.05)
    await worker.hear("hmm let me think")
    [call] = await worker.calls(1)
    await wait_until(lambda: worker.outcomes == ["expired"], what="expiry")
    await wait_until(lambda: call.ended == "closed early", what="the LLM stream closed")
    # The slot goes back from the stream task's done callback, a step after the stream closes.
    await wait_until(lambda: worker.gate.active == 0, what="the LLM slot given back")


async def test_the_end_of_the_conversation_cancels_its_speculation() -> None:
    worker = Worker()
    await worker.hear("well I guess")
    [call] = await worker.calls(1)
    await worker.hear("", end=True)
    await wait_until(lambda: call.ended == "closed early", what="the LLM stream closed")
    assert worker.outcomes == ["ended"] and worker.published == []


async def test_an_llm_error_after_the_turn_took_the_stream_fails_that_turn_once() -> None:
    worker = Worker()
    await worker.hear("can you check my order")
    [call] = await worker.calls(1)
    call.say("Let me ")
    turn = await worker.pause()
    await wait_until(lambda: worker.outcomes == ["confirmed"], what="the turn taking it")
    call.say(ERROR)
    await wait_until(lambda: worker.kinds()[-1:] == ["failed"], what="failed")
    assert worker.kinds(turn.turn_id) == ["delta", "failed"]
    assert worker.published[-1].reason == "llm_unavailable"
    assert worker.outcomes == ["confirmed"]


async def test_a_speculation_that_failed_before_its_turn_is_not_used() -> None:
    worker = Worker()
    await worker.hear("can you check my order")
    [failed] = await worker.calls(1)
    failed.say(ERROR)
    await wait_until(lambda: worker.outcomes == ["failed"], what="the speculation failed")
    turn = await worker.pause()
    [_, fresh] = await worker.calls(2)
    fresh.say("Sure.", done=True)
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")
    assert fresh.request_id == turn.turn_id and worker.kinds() == ["delta", "complete"]


async def test_a_superseded_suggestion_closes_the_stream_it_took() -> None:
    worker = Worker()
    await worker.hear("what about the price")
    [call] = await worker.calls(1)
    call.say("The price ")
    first = await worker.pause()
    await wait_until(lambda: worker.kinds(first.turn_id) == ["delta"], what="first delta")

    second = await worker.hear("Is it per seat?")
    assert second is not None
    await wait_until(lambda: call.ended == "closed early", what="the LLM stream closed")
    assert worker.kinds(first.turn_id) == ["delta", "cancelled"]


async def test_without_a_speculator_the_llm_starts_only_when_the_pause_makes_the_turn() -> None:
    worker = Worker(speculate=False)
    await worker.hear("we were hoping to roll this out")
    for _ in range(5):
        await asyncio.sleep(0)  # let any timer that was armed fire
    assert worker.endpoint.calls == []
    turn = await worker.pause()
    [call] = await worker.calls(1)
    call.say("Great.", done=True)
    await wait_until(lambda: worker.kinds()[-1:] == ["complete"], what="complete")
    assert call.request_id == turn.turn_id
    assert worker.published[-1].trace["llm_request"] >= worker.published[-1].trace["suggest_in"]


async def test_close_cancels_every_speculation_and_waits_for_their_streams() -> None:
    worker = Worker()
    await worker.hear("one moment", cid="a")
    await worker.hear("so basically", cid="b")
    calls = await worker.calls(2)
    assert worker.speculator is not None
    await worker.speculator.close()
    assert [call.ended for call in calls] == ["closed early", "closed early"]
    assert worker.outcomes == ["lost", "lost"] and worker.gate.active == 0


async def test_a_speculation_cancelled_before_it_ever_ran_gives_its_slot_back() -> None:
    gate = AdmissionGate(max_active=1)
    ended: list[SpeculationOutcome] = []
    speculation = Speculation(
        conversation_id="c1",
        request_id="t1",
        prompt=prompt("Customer: hello"),
        key="customer hello",
        stream=ScriptedEndpoint().stream,
        on_end=lambda _, outcome: ended.append(outcome),
    )
    assert speculation.begin(gate) and gate.active == 1
    speculation.drop("speech")  # in the same step: its task has not run at all
    await speculation.wait_closed()
    assert gate.active == 0 and ended == ["speech"]


def prompt(text: str) -> Prompt:
    return Prompt(messages=(ChatMessage(role="user", content=text),))


def test_prompts_match_whatever_their_case_punctuation_and_spacing() -> None:
    assert prompt_key(prompt("Customer: I was charged twice.")) == prompt_key(
        prompt("customer:  i was charged TWICE")
    )
    assert prompt_key(prompt("Customer: I don't know")) == prompt_key(
        prompt("Customer: I dont know")
    )


def test_prompts_with_other_words_or_roles_do_not_match() -> None:
    assert prompt_key(prompt("Customer: I was charged twice")) != prompt_key(
        prompt("Customer: I was charged twice today")
    )
    system = Prompt(messages=(ChatMessage(role="system", content="Customer: hi"),))
    assert prompt_key(system) != prompt_key(prompt("Customer: hi"))


# --- the real system: rep's WebSocket, gateway, Kafka, worker, LLM simulator --------------------


async def endpoint_requests(system: LocalSystem, *, since_ms: float) -> dict[str, dict[str, Any]]:
    """Streamed requests the LLM simulator received since `since_ms`, by request id."""
    url = f"{system.resolved.llm_base_url}/sim/stats"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url, params={"limit": "100"}) as response,
    ):
        body = await response.json()
    return {
        rid: record
        for rid, record in body["requests"].items()
        if record["stream"] and record["started_at_ms"] >= since_ms
    }


def one_suggestion_in_order(rep: RepClient) -> dict[str, Any]:
    """The only suggestion the screen got, checked whole: deltas in order, then complete."""
    [complete] = rep.of_type("suggestion_complete")
    assert {m["turn_id"] for m in rep.received if "turn_id" in m} == {complete["turn_id"]}
    deltas = rep.of_type("suggestion_delta")
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    text = "".join(d["text"] for d in deltas)
    assert [d["fullText"] for d in deltas] == [text[: len(d["fullText"])] for d in deltas]
    assert complete["text"] == text.strip()
    assert rep.of_type("suggestion_cancelled") == [] == rep.of_type("suggestion_failed")
    return complete


async def test_an_unfinished_sentence_is_answered_by_the_stream_started_during_its_pause(
    system: LocalSystem, rep_client: RepClientFactory
) -> None:
    async with rep_client() as rep:
        await rep.say("we were hoping to roll this out to the whole team")
        await rep.wait_for("suggestion_complete")
        complete = one_suggestion_in_order(rep)

    # The LLM was asked before the turn existed: the speculation became the suggestion.
    assert complete["timings"]["suggest_in->llm_request"] < 0
    requests = await endpoint_requests(system, since_ms=0)
    assert requests[complete["turn_id"]]["outcome"] == "completed"


@pytest.fixture(scope="module", params=["speculative", "not speculative"])
async def patient_system(
    request: pytest.FixtureRequest,
    bootstrap_servers: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LocalSystem]:
    """A system whose turns wait 3 s for the customer to go on: time for a test to act within
    the pause on a loaded machine; speculation starts at a 100 ms pause, or not at all."""
    settings = system_settings(
        bootstrap_servers,
        tmp_path_factory.mktemp("patient"),
        turn_pause_ms=3000.0,
        speculation_pause_ms=100.0,
        speculative_suggestions=request.param == "speculative",
    )
    async with LocalSystem(settings=settings) as running:
        yield running


@pytest.mark.slow  # two systems of their own
async def test_words_that_go_on_get_one_suggestion_and_any_speculation_is_closed_unseen(
    patient_system: LocalSystem,
) -> None:
    speculative = patient_system.resolved.speculative_suggestions
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    client = RepClient(
        ws_url=patient_system.ws_url, conversation_id=cid, token=patient_system.token(cid)
    )
    since_ms = time.time() * 1000.0
    async with client as rep:
        await rep.say("we already use one of your competitors")
        if speculative:

            async def speculating() -> bool:
                return len(await endpoint_requests(patient_system, since_ms=since_ms)) == 1

            await wait_until_async(speculating, what="a speculation at the endpoint")
            [speculated] = await endpoint_requests(patient_system, since_ms=since_ms)
        await rep.say("but honestly they are cheaper")
        await rep.wait_for("suggestion_complete", timeout_s=30)
        complete = one_suggestion_in_order(rep)

    turn_id = complete["turn_id"]
    requests = await endpoint_requests(patient_system, since_ms=since_ms)
    if speculative:
        assert set(requests) == {speculated, turn_id}  # the first closed, the second answered

        async def closed_early() -> bool:
            found = await endpoint_requests(patient_system, since_ms=since_ms)
            return bool(found[speculated]["outcome"] == "disconnected")

        await wait_until_async(closed_early, what="the speculation's stream closed early")
        assert complete["timings"]["suggest_in->llm_request"] < 0
    else:
        assert set(requests) == {turn_id}  # asked once, when the pause made the turn
        assert complete["timings"]["suggest_in->llm_request"] >= 0
