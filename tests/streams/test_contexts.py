"""ContextStore: contexts rebuilt from their table snapshots after a restart."""

from __future__ import annotations

import json
from typing import Any

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
