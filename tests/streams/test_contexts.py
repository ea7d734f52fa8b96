"""ContextStore: contexts rebuilt from their table snapshots after a restart."""

from __future__ import annotations

import json
from typing import Any

from schemas.events import TranscriptSegment
from streams.contexts import ContextStore


def test_a_restarted_worker_rebuilds_transcript_summary_and_profile_from_the_table() -> None:
    table: dict[str, Any] = {}
    store = ContextStore(table)
    context = store.get("c1")
    context.add("customer", "We have forty seats.", at_ms=1_000)
    context.add("rep", "Great, the team plan fits.", at_ms=5_000)
    context.set_summary("Customer evaluating the team plan.", covers_until_ms=1_000)
    store.set_profile("c1", json.dumps({"company": "Acme", "plan": "trial"}))
    store.save("c1")

    restored = ContextStore(table).get("c1")
    assert [u.text for u in restored.transcript] == [u.text for u in context.transcript]
    assert restored.summary == context.summary
    assert restored.profile == context.profile


def test_drop_forgets_the_conversation_everywhere() -> None:
    table: dict[str, Any] = {}
    store = ContextStore(table)
    store.get("c1").add("customer", "Hello?", at_ms=1)
    store.save("c1")
    store.drop("c1")
    assert table == {}
    assert len(store) == 0
    assert len(store.get("c1")) == 0


def test_a_profile_that_is_not_an_object_is_ignored() -> None:
    store = ContextStore({})
    store.set_profile("c1", "[1, 2, 3]")
    assert store.get("c1").profile == ""


def test_idle_lists_conversations_untouched_for_long_enough() -> None:
    store = ContextStore({})
    store.get("c1")
    assert list(store.idle(idle_s=3600)) == []
    assert list(store.idle(idle_s=-1)) == ["c1"]


def segment(text: str, *, segment_id: str, revision: int = 0, at_ms: int) -> TranscriptSegment:
    return TranscriptSegment(
        conversation_id="c1",
        session_id="s1",
        segment_id=segment_id,
        text=text,
        source="asr",
        revision=revision,
        event_time_ms=at_ms,
    )


def test_a_revision_replaces_its_segments_text_in_the_context() -> None:
    table: dict[str, Any] = {}
    store = ContextStore(table)
    store.record(segment("We are on the team plan.", segment_id="u1", at_ms=1_000))
    store.record(segment("It took four days to get a bit live.", segment_id="u2", at_ms=2_000))
    context = store.record(
        segment(
            "It took four days to get a reply, which is not acceptable.",
            segment_id="u2",
            revision=1,
            at_ms=4_000,
        )
    )
    assert [u.text for u in context.transcript] == [
        "We are on the team plan. It took four days to get a reply, which is not acceptable."
    ]
    assert store.get("c1") is context
    store.save("c1")
    restored = ContextStore(table).get("c1")
    assert [u.text for u in restored.transcript] == [u.text for u in context.transcript]


def test_a_revision_of_a_segment_the_context_never_saw_is_added() -> None:
    store = ContextStore({})
    context = store.record(segment("Hello there.", segment_id="u9", revision=2, at_ms=1_000))
    assert [u.text for u in context.transcript] == ["Hello there."]
