"""The gateway's Prometheus metrics, in one registry per app so tests and apps never share."""

from __future__ import annotations

import logging
import re
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Seconds: sub-millisecond hops up to multi-second LLM stages.
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
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)

# Stage names come from workers' timings; bound the label set so a bug cannot explode it.
# The workers name a stage by the gap it measures, "llm_request->llm_first_token" (the LLM's
# time to first token): label values may hold any text, so the names are kept as they come.
MAX_STAGES: Final = 32
_STAGE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,39}(->[a-z][a-z0-9_]{0,39})?$")


class GatewayMetrics:
    """Counters, gauges and latency histograms for one gateway."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "teleprompter_gateway_connections", "Open authenticated WebSocket sessions", registry=r
        )
        self.connection_attempts = Counter(
            "teleprompter_gateway_connection_attempts",
            "WebSocket connection attempts by outcome",
            ["outcome"],
            registry=r,
        )
        self.messages_in = Counter(
            "teleprompter_gateway_messages_in",
            "Client frames received, by message type ('audio' for binary frames)",
            ["type"],
            registry=r,
        )
        self.messages_out = Counter(
            "teleprompter_gateway_messages_out",
            "Messages written to clients, by message type",
            ["type"],
            registry=r,
        )
        self.audio_bytes_in = Counter(
            "teleprompter_gateway_audio_bytes_in", "Audio bytes received", registry=r
        )
        self.protocol_errors = Counter(
            "teleprompter_gateway_protocol_errors",
            "Client messages answered with an error, by code",
            ["code"],
            registry=r,
        )
        self.produce_failures = Counter(
            "teleprompter_gateway_produce_failures",
            "Events Kafka did not take, by topic and stage (encode, queue_full, delivery)",
            ["topic", "stage"],
            registry=r,
        )
        self.reply_records = Counter(
            "teleprompter_gateway_reply_records",
            "Reply-topic records consumed, by outcome (delivered, no_session, undecodable)",
            ["outcome"],
            registry=r,
        )
        self.coalesced_deltas = Counter(
            "teleprompter_gateway_coalesced_deltas",
            "Suggestion deltas merged into a newer one because a client read slowly",
            registry=r,
        )
        self.slow_client_closes = Counter(
            "teleprompter_gateway_slow_client_closes",
            "Sessions closed with 1013 because their send queue stayed full",
            registry=r,
        )
        self.acks = Counter(
            "teleprompter_gateway_acks",
            "Acks sent to clients: 'seq' (a message stored) or 'audio' (an audio offset)",
            ["kind"],
            registry=r,
        )
        self.unacked_bytes = Gauge(
            "teleprompter_gateway_unacked_bytes",
            "Bytes of client messages handed to Kafka and not yet acknowledged",
            registry=r,
        )
        self.replaced_sockets = Counter(
            "teleprompter_gateway_replaced_sockets",
            "Sockets closed 4002 because a newer one took their place, by reason "
            "(same_client, socket_cap)",
            ["reason"],
            registry=r,
        )
        self.sessions_expired = Counter(
            "teleprompter_gateway_sessions_expired",
            "Sessions closed 4001 token_expired",
            registry=r,
        )
        self.stage_latency = Histogram(
            "teleprompter_stage_latency_seconds",
            "Latency per pipeline stage: the gateway's own (gateway_produce: frame received to "
            "broker ack; gateway_deliver: reply consumed to socket write) and the workers' "
            "timings from each completed suggestion",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._stages: set[str] = set()

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record one stage's latency; unknown-shaped or surplus stage names are dropped."""
        if stage not in self._stages:
            if len(self._stages) >= MAX_STAGES or not _STAGE_NAME.match(stage):
                return
            self._stages.add(stage)
        self.stage_latency.labels(stage=stage).observe(max(0.0, seconds))

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
