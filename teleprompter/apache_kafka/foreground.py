"""`kafka up` in the foreground: start the cluster, print where it is, stop it on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from teleprompter.apache_kafka.artifacts import ApacheKafkaError, MissingToolError, ensure_artifacts
from teleprompter.apache_kafka.cluster import ApacheKafkaCluster, DataDirError
from teleprompter.apache_kafka.jvm import JvmProfile, ensure_class_archive
from teleprompter.options import EXIT_BAD_SETTINGS, EXIT_FAILED, EXIT_OK

logger = logging.getLogger(__name__)


def run(*, nodes: int, profile: JvmProfile, data_dir: Path) -> int:
    """Serve until SIGINT or SIGTERM; the exit code (see commands.py)."""
    code = fetch_only(quiet=True)
    if code != EXIT_OK:
        return code
    try:
        return asyncio.run(
            _serve(ApacheKafkaCluster(nodes=nodes, data_dir=data_dir, profile=profile, echo=_say))
        )
    except ApacheKafkaError as exc:
        return _fail(exc)


def fetch_only(*, quiet: bool = False) -> int:
    """Make sure the jars (and, unless quiet, the class archive) are in the cache.

    Runs before any event loop: a Ctrl-C during the download stops Maven with us.
    """
    try:
        artifacts = ensure_artifacts(echo=_say)
    except ApacheKafkaError as exc:
        return _fail(exc)
    if not quiet:
        archive = asyncio.run(ensure_class_archive(artifacts))
        click.echo(f"Apache Kafka {artifacts.version}: {artifacts.lib_dir}")
        click.echo(f"class archive: {archive or '(none: nodes start without one)'}")
    return EXIT_OK


async def _serve(cluster: ApacheKafkaCluster) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stopping = asyncio.create_task(stop.wait())
    starting = asyncio.create_task(cluster.start_all())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Settled before stop_all, so that no node is spawned after it has run.
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return EXIT_OK
        starting.result()
        _say(
            f"Apache Kafka {cluster.version}: {len(cluster.node_ids)} node(s) serving; "
            f"data and logs in {cluster.data_dir}. Ctrl-C stops them."
        )
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
        exited = asyncio.create_task(cluster.wait_for_exit())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            node_id = exited.result()
            _say(f"node {node_id} exited unexpectedly; see {cluster.log_path(node_id)}. Stopping.")
            return EXIT_FAILED
        return EXIT_OK
    finally:
        stopping.cancel()
        _say("stopping...")
        await cluster.stop_all()
        _say("stopped.")


def _fail(exc: ApacheKafkaError) -> int:
    click.echo(f"teleprompter: {exc}", err=True)
    return EXIT_BAD_SETTINGS if isinstance(exc, MissingToolError | DataDirError) else EXIT_FAILED


def _say(line: str) -> None:
    # Progress goes to stderr: stdout carries only the KAFKA_BOOTSTRAP_SERVERS line.
    click.echo(line, err=True)
