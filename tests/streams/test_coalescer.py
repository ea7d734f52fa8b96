"""TurnCoalescer: sentence ends make turns at once, pauses make them later, reps never do."""

from __future__ import annotations

from schemas.events import Speaker, TranscriptSegment
from streams.coalescer import TurnCoalescer


def chunk(
    text: str,
    *,
    speaker: Speaker = "customer",
    final: bool = True,
    cid: str = "c1",
    end: bool = False,
) -> TranscriptSegment:
    return TranscriptSegment(
        conversation_id=cid,
        session_id="s1",
        segment_id="s1:0",
        speaker=speaker,
        text=text,
        final=final,
        end_of_conversation=end,
        trace={"gateway_in": 1.0},
    )


def test_a_final_chunk_ending_a_sentence_makes_a_turn_at_once() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    turn = coalescer.accept(chunk("How much does it cost?"), now_ms=0)
    assert turn is not None
    assert turn.text == "How much does it cost?"
    assert turn.reason == "sentence_end"
    assert turn.trace == {"gateway_in": 1.0}
    assert len(coalescer) == 0


def test_chunks_without_a_sentence_end_wait_for_the_pause_and_are_combined() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    assert coalescer.accept(chunk("we already use"), now_ms=0) is None
    assert coalescer.accept(chunk("a competitor"), now_ms=100) is None
    assert coalescer.next_deadline_ms() == 700
    assert coalescer.due(now_ms=699) == []
    [turn] = coalescer.due(now_ms=700)
    assert turn.text == "we already use a competitor"
    assert turn.reason == "pause"
    assert coalescer.next_deadline_ms() is None


def test_partials_mean_the_customer_is_still_talking() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    coalescer.accept(chunk("so the thing is"), now_ms=0)
    coalescer.accept(chunk("our budget", final=False), now_ms=500)
    assert coalescer.due(now_ms=700) == []
    assert coalescer.next_deadline_ms() == 1100


def test_pending_text_joins_the_sentence_that_ends_it() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    coalescer.accept(chunk("honestly"), now_ms=0)
    turn = coalescer.accept(chunk("it's too expensive."), now_ms=200)
    assert turn is not None
    assert turn.text == "honestly it's too expensive."


def test_rep_speech_never_makes_a_turn() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    assert coalescer.accept(chunk("Let me check that.", speaker="rep"), now_ms=0) is None
    assert coalescer.due(now_ms=10_000) == []


def test_conversations_are_independent() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    coalescer.accept(chunk("first customer", cid="a"), now_ms=0)
    turn = coalescer.accept(chunk("Second customer asks?", cid="b"), now_ms=10)
    assert turn is not None and turn.conversation_id == "b"
    [late] = coalescer.due(now_ms=600)
    assert late.conversation_id == "a"


def test_end_of_conversation_drops_pending_text() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    coalescer.accept(chunk("half a thought"), now_ms=0)
    assert coalescer.accept(chunk("", end=True), now_ms=10) is None
    assert coalescer.due(now_ms=10_000) == []
    assert len(coalescer) == 0


def test_blank_finals_are_ignored() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    assert coalescer.accept(chunk("   "), now_ms=0) is None
    assert len(coalescer) == 0


def test_a_recognised_utterance_ends_a_turn_without_punctuation() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    segment = chunk("we use a competitor right now")
    segment.source = "asr"
    turn = coalescer.accept(segment, now_ms=0)
    assert turn is not None
    assert turn.reason == "sentence_end"


# --- revisions: a recogniser re-decoding a segment it already sent -----------------------------


def recognised(text: str, *, segment_id: str, revision: int = 0) -> TranscriptSegment:
    return TranscriptSegment(
        conversation_id="c1",
        session_id="s1",
        segment_id=segment_id,
        text=text,
        source="asr",
        revision=revision,
        trace={"speech_end": float(revision)},
    )


def test_a_revision_that_changes_the_words_supersedes_the_turn_with_the_revised_text() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    first = coalescer.accept(
        recognised("took four days to get a reply.", segment_id="u1"), now_ms=0
    )
    revised = coalescer.accept(
        recognised(
            "took four days to get a reply, which is not acceptable.", segment_id="u1", revision=1
        ),
        now_ms=10,
    )
    assert first is not None
    assert revised is not None
    assert revised.turn_id != first.turn_id
    assert revised.text == "took four days to get a reply, which is not acceptable."
    assert revised.trace == {"speech_end": 1.0}


def test_a_revision_with_the_same_text_or_of_an_older_turn_makes_no_turn() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    coalescer.accept(recognised("Hello there.", segment_id="u1"), now_ms=0)
    same = recognised("Hello there.", segment_id="u1", revision=1)
    assert coalescer.accept(same, now_ms=1) is None
    coalescer.accept(recognised("Is anyone there?", segment_id="u2"), now_ms=2)
    older = recognised("Hello, where?", segment_id="u1", revision=2)
    assert coalescer.accept(older, now_ms=3) is None


def test_a_revision_of_a_segment_still_waiting_for_its_turn_replaces_its_text() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    waiting = TranscriptSegment(
        conversation_id="c1", session_id="s1", segment_id="t1", text="so we were thinking"
    )
    assert coalescer.accept(waiting, now_ms=0) is None
    revised = TranscriptSegment(
        conversation_id="c1",
        session_id="s1",
        segment_id="t1",
        text="so we were drinking",
        revision=1,
    )
    assert coalescer.accept(revised, now_ms=100) is None
    [turn] = coalescer.due(now_ms=700)
    assert turn.text == "so we were drinking"
