"""The topic catalog: every topic the system uses, with partitions, cleanup policy and retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final, Literal

from core.settings import Settings
from schemas.events import (
    AudioChunk,
    ConversationSummary,
    CustomerProfile,
    Event,
    SessionRoute,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)

logger = logging.getLogger(__name__)

CleanupPolicy = Literal["delete", "compact"]

HOUR_MS: Final = 3600 * 1000
DAY_MS: Final = 24 * HOUR_MS


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """One topic as the system expects it to exist."""

    name: str
    event_type: type[Event]
    partitions: int
    cleanup_policy: CleanupPolicy = "delete"
    retention_ms: int = 7 * DAY_MS
    replication_factor: int = 1
    min_insync_replicas: int = 1
    description: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, str]:
        config = {
            "cleanup.policy": self.cleanup_policy,
            "min.insync.replicas": str(self.min_insync_replicas),
            **self.extra_config,
        }
        if self.cleanup_policy == "delete":
            config["retention.ms"] = str(self.retention_ms)
        return config


@dataclass(frozen=True, kw_only=True)
class TopicCatalog:
    """Names and specs of every topic, derived from settings (prefix, partitions, replication)."""

    audio: TopicSpec
    transcripts: TopicSpec
    turns: TopicSpec
    suggestions: TopicSpec
    routes: TopicSpec
    summaries: TopicSpec
    profiles: TopicSpec
    prefix: str
    replication_factor: int
    min_insync_replicas: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicCatalog:
        prefix = settings.topic_prefix

        def spec(
            name: str,
            event_type: type[Event],
            description: str,
            *,
            cleanup_policy: CleanupPolicy = "delete",
            retention_ms: int = 7 * DAY_MS,
        ) -> TopicSpec:
            # Every conversation topic has the same partition count: co-partitioned by key.
            return TopicSpec(
                name=f"{prefix}.{name}",
                event_type=event_type,
                partitions=settings.partitions,
                cleanup_policy=cleanup_policy,
                retention_ms=retention_ms,
                replication_factor=settings.replication_factor,
                min_insync_replicas=settings.min_insync_replicas,
                description=description,
            )

        return cls(
            prefix=prefix,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
            audio=spec(
                "audio",
                AudioChunk,
                "client audio chunks, keyed by conversation",
                retention_ms=HOUR_MS,
            ),
            transcripts=spec(
                "transcripts", TranscriptSegment, "typed and recognised speech, both speakers"
            ),
            turns=spec("turns", Turn, "debounced customer utterances: suggestion requests"),
            suggestions=spec(
                "suggestions",
                SuggestionEvent,
                "every suggestion's outcome (complete/cancelled/throttled) for replay",
            ),
            routes=spec(
                "routes",
                SessionRoute,
                "conversation -> gateway reply topic",
                cleanup_policy="compact",
            ),
            summaries=spec(
                "summaries",
                ConversationSummary,
                "rolling conversation summaries",
                cleanup_policy="compact",
            ),
            profiles=spec(
                "profiles",
                CustomerProfile,
                "customer profile and product notes per conversation",
                cleanup_policy="compact",
            ),
        )

    def reply_topic(self, gateway_id: str) -> TopicSpec:
        """The reply topic one gateway consumes: one partition, short retention."""
        return TopicSpec(
            name=f"{self.prefix}.replies.{gateway_id}",
            event_type=SuggestionEvent,
            partitions=1,
            retention_ms=HOUR_MS,
            replication_factor=self.replication_factor,
            min_insync_replicas=self.min_insync_replicas,
            description=f"suggestion events for the conversations gateway {gateway_id} holds",
        )

    @property
    def shared_topics(self) -> tuple[TopicSpec, ...]:
        """Every topic provisioned up front (reply topics are created by their gateway)."""
        return (
            self.audio,
            self.transcripts,
            self.turns,
            self.suggestions,
            self.routes,
            self.summaries,
            self.profiles,
        )
