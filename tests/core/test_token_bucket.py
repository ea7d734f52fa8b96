"""Token buckets, on a clock the tests turn by hand."""

from __future__ import annotations

import pytest

from core.token_bucket import TokenBucket
from tests.manual_clock import ManualClock


def test_a_bucket_starts_full_spends_and_refills_at_its_rate() -> None:
    clock = ManualClock(now=100.0)
    bucket = TokenBucket(rate_per_s=10.0, burst=5.0, clock=clock)
    for _ in range(5):
        assert bucket.can_take(1)
        bucket.take(1)
    assert not bucket.can_take(1)
    clock.now += 0.25  # 2.5 tokens
    assert bucket.can_take(2)
    assert not bucket.can_take(3)
    clock.now += 60.0  # never more than the burst
    assert bucket.tokens == 5.0


def test_a_bucket_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0.0, burst=1.0)
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=1.0, burst=0.0)


def test_a_debt_is_paid_off_by_the_refill_before_anything_can_be_taken() -> None:
    clock = ManualClock(now=100.0)
    bucket = TokenBucket(rate_per_s=0.25, burst=1.0, clock=clock)
    bucket.take(2.0)  # a decode's cost, known once it ran
    assert bucket.tokens == -1.0
    assert bucket.seconds_until(0.0) == 4.0
    assert bucket.seconds_until(0.5) == 6.0
    clock.now += 4.0
    assert bucket.can_take(0.0) and not bucket.can_take(0.5)
