"""Micro-benchmark of the LLM simulator: many concurrent streams, observed timing vs configured.

    python -m streams.llm_sim.bench --streams 500 --ttft-ms 300 --tokens-per-s 40

Starts `teleprompter llm-sim` on a free port (or uses `--url`), opens every stream at once,
and reports time to first token as seen by this client and as measured by the simulator,
per-stream token rate, and the simulator's CPU seconds: evidence that the simulator is not
the bottleneck when the latency benchmark puts hundreds of streams through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import aiohttp

logger = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 30.0
_SERVING: Final = re.compile(rb"llm-sim serving (http://\S+)")
PROMPTS: Final = (
    "Customer: Honestly, this is more expensive than what we pay today.",
    "Customer: We already use HubSpot for this, why would we switch?",
    "Customer: I was charged twice on my last invoice.",
    "Customer: Is your platform SOC 2 compliant?",
    "Customer: Can it integrate with our Salesforce instance?",
    "Customer: The dashboard has been down all morning.",
    "Customer: I need to talk to my manager before we decide.",
    "Customer: What's the weather like where you are?",
)


@dataclass(frozen=True, slots=True)
class StreamResult:
    index: int
    started_at_ms: float
    ttft_ms: float
    tokens: int
    duration_ms: float


@dataclass(frozen=True, slots=True)
class BenchReport:
    streams: int
    failed: int
    configured_ttft_ms: float
    configured_tokens_per_s: float
    client_ttft_ms_p50: float
    client_ttft_ms_p99: float
    client_ttft_ms_max: float
    sim_ttft_ms_p50: float
    sim_ttft_ms_p99: float
    sim_ttft_ms_max: float
    arrival_lag_ms_p50: float
    arrival_lag_ms_p99: float
    tokens_per_stream: float
    tokens_per_s_p50: float
    wall_s: float
    sim_cpu_s: float
    sim_cpu_share_of_one_core: float
    client_cpu_s: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@contextlib.asynccontextmanager
async def simulator(ttft_ms: float, tokens_per_s: float) -> AsyncIterator[str]:
    """A `teleprompter llm-sim` process on a free port, stopped with SIGTERM on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "llm-sim",
        "--port",
        "0",
        "--ttft-ms",
        str(ttft_ms),
        "--tokens-per-s",
        str(tokens_per_s),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (match := _SERVING.search(await process.stdout.readline())):
                if process.stdout.at_eof():
                    raise RuntimeError("llm-sim exited before serving")
        yield match.group(1).decode()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()


async def one_stream(
    session: aiohttp.ClientSession, url: str, index: int, *, max_tokens: int
) -> StreamResult:
    body = {
        "model": "teleprompter-sim",
        "messages": [
            {"role": "system", "content": "Suggest the rep's reply."},
            {"role": "user", "content": PROMPTS[index % len(PROMPTS)]},
        ],
        "stream": True,
        "max_tokens": max_tokens,
    }
    started_at_ms = time.time() * 1000.0
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with session.post(
        f"{url}/chat/completions", json=body, headers={"X-Request-Id": f"bench-{index}"}
    ) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    if first is None:
        raise RuntimeError(f"stream {index} carried no content")
    return StreamResult(
        index=index,
        started_at_ms=started_at_ms,
        ttft_ms=(first - started) * 1000.0,
        tokens=tokens,
        duration_ms=(ended - started) * 1000.0,
    )


async def run_bench(url: str, *, streams: int, max_tokens: int) -> BenchReport:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Open every connection first, as a worker's pool would be warm: this measures streams,
        # not a burst of TCP handshakes.
        await asyncio.gather(*(_warm_up(session, url) for _ in range(streams)))
        before = await _stats(session, url, limit=0)
        client_cpu = time.process_time()
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(one_stream(session, url, i, max_tokens=max_tokens) for i in range(streams)),
            return_exceptions=True,
        )
        wall_s = time.perf_counter() - started
        client_cpu_s = time.process_time() - client_cpu
        after = await _stats(session, url, limit=streams)
    results = [outcome for outcome in outcomes if isinstance(outcome, StreamResult)]
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            logger.warning("stream failed: %r", outcome)
    sim_ttfts = [
        record["ttft_ms"]
        for rid, record in after["requests"].items()
        if rid.startswith("bench-") and record["ttft_ms"] is not None
    ]
    client_ttfts = [result.ttft_ms for result in results]
    # From this client starting a request to the simulator's handler starting on it.
    arrival_lags = [
        after["requests"][f"bench-{result.index}"]["started_at_ms"] - result.started_at_ms
        for result in results
        if f"bench-{result.index}" in after["requests"]
    ]
    rates = [
        (result.tokens - 1) / ((result.duration_ms - result.ttft_ms) / 1000.0)
        for result in results
        if result.tokens > 1 and result.duration_ms > result.ttft_ms
    ]
    sim_cpu_s = after["cpu_s"] - before["cpu_s"]
    return BenchReport(
        streams=streams,
        failed=streams - len(results),
        configured_ttft_ms=after["ttft_ms"],
        configured_tokens_per_s=after["tokens_per_s"],
        client_ttft_ms_p50=percentile(client_ttfts, 0.50),
        client_ttft_ms_p99=percentile(client_ttfts, 0.99),
        client_ttft_ms_max=max(client_ttfts, default=math.nan),
        sim_ttft_ms_p50=percentile(sim_ttfts, 0.50),
        sim_ttft_ms_p99=percentile(sim_ttfts, 0.99),
        sim_ttft_ms_max=max(sim_ttfts, default=math.nan),
        arrival_lag_ms_p50=percentile(arrival_lags, 0.50),
        arrival_lag_ms_p99=percentile(arrival_lags, 0.99),
        tokens_per_stream=sum(r.tokens for r in results) / max(1, len(results)),
        tokens_per_s_p50=percentile(rates, 0.50),
        wall_s=wall_s,
        sim_cpu_s=sim_cpu_s,
        sim_cpu_share_of_one_core=sim_cpu_s / wall_s,
        client_cpu_s=client_cpu_s,
    )


async def _warm_up(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(f"{url}/models") as response:
        await response.read()


async def _stats(session: aiohttp.ClientSession, url: str, *, limit: int) -> dict[str, Any]:
    async with session.get(f"{url}/sim/stats", params={"limit": str(limit)}) as response:
        response.raise_for_status()
        stats: dict[str, Any] = await response.json()
        return stats


async def main_async(args: argparse.Namespace) -> BenchReport:
    if args.url:
        return await run_bench(args.url, streams=args.streams, max_tokens=args.max_tokens)
    async with simulator(args.ttft_ms, args.tokens_per_s) as url:
        return await run_bench(url, streams=args.streams, max_tokens=args.max_tokens)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.llm_sim.bench", description=__doc__)
    parser.add_argument("--streams", type=int, default=500, help="concurrent streams (500)")
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="simulator TTFT (300)")
    parser.add_argument("--tokens-per-s", type=float, default=40.0, help="simulator rate (40)")
    parser.add_argument("--max-tokens", type=int, default=60, help="tokens per reply cap (60)")
    parser.add_argument("--url", default=None, help="use a running simulator at this /v1 URL")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return
    for name, value in asdict(report).items():
        print(f"{name:28} {value:.3f}" if isinstance(value, float) else f"{name:28} {value}")


if __name__ == "__main__":
    main()
