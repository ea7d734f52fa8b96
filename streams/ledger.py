"""Which turns of each conversation are open and which have an outcome, durable across crashes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from schemas.events import Turn
from streams.state import ConversationTable, turn_from_record, turn_record

logger = logging.getLogger(__name__)

# Turn ids with an outcome remembered per conversation, to recognise a turn delivered again.
MAX_ENDED_BYTES: Final = 2048


@dataclass(frozen=True, kw_only=True)
class OpenTurn:
    """A turn taken for an answer that has no outcome yet."""

    turn: Turn
    partition: int
    opened_ms: float  # wall clock, Unix ms, when a worker took it


class TurnLedger:
    """The suggester's durable memory: per conversation, the open turn and the ended ones.

    A turn is taken once: one delivered again (a redelivered record, or a turn re-sent from the
    coalescer's outbox after a crash) is recognised by its offset or its id and never answered
    twice. The open turn survives a crash in the table, so the partition's next owner can end it.
    """

    def __init__(self, table: ConversationTable, *, max_ended_bytes: int = MAX_ENDED_BYTES) -> None:
        self._table = table
        self._max_ended_bytes = max_ended_bytes

    def is_new(self, turn: Turn, *, offset: int | None = None) -> bool:
        """False for a turn this conversation has already taken."""
        entry = self._table.get(turn.conversation_id)
        if entry is None:
            return True
        if offset is not None and offset <= entry.get("offset", -1):
            return False
        open_turn = entry.get("open")
        if open_turn is not None and open_turn["turn_id"] == turn.turn_id:
            return False
        return turn.turn_id not in entry.get("ended", ())

    def open(
        self, turn: Turn, *, partition: int, opened_ms: float, offset: int | None = None
    ) -> None:
        """`turn` is being answered now (replacing any open turn, which must be closed first)."""
        entry = self._entry(turn.conversation_id)
        if offset is not None:
            entry["offset"] = max(offset, entry.get("offset", -1))
        entry["open"] = {**turn_record(turn), "opened_ms": opened_ms}
        entry.pop("ended_ms", None)
        self._table.put(turn.conversation_id, entry, partition=partition)

    def close(self, conversation_id: str, turn_id: str) -> None:
        """`turn_id` has its outcome (complete, cancelled, failed or throttled)."""
        entry = self._table.get(conversation_id)
        if entry is None:
            return
        entry = dict(entry)
        open_turn = entry.get("open")
        if open_turn is not None and open_turn["turn_id"] == turn_id:
            entry["open"] = None
        ended = [t for t in entry.get("ended", ()) if t != turn_id] + [turn_id]
        while sum(len(t) for t in ended) > self._max_ended_bytes and len(ended) > 1:
            ended.pop(0)
        entry["ended"] = ended
        self._table.put(conversation_id, entry, partition=entry["partition"])

    def partition_of(self, conversation_id: str) -> int | None:
        entry = self._table.get(conversation_id)
        return None if entry is None else entry.get("partition")

    def mark_ended(self, conversation_id: str, *, partition: int, now_ms: float) -> None:
        """The conversation said goodbye; its entry stays a while for late redeliveries."""
        entry = self._entry(conversation_id)
        self._table.put(conversation_id, {**entry, "ended_ms": now_ms}, partition=partition)

    def sweep(self, partitions: set[int], *, ended_before_ms: float) -> list[str]:
        """Delete the entries of conversations that ended before `ended_before_ms`."""
        gone = [
            (cid, entry["partition"])
            for cid, entry in self._table.owned(partitions)
            if entry.get("ended_ms") is not None and entry["ended_ms"] < ended_before_ms
        ]
        for cid, partition in gone:
            self._table.delete(cid, partition=partition)
        return [cid for cid, _ in gone]

    def open_turn(self, conversation_id: str) -> OpenTurn | None:
        entry = self._table.get(conversation_id)
        if entry is None or not entry.get("open"):
            return None
        return _open_turn(conversation_id, entry)

    def open_turns(self, partitions: set[int]) -> list[OpenTurn]:
        """Turns without an outcome in `partitions` (found after a crash or a rebalance)."""
        return [
            _open_turn(cid, entry)
            for cid, entry in self._table.owned(partitions)
            if entry.get("open")
        ]

    def _entry(self, conversation_id: str) -> dict[str, Any]:
        entry = self._table.get(conversation_id)
        return {"offset": -1, "open": None, "ended": []} if entry is None else dict(entry)


def _open_turn(conversation_id: str, entry: dict[str, Any]) -> OpenTurn:
    return OpenTurn(
        turn=turn_from_record(entry["open"]),
        partition=entry["partition"],
        opened_ms=float(entry["open"].get("opened_ms", 0.0)),
    )
