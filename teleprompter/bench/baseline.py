"""The floor: the same prompts sent straight to the LLM endpoint, and the endpoint's own timings.

`run_baseline` replays the schedule without gateway or Kafka: each conversation's lines go
into a `ConversationContext` at their scripted times, and at each customer turn the prompt the
worker would build is streamed from the endpoint through the worker's own `SuggestionModel`
(same openai client, same settings), open-loop like the load itself. What this process sees
as time to first token is the floor our pipes are measured against.

`endpoint_ttfts` asks the LLM simulator (`GET /v1/sim/stats?request_id=`) for the time to first
token it measured for given request ids; an endpoint without that route has no such numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from streams.llm import LlmError, SuggestionModel
from streams.prompt import ConversationContext, Prompt, PromptBuilder
from teleprompter.bench.schedule import ConversationScript, Schedule

logger = logging.getLogger(__name__)

START_DELAY_S: Final = 0.5
STATS_BATCH: Final = 100  # request ids per stats query, to keep URLs short
STATS_TIMEOUT_S: Final = 30.0


class EndpointStatsUnavailableError(RuntimeError):
    """The LLM endpoint does not report its own timings (it is not our simulator)."""


@dataclass(kw_only=True)
class BaselineResult:
    client_ttft_ms: dict[str, float] = field(default_factory=dict)  # request id -> ms
    failures: Counter[str] = field(default_factory=Counter)
    requests: int = 0


async def run_baseline(
    schedule: Schedule,
    *,
    model: SuggestionModel,
    run_tag: str,
    on_start: Callable[[], None] | None = None,
) -> BaselineResult:
    """Stream every turn's prompt from `model` at its scripted time; time the first token."""
    result = BaselineResult()
    builder = PromptBuilder()
    loop = asyncio.get_running_loop()
    t0 = loop.time() + START_DELAY_S
    wall0_ms = time.time() * 1000.0 + START_DELAY_S * 1000.0
    streams: list[asyncio.Task[None]] = []

    async def one(prompt: Prompt, request_id: str) -> None:
        started = loop.time()
        first: float | None = None
        try:
            # The whole answer is read, as the worker does, so the endpoint carries the same load.
            async with contextlib.aclosing(model.stream(prompt, request_id=request_id)) as parts:
                async for fragment in parts:
                    if first is None and fragment:
                        first = loop.time()
        except LlmError as exc:
            result.failures[exc.kind] += 1
            return
        if first is not None:
            result.client_ttft_ms[request_id] = (first - started) * 1000.0

    async def conversation(script: ConversationScript) -> None:
        context = ConversationContext(f"baseline-{run_tag}-{script.index}")
        for line in script.lines:
            delay = t0 + line.end_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            context.add(line.speaker, line.text, at_ms=int(wall0_ms + line.end_s * 1000.0))
            if line.turn_key is not None:
                result.requests += 1
                request_id = baseline_request_id(run_tag, line.turn_key)
                streams.append(asyncio.create_task(one(builder.suggestion(context), request_id)))

    if on_start is not None:
        on_start()
    await asyncio.gather(*(conversation(script) for script in schedule.conversations))
    await asyncio.gather(*streams)
    return result


def baseline_request_id(run_tag: str, turn_key: str) -> str:
    return f"baseline-{run_tag}-{turn_key}"


async def endpoint_ttfts(base_url: str, request_ids: Iterable[str]) -> dict[str, float]:
    """Time to first token the endpoint measured, per request id it still remembers."""
    ids = list(request_ids)
    found: dict[str, float] = {}
    url = f"{base_url.rstrip('/')}/sim/stats"
    timeout = aiohttp.ClientTimeout(total=STATS_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for start in range(0, max(len(ids), 1), STATS_BATCH):
            params = [
                ("limit", "0"),
                *(("request_id", rid) for rid in ids[start : start + STATS_BATCH]),
            ]
            try:
                async with http.get(url, params=params) as response:
                    if response.status == 404:
                        raise EndpointStatsUnavailableError(
                            f"{url} answered 404: the LLM endpoint is not the simulator"
                        )
                    response.raise_for_status()
                    body = await response.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise EndpointStatsUnavailableError(f"{url}: {exc}") from exc
            for rid, record in body.get("requests", {}).items():
                ttft = record.get("ttft_ms")
                if isinstance(ttft, int | float):
                    found[rid] = float(ttft)
    return found
