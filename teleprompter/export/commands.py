"""`teleprompter export`: the command line of the export (heavy imports stay lazy)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from teleprompter.event_log.arguments import parse_times, quiet_settings

logger = logging.getLogger(__name__)


@click.command()
@click.option("--from", "from_text", metavar="TIME", required=True, help="Events from this time.")
@click.option("--to", "to_text", metavar="TIME", required=True, help="Events before this time.")
@click.option(
    "--conversation",
    "conversations",
    metavar="ID",
    multiple=True,
    help="Only this conversation (repeatable); reads only its partitions.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["parquet", "jsonl"]),
    default="parquet",
    show_default=True,
)
@click.option(
    "-o",
    "--output-dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the files (created; files of the same names are replaced).",
)
@click.option(
    "--deltas/--no-deltas",
    default=True,
    show_default=True,
    help="Also read the reply topics for every token delta.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr (default: when stderr is a terminal).",
)
@click.pass_context
def export(
    ctx: click.Context,
    from_text: str,
    to_text: str,
    conversations: tuple[str, ...],
    output: str,
    directory: Path,
    deltas: bool,
    progress: bool | None,
) -> None:
    """Every event of a time range, one file per event type, typed columns.

    TIME is ISO 8601 (no offset means UTC), relative (-15m, -2h, -1d), now, or Unix epoch
    ms. Events are kept when their event time is in [--from, --to). See docs/analysts.md.
    """
    settings = quiet_settings(ctx)
    from_ms, to_ms = parse_times(ctx, from_text, to_text)
    assert from_ms is not None and to_ms is not None  # both options are required

    from teleprompter.export.run import ExportRequest  # noqa: PLC0415  # pyarrow loads slowly
    from teleprompter.export.run import export as run_export  # noqa: PLC0415

    request = ExportRequest(
        from_ms=from_ms,
        to_ms=to_ms,
        directory=directory,
        output="jsonl" if output == "jsonl" else "parquet",
        conversations=tuple(dict.fromkeys(conversations)),
        deltas=deltas,
    )
    ctx.exit(
        run_export(
            settings,
            request,
            out=click.get_text_stream("stdout"),
            err=lambda message: click.echo(message, err=True),
            progress=progress,
        )
    )
