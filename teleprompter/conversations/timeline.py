"""One conversation's records as timeline entries: decoded events, audio utterances, delta runs.

Every event becomes one entry carrying its decoded fields (generically: whatever fields its
schema has), its topic, partition and offset. Two kinds of record are summarised, since
nobody reads them one by one:

- audio chunks: one `AudioUtterance` per run of one speaker's chunks in one session (a gap of
  more than `audio_gap_ms` or an end of stream starts a new one), with duration, chunks, bytes
  and encoding; the audio itself is left out.
- token deltas: one `DeltaRun` per suggestion stream (its turn), with the deltas' count, the
  time from first to last and the text they added up to; `deltas="each"` shows every delta.

Reply topics also carry copies of outcomes and recognised transcripts for the gateway; those
copies are left out (the originals are on their own topics), but the outcome's copy closes its
turn's delta run: it follows the last delta on the same partition, whereas the original, on
another topic, may be read before the last deltas (its entry waits for the run).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

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
from teleprompter.event_log.reader import Recorded, RecordedEvent, UndecodableRecord

logger = logging.getLogger(__name__)

DeltaView = Literal["runs", "each"]

AUDIO_UTTERANCE: Final = "AudioUtterance"
DELTA_RUN: Final = "DeltaRun"
UNDECODABLE: Final = "Undecodable"
AUDIO_GAP_MS: Final = 1000
# A live stream with no delta and no outcome for this long is shown as it stands.
DELTA_IDLE_MS: Final = 10_000
# Bytes per sample of each audio encoding; an encoding not listed gets no duration.
BYTES_PER_SAMPLE: Final = {"pcm_s16le": 2, "mulaw": 1}
# Entries of one millisecond in pipeline order: what caused what comes first.
_RANK: Final = {
    SessionRoute.schema_name: 0,
    CustomerProfile.schema_name: 1,
    AUDIO_UTTERANCE: 2,
    TranscriptSegment.schema_name: 3,
    Turn.schema_name: 4,
    DELTA_RUN: 5,
    SuggestionEvent.schema_name: 6,
    ConversationSummary.schema_name: 7,
}


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of a timeline: `records` records from `offset` to `last_offset` of one partition."""

    at_ms: int
    type: str
    topic: str
    partition: int
    offset: int
    fields: dict[str, Any]
    last_offset: int | None = None
    records: int = 1

    @property
    def sort_key(self) -> tuple[int, int, str, int, int]:
        return (
            self.at_ms,
            _RANK.get(self.type, len(_RANK)),
            self.topic,
            self.partition,
            self.offset,
        )


def event_fields(event: Event) -> dict[str, Any]:
    """The event's fields as JSON values, whatever its schema version holds."""
    return {f.name: json_value(getattr(event, f.name)) for f in dataclasses.fields(event)}


def json_value(value: Any) -> Any:
    """A decoded Avro value as JSON: bytes as base64, containers recursively."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def sort_entries(entries: Iterable[TimelineEntry]) -> list[TimelineEntry]:
    return sorted(entries, key=lambda entry: entry.sort_key)


@dataclass(kw_only=True)
class _AudioRun:
    first: RecordedEvent
    chunk: AudioChunk
    last_offset: int
    last_at_ms: int
    last_seq: int
    chunks: int = 1
    bytes: int = 0
    end_of_stream: bool = False

    def entry(self) -> TimelineEntry:
        per_sample = BYTES_PER_SAMPLE.get(self.chunk.encoding)
        duration_ms = (
            round(self.bytes / per_sample / self.chunk.sample_rate * 1000, 1)
            if per_sample and self.chunk.sample_rate > 0
            else None
        )
        return TimelineEntry(
            at_ms=self.first.event.event_time_ms,
            type=AUDIO_UTTERANCE,
            topic=self.first.topic,
            partition=self.first.partition,
            offset=self.first.offset,
            last_offset=self.last_offset,
            records=self.chunks,
            fields={
                "conversation_id": self.chunk.conversation_id,
                "session_id": self.chunk.session_id,
                "speaker": self.chunk.speaker,
                "encoding": self.chunk.encoding,
                "sample_rate": self.chunk.sample_rate,
                "duration_ms": duration_ms,
                "chunks": self.chunks,
                "bytes": self.bytes,
                "first_seq": self.chunk.seq,
                "last_seq": self.last_seq,
                "started_ms": self.first.event.event_time_ms,
                "last_chunk_ms": self.last_at_ms,
                "end_of_stream": self.end_of_stream,
            },
        )


@dataclass(kw_only=True)
class _DeltaRun:
    first: RecordedEvent
    delta: SuggestionEvent
    last_offset: int
    last_at_ms: int
    deltas: int = 1
    resent: int = 0
    max_seq: int = 0
    text: str = ""
    first_seq: int = field(init=False)

    def __post_init__(self) -> None:
        self.first_seq = self.delta.seq
        self.max_seq = self.delta.seq
        self.text = self.delta.full_text or self.delta.text

    def add(self, record: RecordedEvent, delta: SuggestionEvent) -> None:
        self.deltas += 1
        if delta.seq <= self.max_seq:
            self.resent += 1  # a reconnect re-sends the text so far
        self.max_seq = max(self.max_seq, delta.seq)
        self.text = delta.full_text or self.text + delta.text
        self.last_offset = record.offset
        self.last_at_ms = delta.event_time_ms

    def entry(self) -> TimelineEntry:
        start = self.first.event.event_time_ms
        return TimelineEntry(
            at_ms=start,
            type=DELTA_RUN,
            topic=self.first.topic,
            partition=self.first.partition,
            offset=self.first.offset,
            last_offset=self.last_offset,
            records=self.deltas,
            fields={
                "conversation_id": self.delta.conversation_id,
                "turn_id": self.delta.turn_id,
                "deltas": self.deltas,
                "first_seq": self.first_seq,
                "last_seq": self.max_seq,
                "resent": self.resent,
                "first_delta_ms": start,
                "last_delta_ms": self.last_at_ms,
                "streamed_ms": self.last_at_ms - start,
                "text": self.text,
            },
        )


class TimelineBuilder:
    """Turns records, in any order across topics, into entries; call `flush` at the end.

    `is_reply_topic` tells the per-gateway reply topics (deltas and copies) from the rest.
    Entries come out when they are complete: at once for single events, when a run ends for
    audio and deltas, so callers sort what they collect (`sort_entries`).
    """

    def __init__(
        self,
        *,
        is_reply_topic: Callable[[str], bool],
        deltas: DeltaView = "runs",
        audio_gap_ms: int = AUDIO_GAP_MS,
        delta_idle_ms: int = DELTA_IDLE_MS,
    ) -> None:
        self._is_reply_topic = is_reply_topic
        self._deltas = deltas
        self._audio_gap_ms = audio_gap_ms
        self._delta_idle_ms = delta_idle_ms
        self._audio: dict[tuple[str, str], _AudioRun] = {}
        self._runs: dict[str, _DeltaRun] = {}
        self._held: dict[str, TimelineEntry] = {}

    def add(self, record: Recorded) -> list[TimelineEntry]:
        if isinstance(record, UndecodableRecord):
            return [_undecodable(record)]
        event = record.event
        if isinstance(event, AudioChunk):
            return self._add_audio(record, event)
        if isinstance(event, SuggestionEvent):
            return self._add_suggestion(record, event)
        if self._is_reply_topic(record.topic):
            return []  # a copy for the gateway of an event kept on its own topic
        return [_single(record)]

    def expire(self, *, now_ms: int) -> list[TimelineEntry]:
        """Runs that stopped a while before `now_ms` (when following a live call): audio
        `audio_gap_ms` ago, deltas `delta_idle_ms` ago with no outcome on their topic."""
        audio = [
            k for k, run in self._audio.items() if now_ms - run.last_at_ms > self._audio_gap_ms
        ]
        entries = [self._audio.pop(key).entry() for key in audio]
        for turn_id in [
            t for t, run in self._runs.items() if now_ms - run.last_at_ms > self._delta_idle_ms
        ]:
            entries += self._close_run(turn_id)
        for turn_id in [
            t
            for t, held in self._held.items()
            if t not in self._runs and now_ms - held.at_ms > self._delta_idle_ms
        ]:
            entries.append(self._held.pop(turn_id))
        return entries

    def flush(self) -> list[TimelineEntry]:
        """Every run still open, and the outcomes held for them."""
        entries = [run.entry() for run in self._audio.values()]
        self._audio.clear()
        for turn_id in list(self._runs):
            entries += self._close_run(turn_id)
        entries += self._held.values()
        self._held.clear()
        return entries

    def _close_run(self, turn_id: str) -> list[TimelineEntry]:
        entries = [self._runs.pop(turn_id).entry()]
        held = self._held.pop(turn_id, None)
        return entries if held is None else [*entries, held]

    def _add_audio(self, record: RecordedEvent, chunk: AudioChunk) -> list[TimelineEntry]:
        key = (chunk.session_id, chunk.speaker)
        run = self._audio.get(key)
        closed: list[TimelineEntry] = []
        if run is not None and (
            chunk.event_time_ms - run.last_at_ms > self._audio_gap_ms
            or chunk.encoding != run.chunk.encoding
            or chunk.sample_rate != run.chunk.sample_rate
        ):
            closed.append(self._audio.pop(key).entry())
            run = None
        if run is None:
            if not chunk.audio and chunk.end_of_stream:
                return closed  # an end of stream with nothing open: nothing to show
            run = self._audio[key] = _AudioRun(
                first=record,
                chunk=chunk,
                last_offset=record.offset,
                last_at_ms=chunk.event_time_ms,
                last_seq=chunk.seq,
                chunks=0,
            )
        run.chunks += 1
        run.bytes += len(chunk.audio)
        run.last_offset = record.offset
        run.last_at_ms = chunk.event_time_ms
        run.last_seq = chunk.seq
        if chunk.end_of_stream:
            run.end_of_stream = True
            closed.append(self._audio.pop(key).entry())
        return closed

    def _add_suggestion(self, record: RecordedEvent, event: SuggestionEvent) -> list[TimelineEntry]:
        if event.kind == "delta":
            if self._deltas == "each":
                return [_single(record)]
            run = self._runs.get(event.turn_id)
            if run is None:
                self._runs[event.turn_id] = _DeltaRun(
                    first=record,
                    delta=event,
                    last_offset=record.offset,
                    last_at_ms=event.event_time_ms,
                )
            else:
                run.add(record, event)
            return []
        run = self._runs.get(event.turn_id)
        if self._is_reply_topic(record.topic):
            # The gateway's copy of the outcome follows the stream's last delta on its topic.
            if run is None or run.first.topic != record.topic:
                return []
            return self._close_run(event.turn_id)
        if run is not None or event.kind == "complete":
            # Read from another topic, the outcome may come before the stream's deltas (a
            # complete always had some): held until its run closes, or `delta_idle_ms`.
            self._held[event.turn_id] = _single(record)
            return []
        return [_single(record)]


def _single(record: RecordedEvent) -> TimelineEntry:
    return TimelineEntry(
        at_ms=record.event.event_time_ms,
        type=record.event.schema_name,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        fields=event_fields(record.event),
    )


def _undecodable(record: UndecodableRecord) -> TimelineEntry:
    return TimelineEntry(
        at_ms=record.timestamp_ms,
        type=UNDECODABLE,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        fields={
            "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
            "reason": record.reason,
        },
    )
