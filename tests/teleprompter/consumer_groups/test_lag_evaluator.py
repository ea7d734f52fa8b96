"""Burrow's evaluation rules, one window per rule, from Burrow's own rule table (caching_test.go).

Timestamps are milliseconds, as Burrow stores them; `now_ms` plays Burrow's timeNow.
"""

from __future__ import annotations

import pytest

from teleprompter.consumer_groups.lag_evaluator import (
    Commit,
    PartitionWindow,
    Verdict,
    commits_stopped,
    evaluate_group,
    evaluate_partition,
    lag_always_above,
    lag_not_decreasing,
    offsets_stalled,
    recent_lag_zero,
    rewind_index,
    rewind_recovered,
)


def commits(*rows: tuple[int, int, int | None]) -> list[Commit]:
    """(offset, timestamp in s, lag) rows as commits."""
    return [Commit(offset=o, timestamp_ms=t * 1000.0, lag=lag) for o, t, lag in rows]


def judge(
    window: list[Commit],
    *,
    log_ends: list[int],
    current_lag: int,
    now_s: float,
    allowed_lag: int = 0,
) -> Verdict:
    return evaluate_partition(
        PartitionWindow(
            commits=window,
            log_ends=log_ends,
            current_lag=current_lag,
            now_ms=now_s * 1000.0,
            samples=len(window),
        ),
        allowed_lag=allowed_lag,
    )


ADVANCING_FROM_ZERO = commits(
    (1000, 100, 0), (2000, 200, 50), (3000, 300, 100), (4000, 400, 150), (5000, 500, 200)
)
ADVANCING_ALWAYS_LAGGING = commits(
    (1000, 100, 50), (2000, 200, 100), (3000, 300, 150), (4000, 400, 200), (5000, 500, 250)
)
STUCK_ALWAYS_LAGGING = commits(
    (1000, 100, 100), (1000, 200, 150), (1000, 300, 200), (1000, 400, 250), (1000, 500, 300)
)


# --- one window per rule --------------------------------------------------------------------
def test_rule_1_zero_lag_somewhere_in_the_window_is_ok() -> None:
    # Burrow test 0: lag rises, but it was zero at the first commit.
    verdict = judge(ADVANCING_FROM_ZERO, log_ends=[5200], current_lag=200, now_s=600)

    assert verdict.status == "OK"
    assert verdict.rule == "rule 1: lag was <= 0 within the window"


def test_rule_2_a_rewind_not_caught_up_is_rewind() -> None:
    # Burrow test 15: back from 3000 to 2000, only at 2500 by the end of the window.
    window = commits(
        (1000, 100, 100), (2000, 200, 150), (3000, 300, 200), (2000, 400, 1250), (2500, 500, 300)
    )

    verdict = judge(window, log_ends=[4300], current_lag=300, now_s=600)

    assert verdict == Verdict(
        status="REWIND", rule="rule 2: offset went back from 3000 to 2000 and has not returned"
    )


def test_rule_2_a_rewind_that_caught_up_is_judged_by_the_other_rules() -> None:
    # Burrow test 7: the rewind recovered (4000 >= 3000) and the lag decreased: OK.
    window = commits(
        (1000, 100, 100), (2000, 200, 150), (3000, 300, 200), (2000, 400, 1250), (4000, 500, 300)
    )

    assert judge(window, log_ends=[4300], current_lag=300, now_s=600).status == "OK"


def test_rule_3_no_commit_for_longer_than_the_window_is_stop() -> None:
    # Burrow test 3: 500 s since the last commit, the window spans 400 s.
    verdict = judge(ADVANCING_ALWAYS_LAGGING, log_ends=[5250], current_lag=250, now_s=1000)

    assert verdict == Verdict(
        status="STOP", rule="rule 3: no commit seen for 500.0 s, longer than the window's 400.0 s"
    )


def test_rule_3_fires_even_when_the_lag_was_once_zero() -> None:
    # Burrow test 2 (issue #290): STOP is checked before rule 1.
    assert judge(ADVANCING_FROM_ZERO, log_ends=[5200], current_lag=200, now_s=1000).status == (
        "STOP"
    )


def test_rule_3_needs_strictly_longer_than_the_window() -> None:
    # Burrow test 1: 400 s since the last commit equals the window's span: not stopped.
    assert judge(ADVANCING_FROM_ZERO, log_ends=[5200], current_lag=200, now_s=900).status == "OK"


def test_rule_3_is_deferred_while_a_recent_log_end_shows_the_consumer_caught_up() -> None:
    # Burrow test 10 (PR #338): one new record, and a log end at the last commit moments ago.
    window = commits(*[(792748079 + i, 1512224618 + i, 0) for i in range(15)])

    verdict = judge(
        window,
        log_ends=[792748094, 792748093, 792748093, 792748093],
        current_lag=1,
        now_s=1512224650,
    )

    assert verdict.status == "OK"


def test_rule_4_the_same_offset_committed_with_lag_is_stall() -> None:
    # Burrow test 5.
    verdict = judge(STUCK_ALWAYS_LAGGING, log_ends=[1300], current_lag=300, now_s=600)

    assert verdict == Verdict(status="STALL", rule="rule 4: offset stuck at 1000 with lag 300")


def test_rule_5_advancing_offsets_with_lag_that_never_decreases_is_warn() -> None:
    window = commits((1000, 100, 50), (2000, 200, 100), (3000, 300, 100), (4000, 400, 150))

    verdict = judge(window, log_ends=[4150], current_lag=150, now_s=450)

    assert verdict == Verdict(
        status="WARN", rule="rule 5: offsets advance but lag never decreased (50 -> 150)"
    )


def test_current_lag_within_the_allowed_lag_is_always_ok() -> None:
    # Burrow test 8: would be STOP by its timestamps, but there is no lag now.
    verdict = judge(ADVANCING_ALWAYS_LAGGING, log_ends=[5250], current_lag=0, now_s=1000)

    assert verdict == Verdict(status="OK", rule="current lag 0 <= 0")


def test_allowed_lag_raises_the_bar_for_every_rule() -> None:
    # Burrow tests 12 and 13.
    window = commits((1000, 100, 2), (2000, 200, 1), (2000, 300, 1))
    assert judge(window, log_ends=[2001], current_lag=1, now_s=550, allowed_lag=1).status == "OK"
    assert (
        judge(STUCK_ALWAYS_LAGGING, log_ends=[1300], current_lag=300, now_s=600, allowed_lag=99)
    ).status == "STALL"


def test_one_sample_judges_only_the_current_lag() -> None:
    # Burrow's rule 4 holds vacuously for one commit; we wait for a window instead.
    verdict = judge(commits((1000, 100, 40)), log_ends=[1040], current_lag=40, now_s=100)

    assert verdict == Verdict(status="OK", rule="lag 40: 1 sample(s), rules 2-5 need 2 or more")


# --- the rule functions against Burrow's expectations ---------------------------------------
@pytest.mark.parametrize(
    ("window", "now_s", "log_ends", "expected"),
    [
        # Burrow test 0: (isLagAlwaysNotZero, rewind, stopped, stalled, notDecreasing, recent0)
        (ADVANCING_FROM_ZERO, 600, [5200], (False, -1, False, False, True, False)),
        (ADVANCING_ALWAYS_LAGGING, 1000, [5250], (True, -1, True, False, True, False)),
        (STUCK_ALWAYS_LAGGING, 600, [1300], (True, -1, False, True, True, False)),
        (
            commits(
                (1000, 100, 100),
                (2000, 200, 150),
                (3000, 300, 200),
                (2000, 400, 1250),
                (4000, 500, 300),
            ),
            600,
            [4300],
            (True, 3, False, False, False, False),
        ),
    ],
)
def test_rule_functions_match_burrow(
    window: list[Commit],
    now_s: float,
    log_ends: list[int],
    expected: tuple[bool, int, bool, bool, bool, bool],
) -> None:
    assert (
        lag_always_above(window, 0),
        rewind_index(window),
        commits_stopped(window, now_ms=now_s * 1000),
        offsets_stalled(window),
        lag_not_decreasing(window),
        recent_lag_zero(window, log_ends),
    ) == expected


def test_a_rewind_recovers_once_a_later_commit_reaches_the_old_offset() -> None:
    window = commits((3000, 1, 0), (2000, 2, 0), (2999, 3, 0), (3000, 4, 0))
    assert rewind_index(window) == 1
    assert rewind_recovered(window, 1)
    assert not rewind_recovered(window[:3], 1)


def test_unknown_lags_are_skipped_by_rule_5() -> None:
    # Burrow test 11: commits without a lag do not count.
    window = commits((1000, 100, 10), (1500, 150, None), (2000, 200, 5))
    assert not lag_not_decreasing(window)


# --- the group ------------------------------------------------------------------------------
def test_the_group_is_its_worst_partition_with_stop_stall_and_rewind_as_err() -> None:
    ok = Verdict(status="OK", rule="current lag 0 <= 0")
    warn = Verdict(status="WARN", rule="rule 5: ...")
    stall = Verdict(status="STALL", rule="rule 4: offset stuck at 3 with lag 7")

    assert evaluate_group([("t[0]", ok)]) == Verdict(status="OK", rule="every partition OK")
    assert evaluate_group([("t[0]", ok), ("t[1]", warn)]) == Verdict(
        status="WARN", rule="t[1] WARN: rule 5: ..."
    )
    assert evaluate_group([("t[0]", warn), ("t[1]", stall), ("t[2]", ok)]) == Verdict(
        status="ERR", rule="t[1] STALL: rule 4: offset stuck at 3 with lag 7"
    )
    assert evaluate_group([]).status == "OK"
