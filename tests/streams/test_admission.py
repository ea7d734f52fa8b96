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


async def test_a_slot_is_lent_only_when_one_is_free_and_no_turn_waits() -> None:
    gate = AdmissionGate(max_active=2, max_waiting=1)
    first = gate.lend(on_needed=lambda: None)
    assert first is not None and gate.active == 1 and gate.lent == 1
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await wait_until(lambda: gate.active == 2, what="every slot busy")
    assert gate.lend(on_needed=lambda: None) is None

    first.keep()
    first.release()
    assert gate.active == 1 and gate.lent == 0
    waiter_line = [asyncio.create_task(hold()) for _ in range(2)]
    await wait_until(lambda: gate.waiting == 1 and gate.active == 2, what="a turn waiting")
    assert gate.lend(on_needed=lambda: None) is None  # a turn waits: it goes first
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, *waiter_line), 5)
    assert gate.active == 0


async def test_a_turn_finding_every_slot_busy_takes_a_lent_one_but_never_a_kept_one() -> None:
    gate = AdmissionGate(max_active=2, max_waiting=0)
    asked_back: list[str] = []
    kept = gate.lend(on_needed=lambda: asked_back.append("kept"))
    lent = gate.lend(on_needed=lambda: asked_back.append("lent"))
    assert kept is not None and lent is not None
    kept.keep()

    entered = asyncio.Event()

    async def turn() -> None:
        async with gate.slot():
            entered.set()

    task = asyncio.create_task(turn())
    await wait_until(lambda: asked_back == ["lent"], what="the lent slot asked back")
    assert not entered.is_set()  # it waits until the speculation has let go
    lent.release()
    await asyncio.wait_for(task, 5)

    async with gate.slot():  # with the kept one, every slot is busy again
        # Only a kept slot is left, and nobody may wait: refused at once.
        with pytest.raises(AdmissionRefusedError):
            async with gate.slot():
                pass
    assert asked_back == ["lent"]
    kept.release()
    assert gate.active == 0
