"""SuggestionStreamer: streams per turn, supersedes, throttles, resumes, never blocks others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from schemas.events import SuggestionEvent, Turn, now_ms
from streams.admission import AdmissionGate
from streams.ledger import TurnLedger
from streams.llm import LlmError
from streams.suggester import SuggestionStreamer, stage_timings
from tests.streams.fake_table import conversation_table
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
            if fragment == "<timeout>":
                raise LlmError("LLM endpoint timed out", kind="timeout", url="http://llm")
            yield fragment


def turn(turn_id: str, text: str, cid: str = "c1") -> Turn:
    return Turn(conversation_id=cid, turn_id=turn_id, text=text, trace={"gateway_in": 1.0})


class SlowBroker:
    """Holds every cancellation published until `took` is set."""

    def __init__(self) -> None:
        self.held: list[SuggestionEvent] = []
        self.took = asyncio.Event()


def make(
    max_active: int = 8,
    max_waiting: int = 3,
    *,
    ledger: TurnLedger | None = None,
    answer_window_s: float = 10.0,
    delta_batch_s: float = 0.03,
    slow_broker: SlowBroker | None = None,
) -> tuple[SuggestionStreamer, ScriptedLlm, list[SuggestionEvent]]:
    llm, published = ScriptedLlm(), []

    async def publish(event: SuggestionEvent) -> None:
        if slow_broker is not None and event.kind == "cancelled":
            slow_broker.held.append(event)
            await slow_broker.took.wait()
        published.append(event)

    streamer = SuggestionStreamer(
        gate=AdmissionGate(max_active=max_active, max_waiting=max_waiting),
        compose=llm.compose,
        publish=publish,
        ledger=ledger,
        answer_window_s=answer_window_s,
        delta_batch_s=delta_batch_s,
    )
    return streamer, llm, published


def kinds(events: list[SuggestionEvent], turn_id: str) -> list[str]:
    return [e.kind for e in events if e.turn_id == turn_id]


def assert_exact(deltas: list[SuggestionEvent], answer: str) -> None:
    """The delta protocol: seq rises from 1, each fullText is the last one plus its text, and
    the last fullText is the whole answer (no byte lost, none twice)."""
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
    so_far = ""
    for delta in deltas:
        assert delta.text
        so_far += delta.text
        assert delta.full_text == so_far
    assert so_far == answer


async def test_fragments_stream_as_deltas_then_complete_with_timings() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "Is there a discount?"))
    for fragment in ["We ", "can ", "talk."]:
        llm.queue("t1").put_nowait(fragment)
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    deltas = [e for e in published if e.kind == "delta"]
    assert deltas[0].text == "We "  # the first fragment goes out at once, alone
    assert_exact(deltas, "We can talk.")
    assert "gateway_in" in deltas[0].trace and all(d.trace == {} for d in deltas[1:])
    complete = published[-1]
    assert complete.text == "We can talk."
    assert {"total", "llm_request->llm_first_token"} <= complete.timings.keys()
    assert len(streamer) == 0


@pytest.mark.parametrize("delta_batch_s", [0.0, 0.03, 30.0])
async def test_fragments_after_the_first_are_batched_and_every_byte_arrives_in_order(
    delta_batch_s: float,
) -> None:
    streamer, llm, published = make(delta_batch_s=delta_batch_s)
    await streamer.submit(turn("t1", "Is it secure?"))
    fragments = ["Yes", ",", " we", " are", " SOC", " 2", " certified", "."]
    for fragment in fragments:
        llm.queue("t1").put_nowait(fragment)
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    deltas = [e for e in published if e.kind == "delta"]
    # What the LLM had sent together went out together: fewer deltas than fragments.
    assert len(deltas) < len(fragments)
    assert_exact(deltas, "".join(fragments))
    assert kinds(published, "t1") == ["delta"] * len(deltas) + ["complete"]


async def test_a_batch_goes_out_without_waiting_for_the_next_fragment() -> None:
    streamer, llm, published = make(delta_batch_s=0.05)
    await streamer.submit(turn("t1", "Hello?"))
    llm.queue("t1").put_nowait("Hi")
    await wait_until(lambda: len(published) == 1, what="the first delta")
    llm.queue("t1").put_nowait(" there")  # and then the LLM stalls
    await wait_until(lambda: len(published) == 2, what="the second delta, alone")
    assert (published[1].seq, published[1].text, published[1].full_text) == (
        2,
        " there",
        "Hi there",
    )
    await streamer.close()


async def test_the_end_of_the_answer_does_not_wait_for_the_batch_window() -> None:
    streamer, llm, published = make(delta_batch_s=3600.0)
    await streamer.submit(turn("t1", "Hello?"))
    for fragment in ["Hi", " there", "!", None]:
        llm.queue("t1").put_nowait(fragment)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")
    assert_exact([e for e in published if e.kind == "delta"], "Hi there!")


async def test_new_speech_cancels_the_in_flight_suggestion_and_combines_the_text() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "We use a competitor."))
    llm.queue("t1").put_nowait("I see")
    await wait_until(lambda: kinds(published, "t1") == ["delta"], what="first delta")

    await streamer.submit(turn("t2", "And they are cheaper."))
    llm.queue("t2").put_nowait("Fair.")
    llm.queue("t2").put_nowait(None)
    await wait_until(lambda: kinds(published, "t2")[-1:] == ["complete"], what="t2 complete")

    assert kinds(published, "t1") == ["delta", "cancelled"]
    assert llm.asked == ["We use a competitor.", "We use a competitor. And they are cheaper."]


async def test_turns_beyond_capacity_and_waiting_line_are_throttled_at_once() -> None:
    streamer, llm, published = make(max_active=1, max_waiting=1)
    for n in range(3):
        await streamer.submit(turn(f"t{n}", "Question?", cid=f"c{n}"))
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
    await streamer.submit(turn("slow", "Hello?", cid="a"))
    await streamer.submit(turn("fast", "Hi?", cid="b"))
    llm.queue("fast").put_nowait("Hello!")
    llm.queue("fast").put_nowait(None)
    await wait_until(lambda: kinds(published, "fast")[-1:] == ["complete"], what="fast done")
    assert kinds(published, "slow") == []
    await streamer.close()


async def test_a_resume_mid_batch_is_continued_exactly_by_the_deltas_after_it() -> None:
    streamer, llm, published = make(delta_batch_s=3600.0)
    await streamer.submit(turn("t1", "Pricing?"))
    llm.queue("t1").put_nowait("It ")
    await wait_until(lambda: len(published) == 1, what="the first delta")
    llm.queue("t1").put_nowait("depends ")  # held back by the batch window
    await asyncio.sleep(0)
    await streamer.resume("c1")
    llm.queue("t1").put_nowait("on seats.")
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    resent = published[1]
    assert (resent.kind, resent.seq, resent.text, resent.full_text) == ("delta", 1, "It ", "It ")
    # A client that starts from the resent delta and appends what follows gets every byte once.
    after = [e for e in published[2:] if e.kind == "delta"]
    assert [d.seq for d in after] == list(range(2, 2 + len(after)))
    assert resent.full_text + "".join(d.text for d in after) == "It depends on seats."
    assert after[-1].full_text == "It depends on seats."


async def test_resume_resends_the_text_so_far() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "Pricing?"))
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
    table, _ = conversation_table()
    ledger = TurnLedger(table)

    async def publish(event: SuggestionEvent) -> None:
        published.append(event)

    async def redeliver(event: SuggestionEvent) -> None:
        redelivered.append(event)

    streamer = SuggestionStreamer(
        gate=AdmissionGate(max_active=8, max_waiting=3),
        compose=llm.compose,
        publish=publish,
        redeliver=redeliver,
        ledger=ledger,
    )
    await streamer.submit(turn("t1", "Pricing?"), partition=0, offset=1)
    llm.queue("t1").put_nowait("It depends.")
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    await streamer.resume("c1")
    # The whole text (as the delta a reconnecting client gets first), then the outcome.
    assert [(e.turn_id, e.kind, e.seq, e.full_text) for e in redelivered] == [
        ("t1", "delta", 1, "It depends."),
        ("t1", "complete", 1, "It depends."),
    ]
    # Copies, not outcomes: published and recorded once, and nothing times them again.
    assert kinds(published, "t1") == ["delta", "complete"]
    assert ledger.open_turns({0}) == []
    assert all(e.trace == {} and e.timings == {} for e in redelivered)
    assert published[-1].timings != {}

    # A new turn replaces what a reconnect would be told; a forgotten conversation has none.
    await streamer.submit(turn("t2", "And annual?"), partition=0, offset=2)
    await streamer.resume("c1")
    assert len(redelivered) == 2  # t2 has streamed nothing yet
    streamer.forget("c1")
    await streamer.resume("c1")
    assert len(redelivered) == 2
    await streamer.close()


async def test_resume_after_a_failure_resends_the_text_so_far_and_the_failure() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "Hello?"))
    llm.queue("t1").put_nowait("Hi")
    llm.queue("t1").put_nowait("<timeout>")
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["failed"], what="failed")

    await streamer.resume("c1")
    assert [(e.kind, e.full_text, e.reason) for e in published[2:]] == [
        ("delta", "Hi", ""),
        ("failed", "Hi", "llm_timeout"),
    ]


async def test_after_a_throttled_turn_resume_resends_nothing() -> None:
    """`throttled` is a passing sign, and the suggestion before it is no longer the latest."""
    streamer, llm, published = make(max_active=1, max_waiting=0)
    await streamer.submit(turn("t1", "Pricing?"))
    llm.queue("t1").put_nowait("It depends.")
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")
    await streamer.submit(turn("busy", "Hi?", cid="c2"))
    await wait_until(lambda: "Hi?" in llm.asked, what="the only slot taken")
    await streamer.submit(turn("t2", "For ten seats?"))
    await wait_until(lambda: kinds(published, "t2") == ["throttled"], what="throttled")

    before = len(published)
    await streamer.resume("c1")
    assert len(published) == before
    await streamer.close()


async def test_forget_stops_silently() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "Bye."))
    llm.queue("t1").put_nowait("Bye")
    await wait_until(lambda: len(published) == 1, what="a delta")
    streamer.forget("c1")
    assert len(streamer) == 0
    await streamer.close()
    assert kinds(published, "t1") == ["delta"]


async def test_an_llm_error_fails_the_suggestion_with_its_kind() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "Hello?"))
    llm.queue("t1").put_nowait("Hi")
    llm.queue("t1").put_nowait("<timeout>")
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["failed"], what="failed")
    assert kinds(published, "t1") == ["delta", "failed"]
    assert published[-1].reason == "llm_timeout"
    assert len(streamer) == 0


async def test_a_turn_delivered_again_is_not_answered_twice() -> None:
    table, _ = conversation_table()
    streamer, llm, published = make(ledger=TurnLedger(table))
    assert await streamer.submit(turn("t1", "Pricing?"), partition=0, offset=7)
    llm.queue("t1").put_nowait("It depends.")
    llm.queue("t1").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1")[-1:] == ["complete"], what="complete")

    assert not await streamer.submit(turn("t1", "Pricing?"), partition=0, offset=8)  # re-sent
    assert not await streamer.submit(turn("t0", "Hi?"), partition=0, offset=7)  # redelivered
    assert llm.asked == ["Pricing?"]


async def test_turns_taken_at_once_from_both_paths_are_taken_once_each_and_in_order() -> None:
    # The worker that made t2 hands it over while the turns topic brings it too, and t3 comes
    # while t1's cancellation is still on its way to the broker.
    table, _ = conversation_table()
    broker = SlowBroker()
    streamer, llm, published = make(ledger=TurnLedger(table), slow_broker=broker)
    await streamer.submit(turn("t1", "Pricing?"), partition=0)
    takes = [
        asyncio.create_task(streamer.submit(turn(turn_id, text), partition=0))
        for turn_id, text in [("t2", "For ten seats?"), ("t2", "For ten seats?"), ("t3", "Yearly?")]
    ]
    await wait_until(lambda: len(broker.held) == 1, what="t1's cancellation on its way")
    broker.took.set()

    assert await asyncio.gather(*takes) == [True, False, True]
    assert [(e.turn_id, e.reason) for e in published if e.kind == "cancelled"] == [
        ("t1", "superseded"),
        ("t2", "superseded"),
    ]
    await wait_until(lambda: "Pricing? For ten seats? Yearly?" in llm.asked, what="t3 asked")


async def test_the_end_of_a_conversation_cancels_its_suggestion_with_that_reason() -> None:
    streamer, llm, published = make()
    await streamer.submit(turn("t1", "Bye?"))
    llm.queue("t1").put_nowait("Bye")
    await wait_until(lambda: len(published) == 1, what="a delta")
    await streamer.end("c1")
    assert [(e.kind, e.reason) for e in published[1:]] == [("cancelled", "conversation_ended")]


async def test_a_recent_turn_a_lost_worker_left_open_is_cancelled_then_answered_again() -> None:
    table, _ = conversation_table()
    ledger = TurnLedger(table)
    ledger.open(turn("t1", "Pricing?"), partition=2, opened_ms=now_ms() - 1_000)
    streamer, llm, published = make(ledger=ledger)

    for orphan in ledger.open_turns({2}):
        await streamer.recover(orphan)
    llm.queue("t1-r").put_nowait("It depends.")
    llm.queue("t1-r").put_nowait(None)
    await wait_until(lambda: kinds(published, "t1-r")[-1:] == ["complete"], what="retry done")
    assert [(e.kind, e.reason) for e in published if e.turn_id == "t1"] == [
        ("cancelled", "worker_lost")
    ]
    assert ledger.open_turns({2}) == []


async def test_an_old_turn_a_lost_worker_left_open_is_only_cancelled() -> None:
    table, _ = conversation_table()
    ledger = TurnLedger(table)
    streamer, llm, published = make(ledger=ledger, answer_window_s=10.0)
    ledger.open(turn("t1", "Pricing?"), partition=0, opened_ms=now_ms() - 60_000)
    [lost] = ledger.open_turns({0})
    await streamer.recover(lost)
    assert [(e.turn_id, e.kind, e.reason) for e in published] == [
        ("t1", "cancelled", "worker_lost")
    ]
    assert llm.asked == [] and len(streamer) == 0


async def test_a_new_turn_ends_a_lost_workers_open_turn_and_answers_both_texts() -> None:
    table, _ = conversation_table()
    ledger = TurnLedger(table)
    ledger.open(turn("t1", "Pricing?"), partition=0, opened_ms=now_ms())
    streamer, llm, published = make(ledger=ledger)
    await streamer.submit(turn("t2", "For ten seats?"), partition=0)
    await wait_until(lambda: kinds(published, "t1") == ["cancelled"], what="t1 cancelled")
    assert published[0].reason == "worker_lost"
    await wait_until(lambda: llm.asked == ["Pricing? For ten seats?"], what="combined text")
    await streamer.close()


def test_stage_timings_are_gaps_between_present_stages() -> None:
    trace = {"gateway_in": 0.0, "worker_in": 2.0, "llm_request": 5.0, "llm_first_token": 305.0}
    assert stage_timings(trace) == {
        "gateway_in->worker_in": 2.0,
        "worker_in->llm_request": 3.0,
        "llm_request->llm_first_token": 300.0,
        "total": 305.0,
    }
