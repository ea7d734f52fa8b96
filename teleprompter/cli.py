"""The `teleprompter` command line: one subcommand per process or tool in the contract."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from core.data_dir import private_file_mode
from teleprompter.apache_kafka.commands import kafka
from teleprompter.consumer_groups.commands import groups
from teleprompter.conversations.commands import replay
from teleprompter.export.commands import export
from teleprompter.options import (
    EXIT_BAD_SETTINGS,
    data_dir_option,
    fail,
    one_line_errors,
    private_data_dir,
    settings_from_flags,
)

logger = logging.getLogger(__name__)


def use_uvloop() -> None:
    """Every event loop this process makes from now on is uvloop's (libuv, in C): the
    system's processes spend a good part of their CPU in the event loop itself, and uvloop
    cuts it (docs/benchmarks.md). Called by the commands that run a service, not by quick
    tools. Where uvloop does not exist (Windows), asyncio's own loop serves."""
    import asyncio  # noqa: PLC0415  # only the service commands run event loops

    try:
        import uvloop  # noqa: PLC0415  # only the service commands run event loops
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="teleprompter")
def main() -> None:
    """Real-time reply suggestions for reps on live calls."""
    # Call audio, transcripts and the signing secret are for this user only (0600 / 0700).
    private_file_mode()


main.add_command(replay)
main.add_command(export)


@main.command()
@click.option("--gateway-port", type=int, default=None, help="WebSocket gateway port (8080).")
@click.option("--broker-port", type=int, default=None, help="Embedded broker port (9092).")
@data_dir_option
@click.option("--llm-port", type=int, default=None, help="LLM simulator port (8000).")
@click.option("--llm-ttft-ms", type=float, default=None, help="Simulator time to first token.")
@click.option("--workers", type=int, default=None, help="Stream worker processes (1).")
@click.option(
    "--worker-http-port",
    type=int,
    default=None,
    help="First worker's /metrics and /healthz port, the next worker's +1 (default: free ones).",
)
@click.pass_context
def up(
    ctx: click.Context,
    gateway_port: int | None,
    broker_port: int | None,
    data_dir: Path | None,
    llm_port: int | None,
    llm_ttft_ms: float | None,
    workers: int | None,
    worker_http_port: int | None,
) -> None:
    """Run the whole system on this machine until Ctrl-C or SIGTERM.

    Every port is a flag; 0 picks a free one. A child that dies is restarted with backoff.
    """
    from teleprompter.up import run  # noqa: PLC0415  # keeps other commands' start-up light

    settings = settings_from_flags(
        ctx,
        gateway_port=gateway_port,
        broker_port=broker_port,
        data_dir=data_dir,
        llm_sim_port=llm_port,
        llm_ttft_ms=llm_ttft_ms,
        workers=workers,
        worker_http_port=worker_http_port,
    )
    ctx.exit(run(settings))


@main.command()
@click.option("--port", type=int, default=None, help="Port to listen on (9092).")
@data_dir_option
@click.pass_context
def broker(ctx: click.Context, port: int | None, data_dir: Path | None) -> None:
    """Run the embedded Kafka-compatible broker alone."""
    import asyncio  # noqa: PLC0415  # only this command runs an event loop here

    from broker import EmbeddedBroker, serve_until_signalled  # noqa: PLC0415  # keeps start-up light

    settings = settings_from_flags(ctx, broker_port=port, data_dir=data_dir)
    use_uvloop()
    embedded = EmbeddedBroker(
        host=settings.broker_host,
        port=settings.broker_port,
        data_dir=private_data_dir(ctx, settings) / "broker",
        auto_create_topics=settings.broker_auto_create_topics,
        max_request_bytes=settings.broker_max_request_bytes,
        idle_timeout_s=settings.broker_idle_timeout_s,
        request_read_timeout_s=settings.broker_request_read_timeout_s,
    )
    with one_line_errors(ctx):
        asyncio.run(serve_until_signalled(embedded))


@main.command()
@click.option("--port", type=int, default=None, help="Port to listen on (8080).")
@click.option("--gateway-id", default=None, help="Names this gateway's reply topic.")
@click.pass_context
def gateway(ctx: click.Context, port: int | None, gateway_id: str | None) -> None:
    """Run one WebSocket gateway."""
    settings = settings_from_flags(ctx, gateway_port=port, gateway_id=gateway_id)
    from gateway.server import run  # noqa: PLC0415  # only this command needs aiohttp and Kafka

    use_uvloop()
    with one_line_errors(ctx):
        run(settings, on_listening=lambda url: click.echo(f"gateway listening on {url}"))


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run one stream-processing worker (Faust), with /metrics and /healthz."""
    from streams.asr.model import AsrModelError, resolve_model_source  # noqa: PLC0415  # worker only
    from streams.observability.server import WorkerHttpError  # noqa: PLC0415  # with the worker
    from streams.worker import run  # noqa: PLC0415  # Faust is heavy; only the worker imports it

    settings = settings_from_flags(ctx)
    private_data_dir(ctx, settings)
    try:
        resolve_model_source(settings.asr_model)
    except AsrModelError as exc:
        fail(ctx, f"{exc} (TELEPROMPTER_ASR_MODEL)")
    use_uvloop()  # Faust's worker makes its loop through the policy
    with one_line_errors(ctx):
        try:
            run(settings)
        except WorkerHttpError as exc:
            fail(ctx, str(exc))


@main.command("llm-sim")
@click.option("--port", type=int, default=None, help="Port to listen on (8000).")
@click.option("--ttft-ms", type=float, default=None, help="Time to first token (300).")
@click.option("--tokens-per-s", type=float, default=None, help="Streaming rate (40).")
@click.pass_context
def llm_sim(
    ctx: click.Context, port: int | None, ttft_ms: float | None, tokens_per_s: float | None
) -> None:
    """Serve an OpenAI-compatible streaming endpoint for offline use and benchmarks."""
    settings = settings_from_flags(
        ctx, llm_sim_port=port, llm_ttft_ms=ttft_ms, llm_tokens_per_s=tokens_per_s
    )
    from streams.llm_sim.server import run  # noqa: PLC0415 - only this command needs aiohttp

    use_uvloop()
    with one_line_errors(ctx):
        run(settings)


@main.group()
def topics() -> None:
    """Provision or inspect the topic catalog."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create every catalog topic that is missing; report those that differ."""
    from teleprompter import topic_commands  # noqa: PLC0415  # only `topics` loads Kafka

    ctx.exit(topic_commands.create(settings_from_flags(ctx)))


@topics.command("list")
@click.pass_context
def topics_list(ctx: click.Context) -> None:
    """List the catalog and whether each topic exists."""
    from teleprompter import topic_commands  # noqa: PLC0415  # only `topics` loads Kafka

    ctx.exit(topic_commands.list_catalog(settings_from_flags(ctx)))


@topics.command("describe")
@click.argument("names", nargs=-1)
@click.pass_context
def topics_describe(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Partitions, configs and offsets of catalog topics (default: all under the prefix)."""
    from teleprompter import topic_commands  # noqa: PLC0415  # only `topics` loads Kafka

    ctx.exit(topic_commands.describe(settings_from_flags(ctx), names))


@main.command()
@click.option("--conversation", default=None, help="The conversation the token is bound to.")
@click.option("--rep", default=None, help="The rep's name, carried in the token.")
@click.option(
    "--rep-key",
    is_flag=True,
    help="Print a rep key for --rep instead: it signs the rep in to start conversations.",
)
@click.option("--ttl", type=float, default=None, help="Lifetime in seconds (8 h).")
@data_dir_option
@click.pass_context
def token(
    ctx: click.Context,
    conversation: str | None,
    rep: str | None,
    rep_key: bool,
    ttl: float | None,
    data_dir: Path | None,
) -> None:
    """Print a signed client token for one conversation (or a rep key)."""
    from core.tokens import SecretError, TokenSigner, resolve_secret  # noqa: PLC0415  # PyJWT only here

    if rep_key and (rep is None or conversation is not None):
        raise click.UsageError("--rep-key needs --rep and no --conversation")
    if not rep_key and conversation is None:
        raise click.UsageError("--conversation is required (or --rep NAME --rep-key)")
    settings = settings_from_flags(ctx, token_ttl_s=ttl, data_dir=data_dir)
    try:
        signer = TokenSigner(resolve_secret(settings))
        if rep_key:
            assert rep is not None
            click.echo(signer.issue_rep_key(rep, ttl_s=settings.token_ttl_s))
        else:
            assert conversation is not None
            click.echo(signer.issue(conversation, rep=rep, ttl_s=settings.token_ttl_s))
    except (SecretError, ValueError) as exc:
        click.echo(f"teleprompter: {exc}", err=True)
        ctx.exit(EXIT_BAD_SETTINGS)


def _named_pids(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, int]:
    """`--measure NAME=PID` values as {NAME: PID}."""
    named: dict[str, int] = {}
    for value in values:
        name, _, pid = value.partition("=")
        if not name or not pid.isdigit():
            raise click.BadParameter(f"{value!r} is not NAME=PID", ctx=ctx, param=param)
        named[name] = int(pid)
    return named


@main.command()
@click.option("--url", default=None, help="WebSocket URL of a running system (default: start one).")
@click.option("--sessions", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds of scripted conversation.",
)
@click.option(
    "--mode", type=click.Choice(["transcript", "audio"]), default="transcript", show_default=True
)
@click.option(
    "--llm-ttft-ms", type=float, default=None, help="Simulator time to first token (300)."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report here as JSON.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="The script's random seed.")
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds played but not measured (5, or a fifth of a shorter run).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Replay the prompts straight to the LLM endpoint (the floor).",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Stream workers (1).")
@click.option(
    "--deadline",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds after which an unanswered turn counts as lost.",
)
@click.option(
    "--speculative/--no-speculative",
    default=None,
    help="Speculative suggestions in the system the bench starts (default: the setting, on).",
)
@click.option(
    "--unpunctuated",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    help="Share of customer lines typed without punctuation: they wait for the turn pause, "
    "and one with a comma comes as two finals a short pause apart.",
)
@click.option(
    "--measure",
    "measured",
    multiple=True,
    callback=_named_pids,
    metavar="NAME=PID",
    help="Also report this process's CPU and memory, e.g. a Kafka node (repeatable).",
)
@click.pass_context
def bench(
    ctx: click.Context,
    url: str | None,
    sessions: int,
    duration: float,
    mode: str,
    llm_ttft_ms: float | None,
    json_path: Path | None,
    seed: int,
    warmup: float | None,
    baseline: bool,
    workers: int | None,
    deadline: float,
    speculative: bool | None,
    unpunctuated: float,
    measured: dict[str, int],
) -> None:
    """Latency and load benchmark: N simulated conversations, open loop, with the LLM floor."""
    from teleprompter.bench.run import BenchOptions, run  # noqa: PLC0415  # loads the stack

    if url is not None and speculative is not None:
        fail(
            ctx,
            "--speculative/--no-speculative sets up a system the bench starts; with --url, set "
            "TELEPROMPTER_SPECULATIVE_SUGGESTIONS on the workers of that system",
        )
    if mode == "audio" and unpunctuated:
        fail(ctx, "--unpunctuated is for typed transcripts (--mode transcript)")
    settings = settings_from_flags(ctx)
    options = BenchOptions(
        url=url,
        sessions=sessions,
        duration_s=duration,
        mode="audio" if mode == "audio" else "transcript",
        llm_ttft_ms=llm_ttft_ms,
        seed=seed,
        warmup_s=warmup,
        baseline=baseline,
        deadline_s=deadline,
        workers=workers,
        speculative=speculative,
        unpunctuated=unpunctuated,
        measured=measured,
    )
    use_uvloop()  # the load generator too: its CPU per turn is part of the report
    ctx.exit(run(options, settings, json_path=json_path, echo=click.echo))


main.add_command(groups)


@main.command()
@click.pass_context
def config(ctx: click.Context) -> None:
    """Print the effective settings, secrets masked."""
    settings = settings_from_flags(ctx)
    width = max(len(name) for name in settings.masked())
    for name, value in settings.masked().items():
        click.echo(f"{name.ljust(width)}  {value}")


main.add_command(kafka)
