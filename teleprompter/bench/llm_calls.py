"""How many suggestion streams the LLM endpoint served during a run, and how speculations ended.

Streams come from the LLM simulator's own records (`GET /v1/sim/stats`): every streamed request
that started while the script played (summaries are not streamed), and whether the client
closed it before its end. Speculation outcomes come from each worker's `/metrics`
(`teleprompter_worker_speculations_total`), counted since the worker started.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from teleprompter.bench.report import LlmCalls

logger = logging.getLogger(__name__)

SPECULATIONS_METRIC: Final = "teleprompter_worker_speculations"
# The simulator remembers this many requests; more than a long run at 1,000 sessions makes.
STATS_LIMIT: Final = 10_000
TIMEOUT_S: Final = 30.0


async def count_llm_calls(
    llm_base_url: str, *, since_ms: float, turns_sent: int, worker_urls: Iterable[str]
) -> LlmCalls | None:
    """The streams the endpoint served since `since_ms` (Unix ms); None if it does not say."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        url = f"{llm_base_url.rstrip('/')}/sim/stats"
        try:
            async with http.get(url, params={"limit": str(STATS_LIMIT)}) as response:
                response.raise_for_status()
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.info("LLM calls not counted: %s: %s", url, exc)
            return None
        streams = [
            record
            for record in body.get("requests", {}).values()
            if record.get("stream") and record.get("started_at_ms", 0) >= since_ms
        ]
        speculations: Counter[str] = Counter()
        for worker_url in worker_urls:
            speculations.update(await _speculations(http, worker_url))
    return LlmCalls(
        streams=len(streams),
        turns_sent=turns_sent,
        closed_early=sum(1 for record in streams if record.get("outcome") == "disconnected"),
        speculations=dict(speculations),
    )


async def _speculations(http: aiohttp.ClientSession, worker_url: str) -> Counter[str]:
    """Speculations by outcome from one worker's /metrics; none if it cannot be read."""
    counts: Counter[str] = Counter()
    try:
        async with http.get(f"{worker_url.rstrip('/')}/metrics") as response:
            response.raise_for_status()
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.info("speculations of %s not counted: %s", worker_url, exc)
        return counts
    for family in text_string_to_metric_families(text):
        if family.name != SPECULATIONS_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["outcome"]] += int(sample.value)
    return counts
