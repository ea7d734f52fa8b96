"""A worker's Prometheus metrics, in a registry of its own, fed at a few points of the pipeline.

The pipeline calls `turn_emitted`, `turn_skipped`, `suggestion_published` (every outcome it
publishes, whatever its kind, with its reason; a complete one also brings its stage timings),
`speculation_ended` and `llm_error`. The endpoints set what is read at scrape time:
conversations held and consumer lag per partition.

Label values are bounded: stage names, kinds and reasons beyond `MAX_LABEL_VALUES` distinct
values count under "other", and a reason counts by its leading identifier ("error: timed out"
counts as "error"), so free text can never multiply the series.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from schemas.events import SuggestionEvent

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
MAX_LABEL_VALUES: Final = 32
OTHER: Final = "other"
# The stage gap that is the LLM's time to first token, as `streams.suggester` names it.
LLM_TTFT_STAGE: Final = "llm_request->llm_first_token"

# Seconds: sub-millisecond hops up to LLM streams that run into their time-out.
LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
)
_IDENTIFIER: Final = re.compile(r"^\s*([a-z][a-z0-9_]{0,39})\s*(?::|$)")


class _BoundedLabel:
    """Admits up to `limit` distinct label values; later newcomers become "other"."""

    def __init__(self, *, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class WorkerMetrics:
    """Counters, gauges and latency histograms for one worker process."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.turns = Counter(
            "teleprompter_worker_turns", "Customer turns emitted by the coalescer", registry=r
        )
        self.turns_skipped = Counter(
            "teleprompter_worker_turns_skipped",
            "Turns not answered because they were taken before: the turns topic's copy of a "
            "turn this worker took at once, a redelivery, or a re-send after a crash",
            registry=r,
        )
        self.suggestions = Counter(
            "teleprompter_worker_suggestions",
            "Suggestion outcomes published, by kind (complete, cancelled, failed, throttled) "
            "and reason",
            ["kind", "reason"],
            registry=r,
        )
        self.llm_errors = Counter(
            "teleprompter_worker_llm_errors",
            "LLM requests that failed, by kind (unavailable, rate_limited, bad_request, timeout)",
            ["kind"],
            registry=r,
        )
        self.speculations = Counter(
            "teleprompter_worker_speculations",
            "Speculative LLM streams by how they ended: confirmed (a turn took it), mismatch, "
            "speech, expired, preempted, no_slot (never started), failed, ended, lost",
            ["outcome"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "teleprompter_worker_stage_latency_seconds",
            "Latency per pipeline stage from each complete suggestion's timings; the LLM's time "
            f"to first token is stage {LLM_TTFT_STAGE!r}",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.conversations = Gauge(
            "teleprompter_worker_conversations",
            "Conversations whose context this worker holds",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "teleprompter_worker_consumer_lag",
            "Records between the group's committed offset and the log end, per partition this "
            "worker is assigned (kafka-consumer-groups' LAG)",
            ["topic", "partition"],
            registry=r,
        )
        self.healthy = Gauge(
            "teleprompter_worker_healthy",
            "1 when the last probe of a dependency (kafka, llm) succeeded, else 0",
            ["check"],
            registry=r,
        )
        self._stages = _BoundedLabel()
        self._kinds = _BoundedLabel()
        self._reasons = _BoundedLabel()
        self._llm_kinds = _BoundedLabel()

    # --- what the pipeline reports ----------------------------------------------------------
    def turn_emitted(self) -> None:
        self.turns.inc()

    def turn_skipped(self) -> None:
        self.turns_skipped.inc()

    def suggestion_published(self, event: SuggestionEvent) -> None:
        """Count an outcome by kind and reason; deltas are not outcomes and are ignored."""
        if event.kind == "delta":
            return
        self.suggestions.labels(
            kind=self._kinds(event.kind), reason=self._reasons(reason_label(event.reason))
        ).inc()
        if event.kind == "complete":
            self.observe_timings(event.timings)

    def observe_timings(self, timings: Mapping[str, float]) -> None:
        """Stage gaps in milliseconds, as a complete suggestion carries them."""
        for stage, ms in timings.items():
            self.stage_latency.labels(stage=self._stages(stage)).observe(max(0.0, ms / 1000.0))

    def speculation_ended(self, outcome: str) -> None:
        self.speculations.labels(outcome=outcome).inc()

    def llm_error(self, kind: str) -> None:
        self.llm_errors.labels(kind=self._llm_kinds(kind)).inc()

    # --- what the endpoints set -------------------------------------------------------------
    def hold_conversations(self, count: Callable[[], int]) -> None:
        """Read the number of conversations held from `count` at every scrape."""
        self.conversations.set_function(lambda: float(count()))

    def set_consumer_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Replace every lag series with (topic, partition, lag) of the current assignment."""
        self.consumer_lag.clear()
        for topic, partition, lag in lags:
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def set_health(self, check: str, *, ok: bool) -> None:
        self.healthy.labels(check=check).set(1.0 if ok else 0.0)

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def reason_label(reason: str) -> str:
    """A reason as a label value: its leading identifier, "none" when empty, else "other"."""
    if not reason.strip():
        return "none"
    found = _IDENTIFIER.match(reason)
    return found.group(1) if found else OTHER
