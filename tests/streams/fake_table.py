"""A stand-in for a Faust table: its store, and the changelog writes it was asked for."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.state import ConversationTable


@dataclass
class FakeFaustTable:
    """What `ConversationTable` uses of `faust.Table`: `data` and `send_changelog`."""

    name: str = "test"
    data: dict[str, Any] = field(default_factory=dict)
    changelog: list[tuple[int, str, Any]] = field(default_factory=list)

    def send_changelog(
        self, partition: int, key: str, value: Any, value_serializer: str | None = None
    ) -> asyncio.Future[None]:
        self.changelog.append((partition, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def recovered(self) -> FakeFaustTable:
        """A new owner's table: the changelog replayed, latest value per key."""
        data: dict[str, Any] = {}
        for _partition, key, value in self.changelog:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return FakeFaustTable(name=self.name, data=data, changelog=list(self.changelog))


def conversation_table() -> tuple[ConversationTable, FakeFaustTable]:
    fake = FakeFaustTable()
    return ConversationTable(fake), fake
