"""Debounce and coalesce a transcript into turns: one suggestion request per customer thought."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Final

from schemas.events import TranscriptSegment, Turn, TurnReason

logger = logging.getLogger(__name__)

# A sentence is over when its last word is followed by terminal punctuation, maybe in quotes.
_SENTENCE_END: Final = re.compile(r"[.?!…][\"')\]]*\s*$")
MAX_PENDING_CHARS: Final = 4000


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


class TurnCoalescer:
    """Turns a transcript stream into turns.

    A final customer chunk that ends a sentence (or a recognised utterance, which ends where the
    speaker fell silent) makes a turn at once; otherwise the turn waits for
    `pause_ms` without new customer speech (partials count as speech: the customer is still
    talking). Rep speech never makes a turn. Time is passed in, so the agent owns the clock.
    A revision (`segment.revision > 0`) whose words differ from what the latest turn was made
    of supersedes that turn: a new turn with the revised text.
    """

    def __init__(self, *, pause_ms: float = 600.0) -> None:
        self._pause_ms = pause_ms
        self._pending: dict[str, _Pending] = {}
        self._made: dict[str, _Pending] = {}  # what each conversation's latest turn was made of

    def __len__(self) -> int:
        return len(self._pending)

    # One early return per kind of segment reads more plainly than nested branches.
    def accept(self, segment: TranscriptSegment, *, now_ms: float) -> Turn | None:  # noqa: PLR0911
        """Take one segment; return the turn it completes, if any."""
        cid = segment.conversation_id
        if segment.end_of_conversation:
            self._pending.pop(cid, None)
            self._made.pop(cid, None)
            return None
        if segment.speaker != "customer":
            return None
        text = segment.text.strip()
        if segment.final and segment.revision > 0:
            return self._revise(segment, text)
        pending = self._pending.get(cid)
        if not segment.final:
            if pending is not None:
                pending.deadline_ms = now_ms + self._pause_ms
            return None
        if not text:
            return None
        if pending is None:
            pending = self._pending[cid] = _Pending()
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

    def next_deadline_ms(self) -> float | None:
        """When the earliest waiting turn is due, for the agent's timer."""
        deadlines = [p.deadline_ms for p in self._pending.values() if p.deadline_ms is not None]
        return min(deadlines, default=None)

    def due(self, *, now_ms: float) -> list[Turn]:
        """Turns whose pause has run out."""
        ready = [
            cid
            for cid, pending in self._pending.items()
            if pending.deadline_ms is not None and pending.deadline_ms <= now_ms
        ]
        return [self._emit(cid, reason="pause") for cid in ready]

    def _revise(self, segment: TranscriptSegment, text: str) -> Turn | None:
        """A re-decoded segment: fix it where it waits, or supersede the turn it was part of.

        Only the conversation's latest turn is superseded (a newer turn already answers what
        came after), and only when the words it was made of changed.
        """
        cid = segment.conversation_id
        for made, is_turn in ((self._pending.get(cid), False), (self._made.get(cid), True)):
            if made is None or segment.segment_id not in made.segment_ids:
                continue
            index = made.segment_ids.index(segment.segment_id)
            if not text or made.texts[index] == text:
                return None
            made.texts[index] = text
            if not is_turn:
                return None
            return Turn(
                conversation_id=cid,
                turn_id=uuid.uuid4().hex[:16],
                text=made.text,
                reason="sentence_end",
                trace=dict(segment.trace),
            )
        return None

    def _emit(self, conversation_id: str, *, reason: TurnReason) -> Turn:
        pending = self._pending.pop(conversation_id)
        self._made[conversation_id] = pending
        return Turn(
            conversation_id=conversation_id,
            turn_id=uuid.uuid4().hex[:16],
            text=pending.text,
            reason=reason,
            trace=pending.trace,
        )
