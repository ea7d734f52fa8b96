"""`teleprompter up`: the whole system in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid

import click

from core.settings import Settings
from teleprompter.local_system import LocalSystem, StartupError

logger = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Start everything, print where to connect, run until told to stop; the exit code."""
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    system = LocalSystem(settings=settings, echo=click.echo)
    starting = asyncio.create_task(system.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            return 0
        starting.result()
        _announce(system)
        # A child that dies is restarted (with backoff) rather than taking the system down.
        supervising = asyncio.create_task(system.supervise())
        await asyncio.wait({supervising, stopping}, return_when=asyncio.FIRST_COMPLETED)
        supervising.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervising
        return 0
    except StartupError as exc:
        click.echo(f"teleprompter: {exc}", err=True)
        return 1
    finally:
        stopping.cancel()
        if system.started_anything:
            click.echo("stopping...")
            await system.stop()
            click.echo("stopped.")
        else:
            await system.stop()


def _announce(system: LocalSystem) -> None:
    conversation = f"demo-{uuid.uuid4().hex[:8]}"
    query = system.connect_query(conversation, rep="dev")
    click.echo("")
    click.echo("teleprompter is up.")
    click.echo(f"  page:      {system.http_url}/?{query}")
    # Dev mode signs a rep in: the key rides in the fragment, which never reaches a server log.
    click.echo(f"  signed in: {system.http_url}/#rep_key={system.rep_key('dev')}")
    click.echo(f"  websocket: {system.ws_url}?{query}")
    click.echo(f"  token:     {query.split('token=', 1)[1]}")
    s = system.settings
    kafka_kind = "embedded broker" if s.uses_embedded_broker else "external"
    llm_kind = "simulator" if s.openai_base_url is None else "external"
    click.echo(f"  kafka:     {system.resolved.bootstrap_servers} ({kafka_kind})")
    click.echo(f"  llm:       {system.resolved.llm_base_url} ({llm_kind})")
    for name, url in system.worker_urls.items():
        click.echo(f"  {name + ':':<10} {url}/metrics  {url}/healthz")
    click.echo("Ctrl-C stops everything.")
