"""Runs the gateway app on its port until told to stop (SIGTERM / Ctrl-C for the CLI)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from core.settings import Settings
from core.tokens import TokenSigner, resolve_secret
from gateway.app import create_app

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S: Final = 10.0


class QuerylessAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings: clients send their token in the query."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


def create_runner(
    app: web.Application, settings: Settings, *, shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S
) -> web.AppRunner:
    """The runner for the gateway app: query-free access log, HTTP header read timeout."""
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout_s,
        access_log_class=QuerylessAccessLogger,
        # aiohttp closes a connection whose keep-alive timer fires while it waits for a request
        # head. The timer starts when the connection opens and again after each response, so
        # it is the header read timeout: a client trickling header bytes is cut at this age.
        keepalive_timeout=settings.http_header_timeout_s,
    )


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event,
    on_listening: Callable[[str], None] | None = None,
    signer: TokenSigner | None = None,
) -> None:
    """Serve until `stop` is set; then stop accepting, close sockets 1001, flush Kafka."""
    runner = create_runner(create_app(settings, signer=signer), settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        logger.info("gateway %s listening on %s", settings.gateway_id, url)
        if on_listening is not None:
            on_listening(url)
        await stop.wait()
        logger.info("gateway %s stopping", settings.gateway_id)
    finally:
        await runner.cleanup()


def run(settings: Settings, *, on_listening: Callable[[str], None] | None = None) -> None:
    """The `teleprompter gateway` process: serve until SIGTERM or SIGINT."""
    # Resolve the secret before the loop starts so a missing one fails fast and plainly.
    signer = TokenSigner(resolve_secret(settings, create=True))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop=stop, on_listening=on_listening, signer=signer)

    asyncio.run(main())
