"""Ways to run the broker: in the foreground until SIGTERM/SIGINT, or on a background thread.

The background thread owns its own event loop, so callers that block (confluent-kafka polls,
pytest fixtures, synchronous tools) can share one broker without ever blocking its loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Final

from broker.server import EmbeddedBroker

logger = logging.getLogger(__name__)

_THREAD_TIMEOUT_S: Final = 30.0


async def serve_until_signalled(broker: EmbeddedBroker) -> None:
    """Start the broker, serve until SIGTERM or SIGINT, then stop it cleanly."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await broker.start()
    try:
        await stopping.wait()
        logger.info("signal received; stopping the broker")
    finally:
        await broker.stop()


class BrokerThread:
    """An EmbeddedBroker on a daemon thread with its own event loop.

    `start()` returns once the broker is listening; `stop()` stops it and joins the thread.
    Keyword arguments are EmbeddedBroker's.
    """

    def __init__(self, *, data_dir: Path, **broker_options: Any) -> None:
        self._broker = EmbeddedBroker(data_dir=data_dir, **broker_options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    @property
    def broker(self) -> EmbeddedBroker:
        return self._broker

    @property
    def bootstrap_servers(self) -> str:
        return self._broker.bootstrap_servers

    def start(self, timeout_s: float = _THREAD_TIMEOUT_S) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"embedded broker did not start within {timeout_s} s")
        if self._failure is not None:
            raise RuntimeError("embedded broker failed to start") from self._failure

    def stop(self, timeout_s: float = _THREAD_TIMEOUT_S) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"embedded broker did not stop within {timeout_s} s")

    def call(self, function: Any, *args: Any, timeout_s: float = _THREAD_TIMEOUT_S) -> Any:
        """Run a plain function on the broker's loop (e.g. `broker.enforce_retention`)."""
        if self._loop is None:
            raise RuntimeError("the broker thread is not running")

        async def invoke() -> Any:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the thread that called start()
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await self._broker.start()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._broker.stop()
