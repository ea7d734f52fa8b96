"""Burrow's consumer-lag evaluation: a status per partition and per group, from a window of commits.

The rules and their order are Burrow's, ported from its evaluator and kept as close to it as
the data allows:

- linkedin/Burrow, `core/internal/evaluator/caching.go` (commit ced55ba, 2025-10):
  `calculatePartitionStatus`, rules 1-5, `checkIfRecentLagZero`; group status in
  `evaluateConsumerStatus`; the rule tables in `caching_test.go` are this module's tests.
- The wiki page "Consumer Lag Evaluation Rules" (github.com/linkedin/Burrow/wiki).
- Burrow PR #338 (recent broker offsets defer STOP) and PR #716 (REWIND, checked before rule 1).

A partition is judged only when its current lag exceeds the allowed lag (Burrow's
`allowed-lag`, 0 by default); otherwise it is OK. Then, in this order:

    STOP    rule 3: no commit seen for longer than the window spans (now - last > last - first),
            unless a recent log-end offset shows the consumer had caught up (PR #338)
    REWIND  rule 2: the committed offset went backwards and has not come back since (PR #716)
    OK      rule 1: the lag was within the allowed lag at some commit in the window
    STALL   rule 4: every commit in the window has the same offset, with lag
    WARN    rule 5: offsets advance but the lag never decreased across the window
    OK      none of the above

A group is the worst of its partitions, with STOP, STALL and REWIND reported as ERR.

Where this differs from Burrow, and why: Burrow reads every commit from `__consumer_offsets`
with its commit time; we sample the committed offsets (OffsetFetch), which carry no time.
`teleprompter.consumer_groups.sampling` therefore decides what counts as a commit (see there).
Burrow evaluates a window of any length, and with a single commit rule 4 holds vacuously; we
need at least two samples before rules 2-5 are judged: with fewer, only the current lag is
(and a lagging partition is OK with a rule that says the window is too short), much as
Burrow's `minimum-complete` leaves incomplete windows OK.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

logger = logging.getLogger(__name__)

PartitionStatus = Literal["OK", "WARN", "STOP", "STALL", "REWIND"]
GroupStatus = Literal["OK", "WARN", "ERR"]
Status = PartitionStatus | GroupStatus

MIN_SAMPLES: Final = 2
# Severity order, Burrow's StatusConstant order.
_SEVERITY: Final[dict[str, int]] = {
    "OK": 1,
    "WARN": 2,
    "ERR": 3,
    "STOP": 4,
    "STALL": 5,
    "REWIND": 6,
}


@dataclass(frozen=True, kw_only=True)
class Commit:
    """One committed offset in the window (Burrow's ConsumerOffset): when, and the lag then."""

    offset: int
    timestamp_ms: float
    lag: int | None


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A status and the rule that decided it, in words."""

    status: Status
    rule: str


@dataclass(frozen=True, kw_only=True)
class PartitionWindow:
    """What the evaluator sees of one partition."""

    commits: Sequence[Commit]
    log_ends: Sequence[int]
    current_lag: int
    now_ms: float
    samples: int


def evaluate_partition(  # noqa: PLR0911  # one return per rule, in Burrow's order
    window: PartitionWindow, *, allowed_lag: int = 0
) -> Verdict:
    """Burrow's rules over one partition's window, worst first; see the module docstring."""
    commits = window.commits
    if window.current_lag <= allowed_lag:
        return Verdict(status="OK", rule=f"current lag {window.current_lag} <= {allowed_lag}")
    if not commits or window.samples < MIN_SAMPLES:
        return Verdict(
            status="OK",
            rule=f"lag {window.current_lag}: {window.samples} sample(s), rules 2-5 need "
            f"{MIN_SAMPLES} or more",
        )
    if commits_stopped(commits, now_ms=window.now_ms) and not recent_lag_zero(
        commits, window.log_ends
    ):
        idle_s = (window.now_ms - commits[-1].timestamp_ms) / 1000.0
        span_s = (commits[-1].timestamp_ms - commits[0].timestamp_ms) / 1000.0
        return Verdict(
            status="STOP",
            rule=f"rule 3: no commit seen for {idle_s:.1f} s, "
            f"longer than the window's {span_s:.1f} s",
        )
    rewind = rewind_index(commits)
    if rewind > 0 and not rewind_recovered(commits, rewind):
        return Verdict(
            status="REWIND",
            rule=f"rule 2: offset went back from {commits[rewind - 1].offset} to "
            f"{commits[rewind].offset} and has not returned",
        )
    if not lag_always_above(commits, allowed_lag):
        return Verdict(status="OK", rule=f"rule 1: lag was <= {allowed_lag} within the window")
    if offsets_stalled(commits):
        return Verdict(
            status="STALL",
            rule=f"rule 4: offset stuck at {commits[-1].offset} with lag {window.current_lag}",
        )
    if lag_not_decreasing(commits):
        lags = [c.lag for c in commits if c.lag is not None]
        return Verdict(
            status="WARN",
            rule=f"rule 5: offsets advance but lag never decreased ({lags[0]} -> {lags[-1]})",
        )
    return Verdict(status="OK", rule="offsets advance and lag decreases")


def evaluate_group(verdicts: Iterable[tuple[str, Verdict]]) -> Verdict:
    """The worst partition decides; STOP, STALL and REWIND count as ERR for the group."""
    worst: tuple[str, Verdict] | None = None
    for name, verdict in verdicts:
        if worst is None or _SEVERITY[verdict.status] > _SEVERITY[worst[1].status]:
            worst = (name, verdict)
    if worst is None:
        return Verdict(status="OK", rule="no committed offsets to judge")
    name, verdict = worst
    if verdict.status == "OK":
        return Verdict(status="OK", rule="every partition OK")
    status: GroupStatus = "WARN" if verdict.status == "WARN" else "ERR"
    return Verdict(status=status, rule=f"{name} {verdict.status}: {verdict.rule}")


# --- Burrow's rules, one function each, named after what they check -------------------------
def lag_always_above(commits: Sequence[Commit], allowed_lag: int) -> bool:
    """Rule 1 (inverted, as Burrow's isLagAlwaysNotZero): no commit had lag within allowed."""
    return not any(c.lag is not None and c.lag <= allowed_lag for c in commits)


def rewind_index(commits: Sequence[Commit]) -> int:
    """Rule 2: the index of the first commit whose offset is below the one before; -1 if none."""
    for i in range(1, len(commits)):
        if commits[i].offset < commits[i - 1].offset:
            return i
    return -1


def rewind_recovered(commits: Sequence[Commit], index: int) -> bool:
    """Rule 2, part 2: a later commit reached the offset from before the rewind."""
    before = commits[index - 1].offset
    return any(c.offset >= before for c in commits[index:])


def commits_stopped(commits: Sequence[Commit], *, now_ms: float) -> bool:
    """Rule 3: the time since the last commit exceeds the time the window spans."""
    first, last = commits[0].timestamp_ms, commits[-1].timestamp_ms
    return (now_ms - last) > (last - first)


def offsets_stalled(commits: Sequence[Commit]) -> bool:
    """Rule 4: every commit in the window has the same offset."""
    return all(commits[i].offset == commits[i - 1].offset for i in range(1, len(commits)))


def lag_not_decreasing(commits: Sequence[Commit]) -> bool:
    """Rule 5: the lag never decreased from one commit (with a known lag) to the next."""
    last: int | None = None
    for commit in commits:
        if commit.lag is None:
            continue
        if last is not None and commit.lag < last:
            return False
        last = commit.lag
    return True


def recent_lag_zero(commits: Sequence[Commit], log_ends: Sequence[int]) -> bool:
    """PR #338: a recent log-end offset was at or below the last commit (it had caught up)."""
    last = commits[-1].offset
    return any(end <= last for end in log_ends)
