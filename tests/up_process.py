"""`teleprompter up` as a real child process, read line by line, as the tests that use it need."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.waiting import wait_until


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any teleprompter, Kafka or LLM setting, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "OPENAI_BASE_URL"}
        and not k.startswith("TELEPROMPTER_")
    }
    return {**env, **extra}


class UpProcess:
    """Runs `python -m teleprompter up ARGS...`; every output line is kept in `output`."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = env if env is not None else clean_environment()
        self.output: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None, "not started"
        return self._process

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teleprompter",
            "up",
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self.process
        if process.returncode is None:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader

    async def line(self, pattern: str, *, timeout_s: float = 120.0) -> re.Match[str]:
        """The first output line matching `pattern` (a regex), waiting for it if need be."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            for line in self.output:
                if match := regex.search(line):
                    found.append(match)
                    return True
            if self._reader is not None and self._reader.done():
                raise AssertionError(f"up ended without printing {pattern!r}:\n{self.tail()}")
            return False

        await wait_until(seen, timeout_s=timeout_s, what=f"up to print {pattern!r}")
        return found[0]

    async def exit_code(self, *, timeout_s: float = 60.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self, *, timeout_s: float = 60.0) -> int:
        """SIGTERM, as Ctrl-C or an init system would; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        code = await self.exit_code(timeout_s=timeout_s)
        if self._reader is not None:
            await self._reader
        return code

    def children(self) -> dict[int, str]:
        """pid -> the teleprompter command each child runs (`worker`, `gateway`, ...)."""
        pid = self.process.pid
        found: dict[int, str] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                        if b"teleprompter" in argv:
                            index = argv.index(b"teleprompter")
                            found[int(child)] = argv[index + 1].decode()
        return found

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            self.output.append(raw.decode(errors="replace").rstrip())


async def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
