"""CPU of the worker's LLM client per streamed suggestion, in this process only.

    teleprompter llm-sim --port 18931 --ttft-ms 50 &
    python scripts/bench_llm_client.py --url http://127.0.0.1:18931/v1 [--streams 64]
        [--rounds 4] [--uvloop]

`SuggestionModel.stream` of the tree on PYTHONPATH, `--streams` concurrent suggestions,
`--rounds` times after one warm-up round; CPU is `time.process_time` over the measured rounds.
CPU seconds survive a busy machine better than latency does; compare two trees alternately,
at the same moment, and quote the ratio (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from streams.llm import SuggestionModel
from streams.prompt import ChatMessage, Prompt

PROMPT = Prompt(
    messages=(
        ChatMessage(role="system", content="You suggest what a support rep could say next."),
        ChatMessage(role="user", content="Customer: the invoice is wrong, we were charged twice."),
    )
)


async def _measure(url: str, *, streams: int, rounds: int) -> None:
    model = SuggestionModel(base_url=url, api_key="bench", max_streams=streams)

    async def one(request_id: str) -> int:
        return sum([1 async for _ in model.stream(PROMPT, request_id=request_id)])

    try:
        await asyncio.gather(*(one(f"warm-{i}") for i in range(streams)))
        cpu0, wall0 = time.process_time(), time.monotonic()
        fragments = 0
        for r in range(rounds):
            fragments += sum(await asyncio.gather(*(one(f"{r}-{i}") for i in range(streams))))
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        await model.close()
    n = streams * rounds
    print(
        f"{n} suggestions, {fragments / n:.1f} fragments each, "
        f"CPU {1000 * cpu_s / n:.2f} ms per suggestion, wall {wall_s:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL (.../v1)")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop  # noqa: PLC0415  # only with --uvloop

        uvloop.install()
    asyncio.run(_measure(args.url, streams=args.streams, rounds=args.rounds))


if __name__ == "__main__":
    main()
