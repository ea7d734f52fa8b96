"""A worker's metrics: outcomes by kind and reason, stage timings, LLM errors, bounded labels."""

from __future__ import annotations

from typing import cast

from prometheus_client.parser import text_string_to_metric_families

from schemas.events import SuggestionEvent, SuggestionKind
from streams.observability.metrics import (
    LLM_TTFT_STAGE,
    MAX_LABEL_VALUES,
    WorkerMetrics,
    reason_label,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: WorkerMetrics) -> Samples:
    """Every sample of the exposition, by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def outcome(kind: str, reason: str = "", **fields: object) -> SuggestionEvent:
    return SuggestionEvent(
        conversation_id="c-1",
        turn_id="t-1",
        kind=cast(SuggestionKind, kind),
        reason=reason,
        **fields,  # type: ignore[arg-type]
    )


def suggestions(kind: str, reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("teleprompter_worker_suggestions_total", (("kind", kind), ("reason", reason)))


def test_outcomes_count_by_kind_and_reason_whatever_the_kind() -> None:
    metrics = WorkerMetrics()

    metrics.suggestion_published(outcome("complete"))
    metrics.suggestion_published(outcome("cancelled", "superseded"))
    metrics.suggestion_published(outcome("cancelled", "superseded"))
    metrics.suggestion_published(outcome("cancelled", "error: LLM endpoint timed out"))
    # A kind this schema version does not list yet counts the same way.
    metrics.suggestion_published(outcome("failed", "timeout"))
    metrics.suggestion_published(outcome("delta", text="Sure"))

    found = samples(metrics)
    assert found[suggestions("complete", "none")] == 1
    assert found[suggestions("cancelled", "superseded")] == 2
    assert found[suggestions("cancelled", "error")] == 1
    assert found[suggestions("failed", "timeout")] == 1
    assert not any(labels and labels[0] == ("kind", "delta") for _, labels in found)


def test_a_complete_suggestion_brings_its_stage_timings_including_ttft() -> None:
    metrics = WorkerMetrics()
    timings = {LLM_TTFT_STAGE: 300.0, "turn_out->suggest_in": 2.5, "total": 900.0}

    metrics.suggestion_published(outcome("complete", timings=timings))

    found = samples(metrics)
    count = "teleprompter_worker_stage_latency_seconds_count"
    total = "teleprompter_worker_stage_latency_seconds_sum"
    assert found[(count, (("stage", LLM_TTFT_STAGE),))] == 1
    assert found[(total, (("stage", LLM_TTFT_STAGE),))] == 0.3
    assert found[(total, (("stage", "turn_out->suggest_in"),))] == 0.0025
    assert found[(count, (("stage", "total"),))] == 1


def test_turns_llm_errors_conversations_lag_and_health() -> None:
    metrics = WorkerMetrics()
    held = [3]
    metrics.hold_conversations(lambda: held[0])

    metrics.turn_emitted()
    metrics.turn_emitted()
    metrics.llm_error("timeout")
    metrics.set_consumer_lag([("tp.turns", 0, 7), ("tp.audio", 1, 0)])
    metrics.set_consumer_lag([("tp.turns", 0, 2)])  # a rebalance took tp.audio[1] away
    metrics.set_health("kafka", ok=True)
    metrics.set_health("llm", ok=False)
    held[0] = 5

    found = samples(metrics)
    assert found[("teleprompter_worker_turns_total", ())] == 2
    assert found[("teleprompter_worker_llm_errors_total", (("kind", "timeout"),))] == 1
    assert found[("teleprompter_worker_conversations", ())] == 5
    lag = "teleprompter_worker_consumer_lag"
    assert found[(lag, (("partition", "0"), ("topic", "tp.turns")))] == 2
    assert (lag, (("partition", "1"), ("topic", "tp.audio"))) not in found
    assert found[("teleprompter_worker_healthy", (("check", "kafka"),))] == 1
    assert found[("teleprompter_worker_healthy", (("check", "llm"),))] == 0


def test_reasons_count_by_their_leading_identifier() -> None:
    assert reason_label("superseded") == "superseded"
    assert reason_label("worker_lost") == "worker_lost"
    assert reason_label("error: connection refused") == "error"
    assert reason_label("") == "none"
    assert reason_label("64 suggestions streaming and 3 waiting") == "other"
    assert reason_label("LLM went away") == "other"


def test_label_values_are_bounded() -> None:
    metrics = WorkerMetrics()

    for n in range(MAX_LABEL_VALUES + 10):
        metrics.suggestion_published(outcome("cancelled", f"reason_{n}"))

    reasons = {
        dict(labels)["reason"]
        for name, labels in samples(metrics)
        if name == "teleprompter_worker_suggestions_total"
    }
    assert len(reasons) == MAX_LABEL_VALUES + 1
    assert "other" in reasons
