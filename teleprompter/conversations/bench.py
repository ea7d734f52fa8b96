"""Benchmark of the analysts' tools: replaying a 30-minute call, and export throughput.

    python -m teleprompter.conversations.bench [--minutes 30] [--others 15] [--repeat 3]

Writes one call of `--minutes` with both speakers' audio and `--others` typed calls of the same
length alongside it (sharing the topics, as on a busy system) with realistic timing, under a
topic prefix of its own, on the Kafka in KAFKA_BOOTSTRAP_SERVERS, or on an embedded broker it
starts. Then it times, as an analyst runs them (a new process each, start-up included):
`teleprompter replay` of the long call (table and JSON lines), and `teleprompter export` of
the whole range (Parquet and JSON lines). Medians of `--repeat` runs: wall time, and CPU
time (user + system, which a loaded machine inflates far less), with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from broker import BrokerThread
from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from core.settings import load_settings
from schemas.codec import default_codec
from teleprompter.conversations.synthetic import produce, recorded_call
from teleprompter.event_log.times import format_time

GATEWAY_ID = "gw-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--others", type=int, default=15, help="typed calls alongside")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    with tempfile.TemporaryDirectory() as scratch:
        embedded = None
        if not external:
            embedded = BrokerThread(data_dir=Path(scratch) / "broker")
            embedded.start()
        try:
            bootstrap = external or (embedded.bootstrap_servers if embedded else "")
            run(bootstrap, args, Path(scratch), backend="Apache Kafka" if external else "embedded")
        finally:
            if embedded is not None:
                embedded.stop()


def run(bootstrap: str, args: argparse.Namespace, scratch: Path, *, backend: str) -> None:
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}",
        partitions=args.partitions,
    )
    catalog = TopicCatalog.from_settings(settings)
    asyncio.run(
        TopicAdmin(bootstrap_servers=bootstrap).ensure_topics(
            [*catalog.shared_topics, catalog.reply_topic(GATEWAY_ID)]
        )
    )
    end_ms = int(time.time() * 1000) - 5_000
    start_ms = end_ms - int(args.minutes * 60_000)
    calls = [
        recorded_call(
            catalog,
            conversation_id=f"call-{n}",
            gateway_id=GATEWAY_ID,
            start_ms=start_ms + n * 997,
            duration_s=args.minutes * 60,
            audio=n == 0,
            seed=n,
        )
        for n in range(args.others + 1)
    ]
    # Interleaved in time, as a live system writes them.
    events = sorted((e for call in calls for e in call), key=lambda e: e.event.event_time_ms)
    long_call = sum(1 for e in events if e.event.conversation_id == "call-0")
    started = time.perf_counter()
    written = produce(bootstrap, events, codec=default_codec())
    print(
        f"{backend} at {bootstrap}, topics {settings.topic_prefix}.*, {args.partitions} partitions"
    )
    print(
        f"wrote {written} events ({long_call} of call-0, {args.minutes:g} min with audio; "
        f"{args.others} typed calls alongside) in {time.perf_counter() - started:.1f} s"
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TELEPROMPTER_TOPIC_PREFIX": settings.topic_prefix,
    }
    window = [format_time(start_ms - 1000), format_time(end_ms + 60_000)]
    measured = {
        "replay call-0 (table)": ["replay", "call-0"],
        "replay call-0 (jsonl)": ["replay", "call-0", "--format", "jsonl"],
        "export all (parquet)": [
            "export", "--from", window[0], "--to", window[1], "-o", str(scratch / "parquet"),
        ],
        "export all (jsonl)": [
            "export", "--from", window[0], "--to", window[1], "--format", "jsonl",
            "-o", str(scratch / "jsonl"),
        ],
    }  # fmt: skip
    for name, command in measured.items():
        runs = [_timed(command, env) for _ in range(args.repeat)]
        wall = statistics.median(wall for wall, _ in runs)
        cpu = statistics.median(cpu for _, cpu in runs)
        events_of = long_call if name.startswith("replay") else written
        print(
            f"{name:<24} median {wall:6.2f} s wall ({', '.join(f'{w:.2f}' for w, _ in runs)}), "
            f"{cpu:5.2f} s CPU; {events_of / wall:,.0f} events/s wall, "
            f"{events_of / cpu:,.0f} per CPU second; load average {_load()}"
        )


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of the command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "teleprompter", *command],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _load() -> str:
    return (
        Path("/proc/loadavg").read_text().split(" ", 3)[0]
        if Path("/proc/loadavg").exists()
        else "?"
    )


if __name__ == "__main__":
    main()
