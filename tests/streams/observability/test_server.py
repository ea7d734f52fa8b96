"""A real worker serves /metrics and /healthz: healthy under the whole system, degraded alone.

The first test runs in the suite's shared system (gateway, worker, LLM simulator on the session's
Kafka). The second runs one worker of its own against a broker of its own, so that it can point
the worker at a dead LLM endpoint and then take its Kafka away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from core.settings import load_settings
from schemas.codec import default_codec
from schemas.events import TranscriptSegment
from streams.observability.metrics import LLM_TTFT_STAGE
from teleprompter.local_system import LocalSystem
from tests.broker.helpers import BrokerProcess
from tests.system_fixtures import RepClientFactory

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TIMEOUT_S = 60.0


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/healthz") as response:
        return response.status, await response.json()


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    return sum(
        value
        for (sample, series), value in samples.items()
        if sample == name and set(labels.items()) <= set(series)
    )


async def eventually(check: Any, *, what: str, timeout_s: float = TIMEOUT_S) -> Any:
    """Await `check()` until it returns something truthy; fail naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.2)  # the worker offers no event to wait on from outside


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_the_worker_reports_turns_outcomes_stages_conversations_and_lag(
    system: LocalSystem, rep_client: RepClientFactory, http: aiohttp.ClientSession
) -> None:
    [url] = system.worker_urls.values()
    before = await scrape(http, url)

    async with rep_client() as rep:
        await rep.say("Do you offer a discount for annual plans?")
        await rep.wait_for("suggestion_complete", timeout_s=TIMEOUT_S)

        async def counted() -> Samples | None:
            now = await scrape(http, url)
            done = total(now, "teleprompter_worker_suggestions_total", kind="complete")
            return (
                now
                if done > total(before, "teleprompter_worker_suggestions_total", kind="complete")
                else None
            )

        after = await eventually(counted, what="the complete suggestion to be counted")
        assert total(after, "teleprompter_worker_turns_total") > total(
            before, "teleprompter_worker_turns_total"
        )

        # The worker answered the turn it made at once; the turns topic's copy came back
        # and was skipped, not answered a second time.
        skipped = "teleprompter_worker_turns_skipped_total"

        async def copy_skipped() -> Samples | None:
            now = await scrape(http, url)
            return now if total(now, skipped) > total(before, skipped) else None

        await eventually(copy_skipped, what="the turns topic's copy to be skipped")
        [complete] = rep.of_type("suggestion_complete")
        deltas = rep.of_type("suggestion_delta", turn_id=complete["turn_id"])
        assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
        ttft = "teleprompter_worker_stage_latency_seconds_count"
        assert total(after, ttft, stage=LLM_TTFT_STAGE) > total(before, ttft, stage=LLM_TTFT_STAGE)
        assert total(after, "teleprompter_worker_conversations") >= 1

    async def lag_reported() -> bool:
        return any(
            name == "teleprompter_worker_consumer_lag" for name, _ in await scrape(http, url)
        )

    await eventually(lag_reported, what="consumer lag series for the worker's partitions")
    status, body = await health(http, url)
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["kafka"]["ok"] and body["checks"]["llm"]["ok"]

    async with http.get(f"{system.http_url}/metrics") as response:
        gateway = await response.text()
    assert f'stage="{LLM_TTFT_STAGE}"' in gateway


@pytest.mark.slow
async def test_a_worker_turns_degraded_without_its_llm_and_then_its_kafka(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    broker = BrokerProcess(tmp_path / "broker")
    bootstrap = await asyncio.to_thread(broker.start)
    worker: asyncio.subprocess.Process | None = None
    try:
        settings = load_settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix="obs",
            partitions=2,
            data_dir=tmp_path,
            openai_base_url=f"http://127.0.0.1:{_closed_port()}/v1",
            worker_http_port=0,
        )
        catalog = TopicCatalog.from_settings(settings)
        await TopicAdmin(bootstrap_servers=bootstrap).ensure_topics(catalog.shared_topics)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teleprompter",
            "worker",
            env={
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "OPENAI_BASE_URL": settings.llm_base_url,
                "TELEPROMPTER_TOPIC_PREFIX": "obs",
                "TELEPROMPTER_PARTITIONS": "2",
                "TELEPROMPTER_DATA_DIR": str(tmp_path),
                "TELEPROMPTER_WORKER_HTTP_PORT": "0",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        url = await asyncio.wait_for(_announced_url(worker), TIMEOUT_S)

        async def llm_down() -> dict[str, Any] | None:
            status, body = await health(http, url)
            checks = body.get("checks", {})
            if status == 503 and checks.get("kafka", {}).get("ok") and "llm" in checks:
                return body
            return None

        body = await eventually(llm_down, what="a probe with Kafka up and the LLM down")
        assert body["status"] == "degraded"
        assert body["checks"]["llm"]["ok"] is False
        assert "unreachable" in body["checks"]["llm"]["detail"]

        # A customer sentence makes a turn, whose suggestion fails on the dead endpoint.
        segment = TranscriptSegment(
            conversation_id="c-obs",
            session_id="s-1",
            segment_id="seg-1",
            speaker="customer",
            text="Can I pay by invoice?",
            final=True,
        )
        await asyncio.to_thread(_produce, bootstrap, catalog.transcripts.name, segment)

        async def llm_error_counted() -> Samples | None:
            samples = await scrape(http, url)
            return samples if total(samples, "teleprompter_worker_llm_errors_total") else None

        samples = await eventually(llm_error_counted, what="the LLM error to be counted")
        assert total(samples, "teleprompter_worker_llm_errors_total", kind="unavailable") == 1
        assert total(samples, "teleprompter_worker_turns_total") == 1
        outcomes = {
            dict(series)["kind"]
            for name, series in samples
            if name == "teleprompter_worker_suggestions_total"
        }
        assert outcomes & {"cancelled", "failed"}, samples

        await asyncio.to_thread(broker.kill)

        async def kafka_down() -> dict[str, Any] | None:
            status, body = await health(http, url)
            return body if status == 503 and not body["checks"]["kafka"]["ok"] else None

        body = await eventually(kafka_down, what="a probe with Kafka gone")
        assert bootstrap in body["checks"]["kafka"]["detail"]
        assert total(await scrape(http, url), "teleprompter_worker_healthy", check="kafka") == 0
    finally:
        if worker is not None:
            # Killed, not stopped: a worker whose Kafka is gone takes its full grace to stop,
            # and its shutdown is not what this test is about.
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            await worker.wait()
        await asyncio.to_thread(broker.kill)


async def _announced_url(worker: asyncio.subprocess.Process) -> str:
    assert worker.stdout is not None
    async for raw in worker.stdout:
        found = re.search(r"worker metrics at (http://\S+)/metrics", raw.decode(errors="replace"))
        if found:
            # Keep reading its output so a full pipe never blocks the worker.
            asyncio.get_running_loop().create_task(_drain(worker))
            return found.group(1)
    raise AssertionError("the worker exited before announcing its metrics URL")


async def _drain(worker: asyncio.subprocess.Process) -> None:
    assert worker.stdout is not None
    async for _ in worker.stdout:
        pass


def _produce(bootstrap: str, topic: str, segment: TranscriptSegment) -> None:
    # A producer of its own that ends here, before the test takes its broker away.
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, default_codec().encode(segment), segment.key)
    assert producer.flush(20) == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
