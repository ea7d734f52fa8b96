"""`teleprompter kafka up|fetch`: real Apache Kafka on loopback, for local operations and tests.

Exit codes: 0 stopped cleanly; 1 a download or a node failed; 2 `java` or `mvn` is missing, or
the data dir holds a cluster of another size. Only click is imported here: the runner loads
with the command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from teleprompter.options import data_dir_option, settings_from_flags

if TYPE_CHECKING:
    from teleprompter.apache_kafka.jvm import JvmProfile

logger = logging.getLogger(__name__)


@click.group()
def kafka() -> None:
    """Real Apache Kafka (KRaft) on this machine, from artifacts pinned in deploy/kafka/pom.xml."""


@kafka.command("up")
@click.option(
    "--nodes",
    type=click.IntRange(min=1, max=9),
    default=1,
    show_default=True,
    help="Combined broker+controller nodes (3 for a replicated cluster).",
)
@click.option(
    "--jvm",
    type=click.Choice(["server", "quick-start"]),
    default="server",
    show_default=True,
    help="server: Kafka's own JVM flags; quick-start: C1-only JIT, starts on a fraction of "
    "the CPU, lower peak throughput (tests, small machines).",
)
@data_dir_option
@click.pass_context
def up(ctx: click.Context, nodes: int, jvm: str, data_dir: Path | None) -> None:
    """Run N Kafka nodes until Ctrl-C or SIGTERM; print KAFKA_BOOTSTRAP_SERVERS once they serve.

    Storage lives under DATA_DIR/apache-kafka, is formatted on first use and reused after.
    """
    from teleprompter.apache_kafka.foreground import run  # noqa: PLC0415  # loads the runner

    settings = settings_from_flags(ctx, data_dir=data_dir)
    profile: JvmProfile = "quick-start" if jvm == "quick-start" else "server"
    ctx.exit(run(nodes=nodes, profile=profile, data_dir=settings.data_dir / "apache-kafka"))


@kafka.command("fetch")
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Fetch the pinned jars and make their class archive now (up does it on first use)."""
    from teleprompter.apache_kafka.foreground import fetch_only  # noqa: PLC0415  # loads Maven glue

    settings_from_flags(ctx)
    ctx.exit(fetch_only())
