"""The circuit breaker in front of the LLM: at most M streams at once, at most N waiting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

logger = logging.getLogger(__name__)


class AdmissionRefusedError(Exception):
    """Every stream slot is busy and the waiting line is full: the turn is throttled."""


class AdmissionGate:
    """Admits suggestion streams up to the LLM endpoint's capacity.

    A turn that finds every slot busy may wait, but only while fewer than `max_waiting` others
    wait; beyond that it is refused at once, so overload shows as `throttled`, never as a queue
    that grows until every answer is late.
    """

    def __init__(self, *, max_active: int = 64, max_waiting: int = 3) -> None:
        self._slots = asyncio.Semaphore(max_active)
        self._max_active = max_active
        self._max_waiting = max_waiting
        self._active = 0
        self._waiting = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one stream slot for the body; raises AdmissionRefusedError when over capacity."""
        if self._slots.locked():
            if self._waiting >= self._max_waiting:
                raise AdmissionRefusedError(
                    f"{self._max_active} suggestions streaming and {self._waiting} waiting"
                )
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._slots.release()
