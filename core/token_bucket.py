"""A token bucket: a budget that refills at a steady rate up to a burst, on an injectable clock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class TokenBucket:
    """Holds up to `burst` tokens and refills at `rate_per_s`; `take(n)` spends n if it can.

    Hand-written rather than a library: the gateway needs a synchronous, non-waiting check
    per frame with a cost (bytes), and the decode scheduler a balance that may go into debt
    (a decode's cost is known only once it ran), which the async limiters on PyPI do not offer.
    """

    def __init__(
        self, *, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError(f"need rate_per_s > 0 and burst > 0 ({rate_per_s=}, {burst=})")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def can_take(self, amount: float) -> bool:
        self._refill()
        return amount <= self._tokens

    def take(self, amount: float) -> None:
        """Spend `amount` (call `can_take` first, or the balance may go negative: a debt that
        the refill pays off first)."""
        self._refill()
        self._tokens -= amount

    def seconds_until(self, amount: float) -> float:
        """How long until `can_take(amount)` holds, if nothing else is taken meanwhile."""
        self._refill()
        return max(0.0, amount - self._tokens) / self.rate_per_s

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
