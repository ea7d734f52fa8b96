"""The health probes against real endpoints: the LLM simulator, a real Kafka, and dead ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.kafka.groups import GroupAdmin
from streams.observability.health import Check, HealthReport, WorkerProbe, probe_kafka, probe_llm
from tests.group_workload import PARTITIONS, Workload


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def answering(status: int) -> TestServer:
    """An endpoint that answers every request with `status`, as a broken LLM gateway might."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "no"}}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    return server


# --- the LLM endpoint -----------------------------------------------------------------------
async def test_the_simulator_is_up(http: aiohttp.ClientSession, sim: TestServer) -> None:
    base = str(sim.make_url("/v1"))

    check = await probe_llm(http, base_url=base, api_key="k")

    assert check == Check(ok=True, detail=f"LLM endpoint {base} answered 200")


async def test_a_closed_port_is_unreachable(http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{closed_port()}/v1"

    check = await probe_llm(http, base_url=base, api_key="k")

    assert not check.ok
    assert check.detail.startswith(f"LLM endpoint {base} unreachable: ")


@pytest.mark.parametrize(
    ("status", "ok", "says"),
    [
        (503, False, "failing (503)"),
        (401, False, "refused our API key (401)"),
        (404, True, "answered 404"),
    ],
)
async def test_what_an_answer_means(
    http: aiohttp.ClientSession, status: int, ok: bool, says: str
) -> None:
    server = await answering(status)
    try:
        base = str(server.make_url("/v1"))
        check = await probe_llm(http, base_url=base, api_key="k")
    finally:
        await server.close()

    assert check == Check(ok=ok, detail=f"LLM endpoint {base} {says}")


# --- Kafka ----------------------------------------------------------------------------------
async def test_kafka_answers_with_the_lag_of_the_assigned_partitions(workload: Workload) -> None:
    admin = GroupAdmin(bootstrap_servers=workload.bootstrap_servers)
    with workload.member() as member:
        member.commit({0: 4, 1: 10})

        probed = await probe_kafka(
            admin,
            group_id=workload.group,
            assigned=[(workload.topic, p) for p in range(PARTITIONS)],
        )

    assert probed.check.ok, probed.check.detail
    # Partition 2 has no committed offset: its lag is unknown, so it has no series.
    assert probed.lags == ((workload.topic, 0, 6), (workload.topic, 1, 0))


async def test_unreachable_kafka_is_down() -> None:
    servers = f"127.0.0.1:{closed_port()}"
    admin = GroupAdmin(bootstrap_servers=servers, timeout_s=1.0)

    probed = await probe_kafka(admin, group_id="g", assigned=[("t", 0)])

    assert not probed.check.ok
    assert servers in probed.check.detail
    assert probed.lags == ()


async def test_the_report_is_healthy_only_when_every_check_is(
    http: aiohttp.ClientSession, sim: TestServer, bootstrap_servers: str
) -> None:
    assert HealthReport().as_json()["status"] == "starting"
    probe = WorkerProbe(
        admin=GroupAdmin(bootstrap_servers=bootstrap_servers),
        group_id="nobody-home",
        assignment=list,
        llm_base_url=str(sim.make_url("/v1")),
        llm_api_key="k",
    )

    healthy = await probe.run_once(http)
    await sim.close()
    degraded = await probe.run_once(http)

    assert healthy.healthy
    assert healthy.as_json()["status"] == "ok"
    assert not degraded.healthy
    body = degraded.as_json()
    assert body["status"] == "degraded"
    assert body["checks"]["kafka"]["ok"] is True  # type: ignore[index]
    assert body["checks"]["llm"]["ok"] is False  # type: ignore[index]
