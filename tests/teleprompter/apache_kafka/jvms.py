"""Finding the Kafka JVMs that belong to one data dir, to prove none is left behind."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path


def jvms_under(data_dir: Path) -> list[int]:
    """Pids of live processes whose command line names `data_dir` as their Kafka log dir."""
    marker = f"-Dkafka.logs.dir={data_dir.resolve()}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes() and _alive(entry):
                found.append(int(entry.name))
    return sorted(found)


def _alive(entry: Path) -> bool:
    # A killed child stays in /proc as a zombie until its parent reaps it: that is not alive.
    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True
