"""Debounce and coalesce a transcript into turns: one suggestion request per customer thought."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from schemas.events import TranscriptSegment, Turn, TurnReason
from streams.state import turn_from_record, turn_record

logger = logging.getLogger(__name__)

# A sentence is over when its last word is followed by terminal punctuation, maybe in quotes.
_SENTENCE_END: Final = re.compile(r"[.?!…][\"')\]]*\s*$")
MAX_PENDING_CHARS: Final = 4000
# Segment ids remembered per conversation to recognise a resend; ~100 gateway ids.
MAX_SEEN_BYTES: Final = 4096


@dataclass(kw_only=True)
class _Pending:
    """Customer text heard since the last turn, waiting for a sentence end or a pause."""

    texts: list[str] = field(default_factory=list)
    segment_ids: list[str] = field(default_factory=list)
    deadline_ms: float | None = None
    trace: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.texts)


@dataclass(kw_only=True)
class _Conversation:
    """Everything the coalescer knows about one conversation; `snapshot` makes it durable."""

    partition: int | None = None
    offset: int = -1  # the newest transcript offset taken; older ones are redeliveries
    seen: deque[str] = field(default_factory=deque)
    seen_bytes: int = 0
    pending: _Pending | None = None
    # What the latest turn was made of, so that a revision of its words can supersede it.
    made: _Pending | None = None
    # Turns emitted but not yet known to be on the turns topic: re-sent after a crash.
    outbox: list[Turn] = field(default_factory=list)
    ended: bool = False


class TurnCoalescer:
    """Turns a transcript stream into turns, each segment counted once.

    A final customer chunk that ends a sentence (or a recognised utterance, which ends where the
    speaker fell silent) makes a turn at once; otherwise the turn waits for
    `pause_ms` without new customer speech (partials count as speech: the customer is still
    talking). Rep speech never makes a turn. Time is passed in, so the agent owns the clock.

    `admit` recognises segments taken before (a redelivered record, or a client's resend with
    the same segment id) so that they never contribute twice. A turn's id is derived from its
    conversation and segment ids, so a turn re-made from the same segments keeps its id.
    `snapshot` and `restore` carry a conversation's state through a worker's crash.

    A revision (`segment.revision > 0`: speech recognition decoded the segment again) fixes the
    segment's words where they wait, or, when the conversation's latest turn was made of them
    and they changed, supersedes that turn: a new turn with the revised text.
    """

    def __init__(self, *, pause_ms: float = 600.0, max_seen_bytes: int = MAX_SEEN_BYTES) -> None:
        self._pause_ms = pause_ms
        self._max_seen_bytes = max_seen_bytes
        self._conversations: dict[str, _Conversation] = {}

    def __len__(self) -> int:
        """Conversations with text waiting to become a turn."""
        return sum(1 for c in self._conversations.values() if c.pending is not None)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._conversations

    def admit(
        self, segment: TranscriptSegment, *, partition: int | None = None, offset: int | None = None
    ) -> bool:
        """Record that `segment` was taken; False if it was taken before (skip it)."""
        state = self._state(segment.conversation_id)
        if partition is not None:
            state.partition = partition
        if offset is not None:
            if offset <= state.offset:
                return False
            state.offset = offset
        if not (segment.final or segment.end_of_conversation):
            # Partials share their utterance's id and never add text: nothing to count twice.
            return True
        key = segment_key(segment)
        if key in state.seen:
            return False
        state.seen.append(key)
        state.seen_bytes += len(key)
        while state.seen_bytes > self._max_seen_bytes and len(state.seen) > 1:
            state.seen_bytes -= len(state.seen.popleft())
        return True

    # One early return per kind of segment reads more plainly than nested branches.
    def accept(self, segment: TranscriptSegment, *, now_ms: float) -> Turn | None:  # noqa: PLR0911
        """Take one segment; return the turn it completes, if any."""
        cid = segment.conversation_id
        state = self._state(cid)
        if segment.end_of_conversation:
            state.pending = None
            state.made = None
            state.ended = True
            return None
        state.ended = False
        if segment.speaker != "customer":
            return None
        text = segment.text.strip()
        if segment.final and segment.revision > 0:
            return self._revise(state, segment, text)
        pending = state.pending
        if not segment.final:
            if pending is not None:
                pending.deadline_ms = now_ms + self._pause_ms
            return None
        if not text:
            return None
        if pending is None:
            pending = state.pending = _Pending()
        pending.texts.append(text)
        pending.segment_ids.append(segment.segment_id)
        pending.trace = dict(segment.trace)
        # A recognised utterance ends where voice activity detection heard the speaker stop: that
        # silence was the pause, so waiting for another would only add latency.
        ends_turn = segment.source == "asr" or _SENTENCE_END.search(text) is not None
        if ends_turn or len(pending.text) >= MAX_PENDING_CHARS:
            return self._emit(cid, reason="sentence_end")
        pending.deadline_ms = now_ms + self._pause_ms
        return None

    def waiting_segments(self, conversation_id: str) -> tuple[str, ...] | None:
        """The segment ids of customer words waiting for a pause to become a turn, if any."""
        state = self._conversations.get(conversation_id)
        if state is None or state.pending is None or state.pending.deadline_ms is None:
            return None
        return tuple(state.pending.segment_ids)

    def next_deadline_ms(self) -> float | None:
        """When the earliest waiting turn is due, for the agent's timer."""
        deadlines = [
            c.pending.deadline_ms
            for c in self._conversations.values()
            if c.pending is not None and c.pending.deadline_ms is not None
        ]
        return min(deadlines, default=None)

    def due(self, *, now_ms: float) -> list[Turn]:
        """Turns whose pause has run out."""
        ready = [
            cid
            for cid, c in self._conversations.items()
            if c.pending is not None
            and c.pending.deadline_ms is not None
            and c.pending.deadline_ms <= now_ms
        ]
        return [self._emit(cid, reason="pause") for cid in ready]

    # --- durability ---------------------------------------------------------------------------
    def partition_of(self, conversation_id: str) -> int | None:
        state = self._conversations.get(conversation_id)
        return None if state is None else state.partition

    def outbox(self, conversation_id: str) -> list[Turn]:
        """Turns emitted for the conversation and not yet confirmed on the turns topic."""
        state = self._conversations.get(conversation_id)
        return [] if state is None else list(state.outbox)

    def delivered(self, conversation_id: str, turn_id: str) -> None:
        """The turns topic has `turn_id`: it need never be re-sent."""
        state = self._conversations.get(conversation_id)
        if state is not None:
            state.outbox = [t for t in state.outbox if t.turn_id != turn_id]

    def snapshot(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation's state as JSON-able data (None if unknown)."""
        state = self._conversations.get(conversation_id)
        if state is None:
            return None
        return {
            "partition": state.partition,
            "offset": state.offset,
            "seen": list(state.seen),
            "pending": _pending_record(state.pending),
            "made": _pending_record(state.made),
            "outbox": [turn_record(turn) for turn in state.outbox],
            "ended": state.ended,
        }

    def restore(self, conversation_id: str, snapshot: dict[str, Any]) -> None:
        """Adopt a snapshot (after a restart or a rebalance), replacing what is in memory."""
        seen = deque(str(key) for key in snapshot.get("seen", ()))
        self._conversations[conversation_id] = _Conversation(
            partition=snapshot.get("partition"),
            offset=int(snapshot.get("offset", -1)),
            seen=seen,
            seen_bytes=sum(len(key) for key in seen),
            pending=_pending_from_record(snapshot.get("pending")),
            made=_pending_from_record(snapshot.get("made")),
            outbox=[turn_from_record(data) for data in snapshot.get("outbox", ())],
            ended=bool(snapshot.get("ended", False)),
        )

    def forget(self, conversation_ids: Iterable[str]) -> None:
        """Drop the in-memory state of conversations this worker no longer owns."""
        for cid in conversation_ids:
            self._conversations.pop(cid, None)

    def in_partitions(self, partitions: set[int]) -> list[str]:
        return [cid for cid, c in self._conversations.items() if c.partition in partitions]

    def ended(self) -> list[str]:
        """Conversations that said goodbye (their small dedupe state lingers until swept)."""
        return [cid for cid, c in self._conversations.items() if c.ended]

    # --- internals ----------------------------------------------------------------------------
    def _state(self, conversation_id: str) -> _Conversation:
        state = self._conversations.get(conversation_id)
        if state is None:
            state = self._conversations[conversation_id] = _Conversation()
        return state

    def _emit(self, conversation_id: str, *, reason: TurnReason) -> Turn:
        state = self._conversations[conversation_id]
        pending = state.pending
        assert pending is not None
        state.pending = None
        state.made = _Pending(texts=list(pending.texts), segment_ids=list(pending.segment_ids))
        return self._turn(state, conversation_id, pending, ids=pending.segment_ids, reason=reason)

    def _revise(self, state: _Conversation, segment: TranscriptSegment, text: str) -> Turn | None:
        """A re-decoded segment: fix it where it waits, or supersede the turn it was part of.

        Only the conversation's latest turn is superseded (a newer turn already answers what
        came after), and only when the words it was made of changed.
        """
        for made, is_turn in ((state.pending, False), (state.made, True)):
            if made is None or segment.segment_id not in made.segment_ids:
                continue
            index = made.segment_ids.index(segment.segment_id)
            if not text or made.texts[index] == text:
                return None
            made.texts[index] = text
            if not is_turn:
                return None
            made.trace = dict(segment.trace)
            # The revised turn is made of the same segments as the one it supersedes, so its id
            # also names the revision: a redelivered revision re-makes the same turn.
            revision = f"{segment.segment_id}#r{segment.revision}"
            return self._turn(
                state,
                segment.conversation_id,
                made,
                ids=[*made.segment_ids, revision],
                reason="sentence_end",
            )
        return None

    def _turn(
        self,
        state: _Conversation,
        conversation_id: str,
        made: _Pending,
        *,
        ids: list[str],
        reason: TurnReason,
    ) -> Turn:
        turn = Turn(
            conversation_id=conversation_id,
            turn_id=turn_id_for(conversation_id, ids),
            text=made.text,
            reason=reason,
            segment_ids=list(made.segment_ids),
            trace=dict(made.trace),
        )
        state.outbox.append(turn)
        return turn


def segment_key(segment: TranscriptSegment) -> str:
    """What makes two final transcript records the same segment (a resend or a redelivery).

    A revision re-decodes a segment under its id; each revision is a segment of its own.
    """
    if segment.revision > 0:
        return f"{segment.segment_id}#r{segment.revision}"
    return segment.segment_id


def _pending_record(pending: _Pending | None) -> dict[str, Any] | None:
    if pending is None:
        return None
    return {
        "texts": pending.texts,
        "segment_ids": pending.segment_ids,
        "deadline_ms": pending.deadline_ms,
        "trace": pending.trace,
    }


def _pending_from_record(data: dict[str, Any] | None) -> _Pending | None:
    if not data:
        return None
    return _Pending(
        texts=list(data["texts"]),
        segment_ids=list(data.get("segment_ids", ())),
        deadline_ms=data.get("deadline_ms"),
        trace=dict(data.get("trace", {})),
    )


def turn_id_for(conversation_id: str, segment_ids: list[str]) -> str:
    """A turn's id from what it is made of: the same segments always make the same id."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(conversation_id.encode())
    for segment_id in segment_ids:
        digest.update(b"\0" + segment_id.encode())
    return digest.hexdigest()
