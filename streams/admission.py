"""The circuit breaker in front of the LLM: at most M streams at once, at most N waiting."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

logger = logging.getLogger(__name__)


class AdmissionRefusedError(Exception):
    """Every stream slot is busy and the waiting line is full: the turn is throttled."""


class AdmissionGate:
    """Admits suggestion streams up to the LLM endpoint's capacity.

    A turn that finds every slot busy may wait, but only while fewer than `max_waiting` others
    wait; beyond that it is refused at once, so overload shows as `throttled`, never as a queue
    that grows until every answer is late.

    Speculations count as streams, but never at a turn's expense: `lend` gives one a slot only
    when a slot is free and no turn waits (it never waits), and a turn that finds every slot
    busy makes the oldest speculation holding a lent slot give it up, and takes it.
    """

    def __init__(self, *, max_active: int = 64, max_waiting: int = 3) -> None:
        self._max_active = max_active
        self._max_waiting = max_waiting
        self._active = 0
        # Turns waiting for a slot, first come first served; a release hands its slot over.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._lent: list[LentSlot] = []  # oldest first

    @property
    def active(self) -> int:
        """Streams holding a slot, speculations included."""
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def lent(self) -> int:
        """Slots lent to speculations that a turn may still take."""
        return sum(1 for slot in self._lent if slot.lent)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one stream slot for the body; raises AdmissionRefusedError when over capacity."""
        if self._active < self._max_active and not self._waiters:
            self._active += 1
        else:
            took_lent = self._reclaim_lent()
            if not took_lent and len(self._waiters) >= self._max_waiting:
                raise AdmissionRefusedError(
                    f"{self._max_active} suggestions streaming and {len(self._waiters)} waiting"
                )
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # resolved when a slot is handed over; `active` already counts it
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed over as we were cancelled: pass it on
                else:
                    self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def lend(self, *, on_needed: Callable[[], None]) -> LentSlot | None:
        """A slot for work that may be dropped (a speculation), if one is free and no turn waits.

        Never waits: None when there is none. Until `keep()`, a turn that finds every slot busy
        calls `on_needed`, which must make the work end and `release()` the slot, soon.
        """
        if self._active >= self._max_active or self._waiters:
            return None
        self._active += 1
        slot = LentSlot(on_needed=on_needed, on_release=self._give_back)
        self._lent.append(slot)
        return slot

    def _give_back(self, slot: LentSlot) -> None:
        self._lent.remove(slot)
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    def _reclaim_lent(self) -> bool:
        """Make the oldest speculation give its slot up; False if none holds a lent one."""
        for slot in self._lent:
            if slot.lent:
                slot.give_up()
                return True
        return False


class LentSlot:
    """A stream slot lent to a speculation: given up when a turn needs it, until kept."""

    def __init__(
        self, *, on_needed: Callable[[], None], on_release: Callable[[LentSlot], None]
    ) -> None:
        self._on_needed = on_needed
        self._on_release = on_release
        self._released = False
        self.lent = True

    def keep(self) -> None:
        """The speculation became a turn's suggestion: the slot is no longer given up."""
        self.lent = False

    def give_up(self) -> None:
        """A turn needs the slot: the speculation is told to end (once)."""
        if self.lent:
            self.lent = False
            self._on_needed()

    def release(self) -> None:
        """The stream is over: the slot goes back to the gate (once)."""
        if not self._released:
            self._released = True
            self._on_release(self)
