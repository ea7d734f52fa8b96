"""The committed-offset journal: replay after restart, a torn last line, deletions, rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import offsets as offsets_module
from broker.offsets import CommittedOffset, OffsetStore


def test_commits_survive_reopening_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    store.commit("g", [("t", 0, 5, "meta"), ("t", 1, 9, "")])
    store.commit("g", [("t", 0, 6, "")])
    # No close(): reopening must not depend on a clean shutdown.
    with (tmp_path / "offsets.log").open("ab") as journal:
        journal.write(b'{"g": "g", "t": "t", "p": 1, "o": 1')  # a crash mid-line

    reopened = OffsetStore(tmp_path)

    assert reopened.get("g", "t", 0) == CommittedOffset(6, "")
    assert reopened.get("g", "t", 1) == CommittedOffset(9, "")
    reopened.commit("g", [("t", 1, 10, "")])
    assert OffsetStore(tmp_path).get("g", "t", 1) == CommittedOffset(10, "")


def test_deleted_offsets_stay_deleted(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    store.commit("a", [("t", 0, 1, ""), ("u", 0, 2, "")])
    store.commit("b", [("t", 0, 3, "")])
    store.delete_topic("t")
    store.delete_group("b")

    reopened = OffsetStore(tmp_path)
    assert reopened.of_group("a") == {("u", 0): CommittedOffset(2, "")}
    assert reopened.groups() == ["a"]


def test_a_journal_of_mostly_superseded_commits_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offsets_module, "_REWRITE_MIN_LINES", 10)
    store = OffsetStore(tmp_path)
    for offset in range(100):
        store.commit("g", [("t", 0, offset, "")])

    lines = (tmp_path / "offsets.log").read_bytes().count(b"\n")
    assert lines < 50
    assert OffsetStore(tmp_path).get("g", "t", 0) == CommittedOffset(99, "")
