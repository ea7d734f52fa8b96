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


def segment(
    text: str, segment_id: str, *, cid: str = "c1", final: bool = True
) -> TranscriptSegment:
    return TranscriptSegment(
        conversation_id=cid, session_id="s1", segment_id=segment_id, text=text, final=final
    )


def test_a_segment_taken_before_never_contributes_twice() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    first = segment("Can I pay by invoice?", "s1:0")
    assert coalescer.admit(first, partition=2, offset=10)
    assert not coalescer.admit(first, partition=2, offset=10)  # redelivered
    assert not coalescer.admit(first, partition=2, offset=11)  # resent: same segment id
    assert not coalescer.admit(segment("anything", "s1:1"), partition=2, offset=9)  # older offset
    assert coalescer.admit(segment("And by card?", "s1:1"), partition=2, offset=12)


def test_a_turn_id_is_made_of_its_segments_so_a_remade_turn_keeps_it() -> None:
    one, again = TurnCoalescer(), TurnCoalescer()
    turn = one.accept(segment("Can I pay by invoice?", "s1:0"), now_ms=0)
    remade = again.accept(segment("Can I pay by invoice?", "s1:0"), now_ms=5_000)
    other = again.accept(segment("Can I pay by invoice?", "s1:1"), now_ms=5_000)
    assert turn is not None and remade is not None and other is not None
    assert turn.turn_id == remade.turn_id != other.turn_id
    assert turn.segment_ids == ["s1:0"]


def test_pending_text_and_seen_segments_survive_a_restart() -> None:
    before = TurnCoalescer(pause_ms=600)
    before.admit(segment("we were hoping", "s1:0"), partition=1, offset=4)
    before.accept(segment("we were hoping", "s1:0"), now_ms=1_000)
    snapshot = before.snapshot("c1")
    assert snapshot is not None

    after = TurnCoalescer(pause_ms=600)
    after.restore("c1", snapshot)
    assert after.partition_of("c1") == 1
    assert not after.admit(segment("we were hoping", "s1:0"), offset=4)
    assert after.admit(segment("to start in May", "s1:1"), offset=5)
    after.accept(segment("to start in May", "s1:1"), now_ms=1_200)
    [turn] = after.due(now_ms=1_800)
    assert turn.text == "we were hoping to start in May"
    assert turn.segment_ids == ["s1:0", "s1:1"]


def test_an_emitted_turn_stays_in_the_outbox_until_the_topic_has_it() -> None:
    coalescer = TurnCoalescer()
    turn = coalescer.accept(segment("Is it encrypted?", "s1:0"), now_ms=0)
    assert turn is not None
    snapshot = coalescer.snapshot("c1")
    assert snapshot is not None and [t["turn_id"] for t in snapshot["outbox"]] == [turn.turn_id]

    restarted = TurnCoalescer()
    restarted.restore("c1", snapshot)
    [again] = restarted.outbox("c1")
    assert (again.turn_id, again.text) == (turn.turn_id, turn.text)

    coalescer.delivered("c1", turn.turn_id)
    assert coalescer.outbox("c1") == []


def test_remembered_segment_ids_are_bounded_in_bytes() -> None:
    coalescer = TurnCoalescer(max_seen_bytes=100)
    for n in range(50):
        coalescer.admit(segment("hi", f"session-{n:04d}"))  # 12 bytes each
    snapshot = coalescer.snapshot("c1")
    assert snapshot is not None
    assert sum(len(key) for key in snapshot["seen"]) <= 100
    assert snapshot["seen"][-1] == "session-0049"


def test_partials_never_hide_the_final_of_their_utterance() -> None:
    coalescer = TurnCoalescer()
    assert coalescer.admit(segment("we use", "u-1", final=False))
    assert coalescer.admit(segment("we use a comp", "u-1", final=False))
    assert coalescer.admit(segment("We use a competitor.", "u-1"))
    assert not coalescer.admit(segment("We use a competitor.", "u-1"))


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


def test_each_revision_is_admitted_once_though_it_shares_its_segment_id() -> None:
    coalescer = TurnCoalescer(pause_ms=600)
    assert coalescer.admit(recognised("Hello there.", segment_id="u1"))
    assert coalescer.admit(recognised("Hello, where?", segment_id="u1", revision=1))
    assert not coalescer.admit(recognised("Hello, where?", segment_id="u1", revision=1))


def test_a_revision_after_a_restart_still_supersedes_the_turn_it_revises() -> None:
    before = TurnCoalescer(pause_ms=600)
    first = before.accept(recognised("took four days to get a reply.", segment_id="u1"), now_ms=0)
    snapshot = before.snapshot("c1")
    assert first is not None and snapshot is not None

    after = TurnCoalescer(pause_ms=600)
    after.restore("c1", snapshot)
    text = "took four days to get a reply, which is not acceptable."
    revised = after.accept(recognised(text, segment_id="u1", revision=1), now_ms=10)
    again = TurnCoalescer(pause_ms=600)
    again.restore("c1", snapshot)
    remade = again.accept(recognised(text, segment_id="u1", revision=1), now_ms=10)

    assert revised is not None and remade is not None
    assert revised.text == text and revised.turn_id != first.turn_id
    assert remade.turn_id == revised.turn_id  # a redelivered revision re-makes the same turn
