"""Every event that crosses Kafka, as one small hierarchy of typed dataclasses.

Each event is keyed by its conversation id (so a conversation stays ordered on one partition),
carries the time it happened (`event_time_ms`) and trace timestamps (`trace`: stage name ->
Unix epoch milliseconds) from which per-stage latency is computed. Each class maps one to one to
an Avro record schema in `schemas/avro/`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

Speaker = Literal["customer", "rep"]
AudioEncoding = Literal["pcm_s16le", "mulaw"]
TranscriptSource = Literal["text", "asr"]
TurnReason = Literal["sentence_end", "pause", "conversation_end"]
SuggestionKind = Literal["delta", "complete", "cancelled", "throttled", "failed"]
LlmState = Literal["ok", "degraded"]

Trace = dict[str, float]


def now_ms() -> float:
    """Wall-clock Unix time in milliseconds, the unit of every trace timestamp."""
    return time.time() * 1000.0


@dataclass(kw_only=True)
class Event:
    """Base of every Kafka event. `schema_name` names its Avro record."""

    schema_name: ClassVar[str]

    conversation_id: str
    event_time_ms: int = field(default_factory=lambda: int(now_ms()))
    trace: Trace = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        return self.conversation_id.encode()

    def stamp(self, stage: str) -> None:
        """Record that this event passed `stage` now."""
        self.trace[stage] = now_ms()


@dataclass(kw_only=True)
class AudioChunk(Event):
    """~100-200 ms of one speaker's audio, as the client sent it (not decoded by the gateway)."""

    schema_name: ClassVar[str] = "AudioChunk"

    session_id: str
    speaker: Speaker = "customer"
    seq: int
    encoding: AudioEncoding = "pcm_s16le"
    sample_rate: int = 16000
    audio: bytes
    end_of_stream: bool = False


@dataclass(kw_only=True)
class TranscriptSegment(Event):
    """Words one speaker said: typed by the client or recognised from audio."""

    schema_name: ClassVar[str] = "TranscriptSegment"

    session_id: str
    segment_id: str
    speaker: Speaker = "customer"
    text: str
    final: bool = True
    source: TranscriptSource = "text"
    end_of_conversation: bool = False
    revision: int = 0
    """0 for a segment's first final; a re-decode of the same segment (same `segment_id`)
    comes again with a higher revision, whose text replaces the earlier ones."""


@dataclass(kw_only=True)
class Turn(Event):
    """A debounced customer utterance: one request for a suggestion."""

    schema_name: ClassVar[str] = "Turn"

    turn_id: str
    text: str
    reason: TurnReason = "sentence_end"
    segment_ids: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class SuggestionEvent(Event):
    """One step of a streamed suggestion, on its way to the gateway holding the conversation.

    Every turn's suggestion ends in exactly one outcome: `complete`, `cancelled` (`reason`:
    superseded, worker_lost, conversation_ended) or `failed` (`reason`: the LLM's error).
    """

    schema_name: ClassVar[str] = "SuggestionEvent"

    turn_id: str
    kind: SuggestionKind
    seq: int = 0
    text: str = ""
    full_text: str = ""
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class LlmStatus(Event):
    """Whether the worker serving a conversation can reach its LLM (sent when that changes)."""

    schema_name: ClassVar[str] = "LlmStatus"

    worker_id: str = ""
    llm: LlmState = "ok"
    reason: str = ""


@dataclass(kw_only=True)
class ConversationSummary(Event):
    """The rolling summary of a conversation so far (compacted: latest per conversation)."""

    schema_name: ClassVar[str] = "ConversationSummary"

    summary: str
    covers_until_ms: int
    turn_count: int = 0


@dataclass(kw_only=True)
class SessionRoute(Event):
    """Which gateway holds a conversation now, so suggestions follow the client (compacted)."""

    schema_name: ClassVar[str] = "SessionRoute"

    gateway_id: str
    reply_topic: str
    session_id: str
    connected: bool = True


@dataclass(kw_only=True)
class CustomerProfile(Event):
    """Customer profile and product notes for a conversation (compacted); JSON object text."""

    schema_name: ClassVar[str] = "CustomerProfile"

    profile_json: str


EVENT_TYPES: tuple[type[Event], ...] = (
    AudioChunk,
    TranscriptSegment,
    Turn,
    SuggestionEvent,
    LlmStatus,
    ConversationSummary,
    SessionRoute,
    CustomerProfile,
)
