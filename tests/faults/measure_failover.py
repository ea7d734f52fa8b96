"""Recovery after a worker's kill -9: seconds from the kill to the next suggestion's first delta.

    python -m tests.faults.measure_failover --workers 2 --runs 5 [--session-timeout 3]

With `--workers 1` the killed worker is restarted at once (as a supervisor would); with 2 the
survivor takes over. The conversation is one the killed worker owns; a customer sentence is said
right after the kill. Prints one line per run, then the median and the load average, as JSON
with `--json`. Kafka: the embedded broker, or `KAFKA_BOOTSTRAP_SERVERS`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from broker import BrokerThread
from streams.suggester import RETRY_SUFFIX
from teleprompter.local_system import LocalSystem
from tests.faults.workers import conversation_owned_by, kill_worker
from tests.rep_client import RepClient
from tests.system_fixtures import system_settings


async def one_run(bootstrap_servers: str, *, workers: int, session_timeout_s: float) -> float:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = system_settings(
            bootstrap_servers,
            Path(data_dir),
            workers=workers,
            worker_session_timeout_s=session_timeout_s,
            log_level="WARNING",
        )
        async with LocalSystem(settings=settings) as system:
            victim = "worker" if workers == 1 else "worker-1"
            cid = await conversation_owned_by(system, victim, prefix="failover")
            async with RepClient(
                ws_url=system.ws_url, conversation_id=cid, token=system.token(cid)
            ) as rep:
                await rep.say("Is the first question answered?")
                await rep.wait_for("suggestion_complete", timeout_s=60)
                killed_at = await kill_worker(system, victim)
                await rep.say("And is the next one answered after the kill?")
                if workers == 1:
                    await system.restart_worker()
                before = {m["turn_id"] for m in rep.received if "turn_id" in m}
                while True:
                    await rep.wait_for(
                        "suggestion_delta", count=len(_deltas(rep)) + 1, timeout_s=120
                    )
                    # The sentence said after the kill; not a retry of a turn the kill cut.
                    if any(
                        m["turn_id"] not in before and not m["turn_id"].endswith(RETRY_SUFFIX)
                        for m in _deltas(rep)
                    ):
                        return time.monotonic() - killed_at


def _deltas(rep: RepClient) -> list[dict[str, Any]]:
    return rep.of_type("suggestion_delta")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    broker: BrokerThread | None = None
    if not external:
        broker = BrokerThread(data_dir=Path(tempfile.mkdtemp(prefix="failover-broker-")))
        broker.start()
    bootstrap = external or (broker.bootstrap_servers if broker else "")
    seconds: list[float] = []
    loads: list[float] = []
    try:
        for n in range(args.runs):
            took = await one_run(
                bootstrap, workers=args.workers, session_timeout_s=args.session_timeout
            )
            load = os.getloadavg()[0]
            seconds.append(took)
            loads.append(load)
            print(f"run {n + 1}: {took:.2f} s (load {load:.2f})", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    return {
        "kafka": "apache" if external else "embedded",
        "workers": args.workers,
        "session_timeout_s": args.session_timeout,
        "runs_s": [round(s, 2) for s in seconds],
        "median_s": round(statistics.median(seconds), 2),
        "loadavg_1m_median": round(statistics.median(loads), 2),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, choices=(1, 2), default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--session-timeout", type=float, default=3.0)
    parser.add_argument("--json", type=Path, default=None, help="append the result here")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    print(json.dumps(result))
    if args.json is not None:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
