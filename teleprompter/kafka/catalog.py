"""The topic catalog: every topic the system uses, with partitions, cleanup policy and retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final, Literal

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
from teleprompter.settings import Settings

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
    description: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy, **self.extra_config}
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

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicCatalog:
        p, n, rf = settings.topic_prefix, settings.partitions, settings.replication_factor
        return cls(
            prefix=p,
            replication_factor=rf,
            audio=TopicSpec(
                name=f"{p}.audio",
                event_type=AudioChunk,
                partitions=n,
                retention_ms=HOUR_MS,
                replication_factor=rf,
                description="client audio chunks, keyed by conversation",
            ),
            transcripts=TopicSpec(
                name=f"{p}.transcripts",
                event_type=TranscriptSegment,
                partitions=n,
                replication_factor=rf,
                description="typed and recognised speech, both speakers",
            ),
            turns=TopicSpec(
                name=f"{p}.turns",
                event_type=Turn,
                partitions=n,
                replication_factor=rf,
                description="debounced customer utterances: suggestion requests",
            ),
            suggestions=TopicSpec(
                name=f"{p}.suggestions",
                event_type=SuggestionEvent,
                partitions=n,
                replication_factor=rf,
                description="every suggestion's outcome (complete/cancelled/throttled) for replay",
            ),
            routes=TopicSpec(
                name=f"{p}.routes",
                event_type=SessionRoute,
                partitions=n,
                cleanup_policy="compact",
                replication_factor=rf,
                description="conversation -> gateway reply topic",
            ),
            summaries=TopicSpec(
                name=f"{p}.summaries",
                event_type=ConversationSummary,
                partitions=n,
                cleanup_policy="compact",
                replication_factor=rf,
                description="rolling conversation summaries",
            ),
            profiles=TopicSpec(
                name=f"{p}.profiles",
                event_type=CustomerProfile,
                partitions=n,
                cleanup_policy="compact",
                replication_factor=rf,
                description="customer profile and product notes per conversation",
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
