"""`teleprompter replay`: the command line of the conversation tools (heavy imports stay lazy)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from teleprompter.event_log.arguments import fail_usage, parse_times, quiet_settings

logger = logging.getLogger(__name__)


@click.command()
@click.argument("conversation")
@click.option("--from", "from_text", metavar="TIME", help="Only events from this time on.")
@click.option("--to", "to_text", metavar="TIME", help="Only events before this time.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "jsonl"]),
    default="table",
    show_default=True,
    help="A table to read, or one JSON object per line with every decoded field.",
)
@click.option("--follow", is_flag=True, help="Keep printing a live call until it ends or Ctrl-C.")
@click.option("--each-delta", is_flag=True, help="Every token delta, not one line per stream.")
@click.option(
    "--through",
    is_flag=True,
    help="What-if: re-run the customer turns through today's prompt and an LLM.",
)
@click.option(
    "--llm-base-url",
    metavar="URL",
    help="With --through: an OpenAI-compatible endpoint (OPENAI_BASE_URL, else a simulator).",
)
@click.option("--model", help="With --through: the model to ask (default TELEPROMPTER_LLM_MODEL).")
@click.option(
    "--prompt",
    "prompt_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --through: a UTF-8 text file that replaces the system prompt.",
)
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --through: also write each comparison as a JSON line here.",
)
@click.pass_context
def replay(
    ctx: click.Context,
    conversation: str,
    from_text: str | None,
    to_text: str | None,
    output: str,
    follow: bool,
    each_delta: bool,
    through: bool,
    llm_base_url: str | None,
    model: str | None,
    prompt_path: Path | None,
    output_path: Path | None,
) -> None:
    """One conversation's timeline across topics, decoded, in event-time order.

    TIME is ISO 8601 (2025-06-01T12:00:00Z; no offset means UTC), relative (-15m, -2h,
    -1d), now, or Unix epoch ms. See docs/analysts.md.
    """
    settings = quiet_settings(ctx)
    from_ms, to_ms = parse_times(ctx, from_text, to_text)
    what_if_only = {
        "--llm-base-url": llm_base_url,
        "--model": model,
        "--prompt": prompt_path,
        "-o": output_path,
    }
    if through:
        if follow:
            fail_usage(ctx, "--through re-runs a recorded conversation; it cannot --follow")
        from teleprompter.conversations.whatif import (  # noqa: PLC0415  # loads openai
            PromptFileError,
            WhatIfRequest,
            read_system_prompt,
            what_if,
        )

        system_prompt = None
        if prompt_path is not None:
            try:
                system_prompt = read_system_prompt(prompt_path)
            except PromptFileError as exc:
                fail_usage(ctx, str(exc))
        request = WhatIfRequest(
            conversation_id=conversation,
            from_ms=from_ms,
            to_ms=to_ms,
            llm_base_url=llm_base_url,
            model=model,
            system_prompt=system_prompt,
            output_path=output_path,
        )
        ctx.exit(what_if(settings, request, out=click.get_text_stream("stdout"), err=_err))
    given = [flag for flag, value in what_if_only.items() if value is not None]
    if given:
        fail_usage(ctx, f"{', '.join(given)} only go with --through")
    if follow and to_ms is not None:
        fail_usage(ctx, "--follow tails a live call; it takes no --to")

    from teleprompter.conversations.replay import (  # noqa: PLC0415  # loads Kafka
        ReplayRequest,
    )
    from teleprompter.conversations.replay import replay as run_replay  # noqa: PLC0415

    request_replay = ReplayRequest(
        conversation_id=conversation,
        from_ms=from_ms,
        to_ms=to_ms,
        output="jsonl" if output == "jsonl" else "table",
        follow=follow,
        deltas="each" if each_delta else "runs",
    )
    ctx.exit(run_replay(settings, request_replay, out=click.get_text_stream("stdout"), err=_err))


def _err(message: str) -> None:
    click.echo(message, err=True)
