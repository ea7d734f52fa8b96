"""The gateway's metrics keep the workers' stage timings under the workers' own stage names."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import MAX_STAGES, GatewayMetrics


def stage_counts(metrics: GatewayMetrics) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "teleprompter_stage_latency_seconds_count":
                counts[sample.labels["stage"]] = sample.value
    return counts


def test_worker_stage_gaps_are_kept_with_their_names() -> None:
    metrics = GatewayMetrics()

    metrics.observe_stage("llm_request->llm_first_token", 0.3)
    metrics.observe_stage("gateway_in->worker_in", 0.002)
    metrics.observe_stage("total", 0.9)

    assert stage_counts(metrics) == {
        "llm_request->llm_first_token": 1.0,
        "gateway_in->worker_in": 1.0,
        "total": 1.0,
    }


def test_malformed_or_surplus_stage_names_are_dropped() -> None:
    metrics = GatewayMetrics()

    for bad in ("Total", "a->b->c", "->llm", "llm->", "x" * 41, 'quote"d'):
        metrics.observe_stage(bad, 0.1)
    for n in range(MAX_STAGES + 5):
        metrics.observe_stage(f"stage_{n}", 0.1)

    counts = stage_counts(metrics)
    assert len(counts) == MAX_STAGES
    assert all(name.startswith("stage_") for name in counts)
