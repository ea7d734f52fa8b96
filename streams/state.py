"""Per-conversation state in a Faust table that any task of the worker may write."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from schemas.events import Turn

logger = logging.getLogger(__name__)


class ConversationTable:
    """A changelogged Faust table of JSON objects keyed by conversation id.

    Faust lets only an agent write a table: it takes the changelog partition from the event being
    processed. Our timers and suggestion streams write state too, so the partition is passed in.
    Every topic is keyed by conversation id and co-partitioned, so a conversation's source
    partition is its changelog partition, and a restarted or new owner of that partition
    recovers the state. Each value records its partition, which tells after a rebalance which
    conversations this worker now owns.

    `put` returns the changelog write: await it when an effect that follows (a record another
    agent acts on) must never be visible before the state that accounts for it is durable.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    @property
    def name(self) -> str:
        return str(self._table.name)

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._table.data.get(key)
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any], *, partition: int) -> asyncio.Future[Any]:
        stored = {**value, "partition": partition}
        self._table.data[key] = stored
        future: asyncio.Future[Any] = self._table.send_changelog(partition, key, stored)
        return future

    def delete(self, key: str, *, partition: int) -> None:
        self._table.data.pop(key, None)
        # A tombstone, so that compaction forgets the key and recovery does not bring it back.
        self._table.send_changelog(partition, key, None, value_serializer="raw")

    def owned(self, partitions: set[int]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored conversation whose partition is in `partitions`."""
        for key, value in list(self._table.data.items()):
            if isinstance(value, dict) and value.get("partition") in partitions:
                yield str(key), value


def turn_record(turn: Turn) -> dict[str, Any]:
    """A turn as table data (JSON-able)."""
    return dataclasses.asdict(turn)


def turn_from_record(data: dict[str, Any]) -> Turn:
    """The turn `turn_record` stored (keys it does not know are left out)."""
    names = {f.name for f in dataclasses.fields(Turn)}
    return Turn(**{name: value for name, value in data.items() if name in names})
