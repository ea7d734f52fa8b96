"""LlmHealth: degraded after failures in a row, ok after a success or a probe that answers."""

from __future__ import annotations

from schemas.events import LlmState
from streams.llm_health import LlmHealth
from tests.waiting import wait_until


class Endpoint:
    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise RuntimeError("LLM endpoint http://llm answered 503")


async def test_failures_in_a_row_degrade_and_a_success_restores() -> None:
    changes: list[tuple[LlmState, str]] = []

    async def on_change(state: LlmState, reason: str) -> None:
        changes.append((state, reason))

    health = LlmHealth(probe=Endpoint().probe, on_change=on_change, failures_to_degrade=2)
    health.failed("answered 503")
    health.succeeded()
    health.failed("answered 503")
    assert health.state == "ok"  # one failure is a blip
    health.failed("timed out")
    assert (health.state, health.reason) == ("degraded", "timed out")
    health.succeeded()
    assert health.state == "ok"
    await wait_until(lambda: len(changes) == 2, what="two notices")
    assert changes == [("degraded", "timed out"), ("ok", "")]
    await health.close()


async def test_while_degraded_a_probe_notices_the_recovery() -> None:
    endpoint = Endpoint()
    changes: list[LlmState] = []

    async def on_change(state: LlmState, reason: str) -> None:
        changes.append(state)

    health = LlmHealth(
        probe=endpoint.probe, on_change=on_change, failures_to_degrade=1, probe_interval_s=0.01
    )
    health.failed("answered 503")
    await wait_until(lambda: endpoint.probes >= 2, what="probes while down")
    assert health.state == "degraded"
    endpoint.up = True
    await wait_until(lambda: health.state == "ok", what="recovery noticed")
    await wait_until(lambda: changes == ["degraded", "ok"], what="both notices")
    await health.close()
