"""A clock for code that takes one: seconds pass only when a test says so."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ManualClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now
