"""AdmissionGate: M streams at once, N waiting, the rest refused at once."""

from __future__ import annotations

import asyncio

import pytest

from streams.admission import AdmissionGate, AdmissionRefusedError
from tests.waiting import wait_until


async def test_admits_up_to_max_active_then_queues_then_refuses() -> None:
    gate = AdmissionGate(max_active=2, max_waiting=1)
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(n: int) -> None:
        async with gate.slot():
            entered.append(n)
            await release.wait()

    holders = [asyncio.create_task(hold(n)) for n in range(3)]
    await wait_until(lambda: gate.active == 2 and gate.waiting == 1, what="two active, one waiting")

    with pytest.raises(AdmissionRefusedError, match="2 suggestions streaming and 1 waiting"):
        async with gate.slot():
            pass

    release.set()
    await asyncio.wait_for(asyncio.gather(*holders), 5)
    assert sorted(entered) == [0, 1, 2]
    assert gate.active == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    gate = AdmissionGate(max_active=1, max_waiting=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await wait_until(lambda: gate.active == 1, what="one active")
    waiter = asyncio.create_task(hold())
    await wait_until(lambda: gate.waiting == 1, what="one waiting")
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert gate.waiting == 0
    release.set()
    await asyncio.wait_for(holder, 5)
    assert gate.active == 0
