"""SuggestionStreamer: streams per turn, supersedes, throttles, resumes, never blocks others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from schemas.events import SuggestionEvent, Turn
from streams.admission import AdmissionGate
from streams.suggester import SuggestionStreamer, stage_timings
from tests.waiting import wait_until


class ScriptedLlm:
    """Stands in for the LLM endpoint: each turn's fragments are released by the test."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[str | None]] = {}
        self.asked: list[str] = []

    def queue(self, turn_id: str) -> asyncio.Queue[str | None]:
        return self.queues.setdefault(turn_id, asyncio.Queue())

    async def compose(self, turn: Turn) -> AsyncIterator[str]:
        self.asked.append(turn.text)
        queue = self.queue(turn.turn_id)
        while (fragment := await queue.get()) is not None:
            yield fragment


def turn(turn_id: str, text: str, cid: str = "c1") -> Turn:
    return Turn(conversation_id=cid, turn_id=turn_id, text=text, trace={"gateway_in": 1.0})


def make(
    max_active: int = 8, max_waiting: int = 3
) -> tuple[SuggestionStreamer, ScriptedLlm, list[SuggestionEvent]]:
    llm, published = ScriptedLlm(), []

    async def publish(event: SuggestionEvent) -> None:
        published.append(event)

    streamer = SuggestionStreamer(
        gate=AdmissionGate(max_active=max_active, max_waiting=max_waiting),
        compose=llm.compose,
        publish=publish,
    )
    return streamer, llm, published


def kinds(events: list[SuggestionEvent], turn_id: str) -> list[str]:
    return [e.kind for e in events if e.turn_id == turn_id]


async def test_fragments_stream_as_deltas_then_complete_with_timings() -> None:
    streamer, llm, published = make()
    streamer.submit(turn("t1", "Is there a discount?"))
    for fragment in ["We ", "can ", "talk."]:
        llm.queue("t1").put_nowait(fragment)
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    deltas = [e for e in published if e.kind == "delta"]
    assert [d.seq for d in deltas] == [1, 2, 3]
    assert [d.full_text for d in deltas] == ["We ", "We can ", "We can talk."]
    assert "gateway_in" in deltas[0].trace and deltas[1].trace == {}
    complete = published[-1]
    assert complete.text == "We can talk."
    assert {"total", "llm_request->llm_first_token"} <= complete.timings.keys()
    assert len(streamer) == 0


async def test_new_speech_cancels_the_in_flight_suggestion_and_combines_the_text() -> None:
    streamer, llm, published = make()
    streamer.submit(turn("t1", "We use a competitor."))
    llm.queue("t1").put_nowait("I see")
    await wait_until(lambda: kinds(published, "t1") == ["delta"], what="first delta")

    streamer.submit(turn("t2", "And they are cheaper."))
    llm.queue("t2").put_nowait("Fair.")
    llm.queue("t2").put_nowait(None)
    await wait_until(lambda: kinds(published, "t2")[-1:] == ["complete"], what="t2 complete")

    assert kinds(published, "t1") == ["delta", "cancelled"]
    assert llm.asked == ["We use a competitor.", "We use a competitor. And they are cheaper."]


async def test_turns_beyond_capacity_and_waiting_line_are_throttled_at_once() -> None:
    streamer, llm, published = make(max_active=1, max_waiting=1)
    for n in range(3):
        streamer.submit(turn(f"t{n}", "Question?", cid=f"c{n}"))
    await wait_until(lambda: kinds(published, "t2") == ["throttled"], what="third throttled")
    assert kinds(published, "t0") == [] and kinds(published, "t1") == []

    for n in range(2):
        llm.queue(f"t{n}").put_nowait("ok")
        llm.queue(f"t{n}").put_nowait(None)
    await wait_until(
        lambda: kinds(published, "t1")[-1:] == ["complete"], what="waiting turn answered"
    )


async def test_a_slow_stream_does_not_delay_another_conversation() -> None:
    streamer, llm, published = make()
    streamer.submit(turn("slow", "Hello?", cid="a"))
    streamer.submit(turn("fast", "Hi?", cid="b"))
    llm.queue("fast").put_nowait("Hello!")
    llm.queue("fast").put_nowait(None)
    await wait_until(lambda: kinds(published, "fast")[-1:] == ["complete"], what="fast done")
    assert kinds(published, "slow") == []
    await streamer.close()


async def test_resume_resends_the_text_so_far() -> None:
    streamer, llm, published = make()
    streamer.submit(turn("t1", "Pricing?"))
    llm.queue("t1").put_nowait("It ")
    llm.queue("t1").put_nowait("depends")
    await wait_until(lambda: len(kinds(published, "t1")) == 2, what="two deltas")

    await streamer.resume("c1")
    resent = published[-1]
    assert (resent.kind, resent.seq, resent.text, resent.full_text) == (
        "delta",
        2,
        "It depends",
        "It depends",
    )
    await streamer.close()


async def test_resume_after_the_suggestion_ended_resends_its_outcome_to_the_client_only() -> None:
    """A suggestion that completes while the client reconnects must still reach it."""
    llm, published, redelivered = ScriptedLlm(), [], []

    async def publish(event: SuggestionEvent) -> None:
        published.append(event)

    async def redeliver(event: SuggestionEvent) -> None:
        redelivered.append(event)

    streamer = SuggestionStreamer(
        gate=AdmissionGate(max_active=8, max_waiting=3),
        compose=llm.compose,
        publish=publish,
        redeliver=redeliver,
    )
    streamer.submit(turn("t1", "Pricing?"))
    llm.queue("t1").put_nowait("It depends.")
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    await streamer.resume("c1")
    # The whole text (as the delta a reconnecting client gets first), then the outcome.
    assert [(e.turn_id, e.kind, e.seq, e.full_text) for e in redelivered] == [
        ("t1", "delta", 1, "It depends."),
        ("t1", "complete", 1, "It depends."),
    ]
    assert kinds(published, "t1") == ["delta", "complete"], "the outcome is recorded once"

    # A new turn replaces what a reconnect would be told; a forgotten conversation has none.
    streamer.submit(turn("t2", "And annual?"))
    await streamer.resume("c1")
    assert len(redelivered) == 2  # t2 has streamed nothing yet
    streamer.forget("c1")
    await streamer.resume("c1")
    assert len(redelivered) == 2
    await streamer.close()


async def test_forget_stops_silently() -> None:
    streamer, llm, published = make()
    streamer.submit(turn("t1", "Bye."))
    llm.queue("t1").put_nowait("Bye")
    await wait_until(lambda: len(published) == 1, what="a delta")
    streamer.forget("c1")
    assert len(streamer) == 0
    await streamer.close()
    assert kinds(published, "t1") == ["delta"]


def test_stage_timings_are_gaps_between_present_stages() -> None:
    trace = {"gateway_in": 0.0, "worker_in": 2.0, "llm_request": 5.0, "llm_first_token": 305.0}
    assert stage_timings(trace) == {
        "gateway_in->worker_in": 2.0,
        "worker_in->llm_request": 3.0,
        "llm_request->llm_first_token": 300.0,
        "total": 305.0,
    }
