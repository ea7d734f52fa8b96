"""Conversation contexts kept in memory for speed and in a Faust table for restarts."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any, Final

from schemas.events import TranscriptSegment
from streams.prompt import ConversationContext, ProfileError

logger = logging.getLogger(__name__)

SEGMENTS_REVISABLE: Final = 8
"""Per conversation, the newest final segments whose text a revision can still replace."""


class ContextStore:
    """One `ConversationContext` per conversation this worker serves.

    The table holds a snapshot of each context (transcript lines, summary, profile) so that a
    restarted worker rebuilds them from the table's changelog; the in-memory objects are what
    prompts are built from. `save` and `drop` must run inside an agent (Faust writes the
    changelog from the event being processed).
    """

    def __init__(self, table: MutableMapping[str, Any], *, window_s: float = 90.0) -> None:
        self._table = table
        self._window_s = window_s
        self._live: dict[str, ConversationContext] = {}
        self._profiles: dict[str, str] = {}
        self._touched: dict[str, float] = {}
        self._segments: dict[str, OrderedDict[str, str]] = {}  # segment id -> text in context

    def __len__(self) -> int:
        return len(self._live)

    def get(self, conversation_id: str) -> ConversationContext:
        """The conversation's context: live, else rebuilt from its snapshot, else new."""
        self._touched[conversation_id] = time.monotonic()
        context = self._live.get(conversation_id)
        if context is None:
            context = self._live[conversation_id] = self._restore(conversation_id)
        return context

    def record(self, segment: TranscriptSegment) -> ConversationContext:
        """Add a final segment to its conversation's context and return the context.

        A revision (`segment.revision > 0`) of a recent segment replaces the text that segment
        added, rather than adding it again. Must run inside an agent, as `save` does.
        """
        cid = segment.conversation_id
        context = self.get(cid)
        texts = self._segments.setdefault(cid, OrderedDict())
        previous = texts.get(segment.segment_id) if segment.revision > 0 else None
        if previous is None:
            context.add_segment(segment)
        elif previous != segment.text:
            context = self._replace(cid, segment.speaker, previous, segment.text) or context
        texts[segment.segment_id] = segment.text
        texts.move_to_end(segment.segment_id)
        while len(texts) > SEGMENTS_REVISABLE:
            texts.popitem(last=False)
        return context

    def _replace(self, cid: str, speaker: str, old: str, new: str) -> ConversationContext | None:
        """The context rebuilt with `old` replaced by `new` in the speaker's newest line holding it.

        Rebuilt from its snapshot, as a restarted worker would: lines stay in the same order,
        merged the same way. None when no line holds `old` any more (summarised away).
        """
        old, new = " ".join(old.split()), " ".join(new.split())
        self.save(cid)
        snapshot = dict(self._table[cid])
        replaced = False
        for key in ("lines", "unsummarized"):
            for line in reversed(snapshot[key]):
                at = line[1].rfind(old) if line[0] == speaker else -1
                if at >= 0:
                    line[1] = line[1][:at] + new + line[1][at + len(old) :]
                    replaced = True
                    break
        if not replaced:
            return None
        self._table[cid] = snapshot
        self._live.pop(cid, None)
        return self.get(cid)

    def set_profile(self, conversation_id: str, profile_json: str) -> None:
        context = self.get(conversation_id)
        try:
            context.set_profile_json(profile_json)
        except ProfileError as exc:
            logger.warning("ignoring the profile of %s: %s", conversation_id, exc)
            return
        self._profiles[conversation_id] = profile_json

    def save(self, conversation_id: str) -> None:
        context = self._live.get(conversation_id)
        if context is None:
            return
        self._table[conversation_id] = {
            "lines": [[u.speaker, u.text, u.at_ms] for u in context.transcript],
            "unsummarized": [[u.speaker, u.text, u.at_ms] for u in context.unsummarized],
            "summary": context.summary,
            "covers_until_ms": context.summary_covers_until_ms,
            "turns": context.summary_turns,
            "profile_json": self._profiles.get(conversation_id, ""),
        }

    def drop(self, conversation_id: str) -> None:
        """Forget a conversation everywhere (it ended or went idle)."""
        self._live.pop(conversation_id, None)
        self._profiles.pop(conversation_id, None)
        self._touched.pop(conversation_id, None)
        self._segments.pop(conversation_id, None)
        self._table.pop(conversation_id, None)

    def idle(self, *, idle_s: float) -> Iterator[str]:
        """Conversations untouched for `idle_s` seconds."""
        cutoff = time.monotonic() - idle_s
        return iter([cid for cid, at in self._touched.items() if at < cutoff])

    def _restore(self, conversation_id: str) -> ConversationContext:
        context = ConversationContext(conversation_id, window_s=self._window_s)
        snapshot = self._table.get(conversation_id)
        if not snapshot:
            return context
        if profile_json := snapshot.get("profile_json"):
            self._profiles[conversation_id] = profile_json
            context.set_profile_json(profile_json)
        if snapshot.get("summary"):
            context.set_summary(
                snapshot["summary"],
                covers_until_ms=snapshot["covers_until_ms"],
                turn_count=snapshot.get("turns", 0),
            )
        seen: set[tuple[str, str, int]] = set()
        lines = sorted(
            (tuple(line) for line in snapshot["unsummarized"] + snapshot["lines"]),
            key=lambda line: line[2],
        )
        for speaker, text, at_ms in lines:
            if (speaker, text, at_ms) not in seen:
                seen.add((speaker, text, at_ms))
                context.add(speaker, text, at_ms=at_ms)
        logger.info("restored the context of %s (%d lines)", conversation_id, len(context))
        return context
