"""Windows of offset samples per group and partition, turned into the commits Burrow's rules judge.

Burrow sees every offset commit with its time; OffsetFetch, which we sample, returns only the
latest committed offset. A sample therefore counts as a commit (stamped with the sample's time)
when the committed offset changed since the last one, or when a live member owns the partition:
a running consumer commits on its interval even when its offset does not move (Java clients do;
librdkafka and Faust skip unchanged offsets, so for them this is an inference). With no owner
and no change, nothing is recorded, and the last commit ages until rule 3 (STOP) fires. The
first sample of a partition is always a commit. Each window keeps the last `size` commits and
log-end offsets, like Burrow's `intervals` (10 by default).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from core.kafka.groups import GroupMember, GroupSnapshot, Partition, PartitionOffsets
from teleprompter.consumer_groups.lag_evaluator import (
    Commit,
    PartitionWindow,
    Verdict,
    evaluate_group,
    evaluate_partition,
)

logger = logging.getLogger(__name__)

DEFAULT_WINDOW: Final = 10


@dataclass(kw_only=True)
class _PartitionHistory:
    commits: deque[Commit]
    log_ends: deque[int]
    samples: int = 0


@dataclass(frozen=True, kw_only=True)
class PartitionReport:
    """One partition at the latest sample, with its verdict (None before any commit)."""

    offsets: PartitionOffsets
    owners: tuple[GroupMember, ...]
    verdict: Verdict | None


@dataclass(frozen=True, kw_only=True)
class GroupReport:
    """A group at the latest sample: its snapshot, each partition's verdict and its own."""

    snapshot: GroupSnapshot
    partitions: tuple[PartitionReport, ...]
    verdict: Verdict
    samples: int
    window_s: float


@dataclass(kw_only=True)
class GroupWindow:
    """The sliding window of one group; `observe` each snapshot, then `report`."""

    group_id: str
    size: int = DEFAULT_WINDOW
    allowed_lag: int = 0
    _history: dict[Partition, _PartitionHistory] = field(default_factory=dict)
    _sample_times: deque[float] = field(default_factory=deque)
    _latest: GroupSnapshot | None = None

    def observe(self, snapshot: GroupSnapshot) -> None:
        """Add one sample of the group to the window."""
        if snapshot.group_id != self.group_id:
            raise ValueError(
                f"snapshot of {snapshot.group_id} given to the window of {self.group_id}"
            )
        self._latest = snapshot
        self._sample_times.append(snapshot.taken_at_ms)
        while len(self._sample_times) > self.size:
            self._sample_times.popleft()
        owners = snapshot.description.owners
        for offsets in snapshot.partitions:
            tp = (offsets.topic, offsets.partition)
            history = self._history.get(tp)
            if history is None:
                history = self._history[tp] = _PartitionHistory(
                    commits=deque(maxlen=self.size), log_ends=deque(maxlen=self.size)
                )
            history.log_ends.append(offsets.log_end)
            history.samples = min(history.samples + 1, self.size)
            if offsets.committed is None:
                continue
            last = history.commits[-1] if history.commits else None
            if last is None or last.offset != offsets.committed or tp in owners:
                history.commits.append(
                    Commit(
                        offset=offsets.committed,
                        timestamp_ms=snapshot.taken_at_ms,
                        lag=offsets.lag,
                    )
                )

    def report(self) -> GroupReport:
        """Every partition's verdict over the window, and the group's."""
        snapshot = self._latest
        if snapshot is None:
            raise RuntimeError(f"no sample of {self.group_id} yet")
        owners = snapshot.description.owners
        partitions = []
        for offsets in snapshot.partitions:
            tp = (offsets.topic, offsets.partition)
            history = self._history[tp]
            verdict = None
            if offsets.lag is not None and history.commits:
                verdict = evaluate_partition(
                    PartitionWindow(
                        commits=list(history.commits),
                        log_ends=list(history.log_ends),
                        current_lag=offsets.lag,
                        now_ms=snapshot.taken_at_ms,
                        samples=history.samples,
                    ),
                    allowed_lag=self.allowed_lag,
                )
            partitions.append(
                PartitionReport(offsets=offsets, owners=owners.get(tp, ()), verdict=verdict)
            )
        group_verdict = evaluate_group(
            (f"{p.offsets.topic}[{p.offsets.partition}]", p.verdict)
            for p in partitions
            if p.verdict is not None
        )
        times = self._sample_times
        return GroupReport(
            snapshot=snapshot,
            partitions=tuple(partitions),
            verdict=group_verdict,
            samples=len(times),
            window_s=(times[-1] - times[0]) / 1000.0 if times else 0.0,
        )
