"""Committed consumer-group offsets, kept in memory and in an append-only journal.

Each OffsetCommit is one write of JSON lines to `offsets.log` before it is acknowledged (so it
survives a kill -9 of the broker, like the record logs). At start-up the journal is replayed;
a torn last line is dropped. When the journal holds many superseded entries it is rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

_JOURNAL_FILE: Final = "offsets.log"
_REWRITE_MIN_LINES: Final = 10_000


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str


TopicPartition = tuple[str, int]


class OffsetStore:
    """group -> (topic, partition) -> committed offset."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / _JOURNAL_FILE
        self._offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self._lines = 0
        self._replay()
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._lines > _REWRITE_MIN_LINES:
            self._rewrite()

    def _replay(self) -> None:
        if not self._path.exists():
            return
        raw = self._path.read_bytes()
        valid_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
                self._apply(entry["g"], entry["t"], int(entry["p"]), entry["o"], entry.get("m", ""))
            except (ValueError, KeyError, TypeError):
                break
            valid_end += len(line)
            self._lines += 1
        if valid_end != len(raw):
            logger.warning("offsets journal: dropping %d bytes of torn tail", len(raw) - valid_end)
            with self._path.open("r+b") as handle:
                handle.truncate(valid_end)

    def _apply(
        self, group: str, topic: str, partition: int, offset: int | None, metadata: str
    ) -> None:
        if offset is None:
            group_offsets = self._offsets.get(group)
            if group_offsets is not None:
                group_offsets.pop((topic, partition), None)
                if not group_offsets:
                    del self._offsets[group]
        else:
            self._offsets.setdefault(group, {})[(topic, partition)] = CommittedOffset(
                offset, metadata
            )

    def _write(self, entries: Iterable[tuple[str, str, int, int | None, str]]) -> None:
        lines = []
        for group, topic, partition, offset, metadata in entries:
            self._apply(group, topic, partition, offset, metadata)
            lines.append(
                json.dumps({"g": group, "t": topic, "p": partition, "o": offset, "m": metadata})
            )
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._lines += len(lines)
        live = sum(len(offsets) for offsets in self._offsets.values())
        if self._lines > _REWRITE_MIN_LINES and self._lines > 4 * live:
            self._rewrite()

    def _rewrite(self) -> None:
        temporary = self._path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for group, offsets in self._offsets.items():
                for (topic, partition), committed in offsets.items():
                    entry = {
                        "g": group,
                        "t": topic,
                        "p": partition,
                        "o": committed.offset,
                        "m": committed.metadata,
                    }
                    handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._lines = sum(len(offsets) for offsets in self._offsets.values())

    # --- API ---------------------------------------------------------------------------------

    def commit(self, group: str, offsets: Iterable[tuple[str, int, int, str]]) -> None:
        """Record (topic, partition, offset, metadata) commits for a group, durably."""
        self._write((group, t, p, o, m) for t, p, o, m in offsets)

    def delete(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        self._write((group, t, p, None, "") for t, p in partitions)

    def delete_group(self, group: str) -> None:
        self.delete(group, list(self._offsets.get(group, {})))

    def delete_topic(self, topic: str) -> None:
        for group, offsets in list(self._offsets.items()):
            self.delete(group, [tp for tp in offsets if tp[0] == topic])

    def get(self, group: str, topic: str, partition: int) -> CommittedOffset | None:
        return self._offsets.get(group, {}).get((topic, partition))

    def of_group(self, group: str) -> dict[TopicPartition, CommittedOffset]:
        return dict(self._offsets.get(group, {}))

    def groups(self) -> list[str]:
        return list(self._offsets)

    def flush(self) -> None:
        """fsync the journal (call from a worker thread)."""
        try:
            os.fsync(self._fd)
        except OSError:  # replaced meanwhile by a rewrite, which fsyncs itself
            logger.debug("offsets journal fsync skipped")

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
