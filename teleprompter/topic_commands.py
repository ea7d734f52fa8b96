"""`teleprompter topics create|list|describe`: the topic catalog against the cluster, as tables.

Each command returns its exit code: 0 when done, 1 when Kafka could not be asked or refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, TypeVar

import click

from core.kafka.admin import (
    KafkaAdminError,
    ProvisionReport,
    TopicAdmin,
    TopicDescription,
    TopicInfo,
)
from core.kafka.catalog import TopicCatalog, TopicSpec
from core.settings import Settings
from teleprompter.options import EXIT_FAILED, EXIT_OK

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ALWAYS_SHOWN_CONFIGS: Final = ("cleanup.policy", "retention.ms")


def create(settings: Settings) -> int:
    """Create every catalog topic that is missing; report, never alter, those that differ."""
    catalog = TopicCatalog.from_settings(settings)
    report = _ask(settings, lambda admin: admin.ensure_topics(catalog.shared_topics))
    if report is None:
        return EXIT_FAILED
    click.echo(provision_table(catalog.shared_topics, report))
    click.echo(f"\n{report.summary()}")
    if not report.ok:
        click.echo("Topics that differ were left as they are; change or recreate them by hand.")
    return EXIT_OK


def list_catalog(settings: Settings) -> int:
    """The catalog, whether each topic exists, and other topics under the catalog's prefix."""
    existing = _ask(settings, lambda admin: admin.list_topics())
    if existing is None:
        return EXIT_FAILED
    click.echo(catalog_table(TopicCatalog.from_settings(settings), existing))
    return EXIT_OK


def describe(settings: Settings, names: Sequence[str]) -> int:
    """Partitions, offsets and configs of the named topics (default: those under the prefix)."""
    catalog = TopicCatalog.from_settings(settings)

    async def look(admin: TopicAdmin) -> tuple[list[TopicDescription], list[str]]:
        if names:
            return await admin.describe_topics(names), []
        existing = await admin.list_topics()
        missing = [spec.name for spec in catalog.shared_topics if spec.name not in existing]
        return await admin.describe_topics(_under_prefix(catalog, existing)), missing

    found = _ask(settings, look)
    if found is None:
        return EXIT_FAILED
    descriptions, missing = found
    specs = {spec.name: spec for spec in catalog.shared_topics}
    click.echo("\n\n".join(description_text(d, specs.get(d.name)) for d in descriptions))
    if missing:
        click.echo(f"\nmissing: {', '.join(missing)} (run `teleprompter topics create`)")
    return EXIT_OK


def _ask(settings: Settings, request: Callable[[TopicAdmin], Awaitable[T]]) -> T | None:
    """Run one admin request to completion; on failure say why on stderr and return None."""

    async def run() -> T:
        return await request(TopicAdmin(bootstrap_servers=settings.bootstrap_servers))

    try:
        return asyncio.run(run())
    except KafkaAdminError as exc:
        click.echo(f"teleprompter: {exc}", err=True)
        return None


# --- rendering ------------------------------------------------------------------------------
def provision_table(specs: Iterable[TopicSpec], report: ProvisionReport) -> str:
    return format_table(
        ("TOPIC", "PARTITIONS", "CLEANUP", "RETENTION", "STATUS"),
        [
            (
                spec.name,
                str(spec.partitions),
                spec.cleanup_policy,
                _retention(spec),
                report.status(spec.name),
            )
            for spec in specs
        ],
    )


def catalog_table(catalog: TopicCatalog, existing: dict[str, TopicInfo]) -> str:
    rows: list[tuple[str, ...]] = []
    for spec in catalog.shared_topics:
        info = existing.get(spec.name)
        if info is None:
            partitions, state = str(spec.partitions), "missing"
        elif info.partitions != spec.partitions:
            partitions, state = f"{info.partitions} (catalog {spec.partitions})", "differs"
        else:
            partitions, state = str(info.partitions), "exists"
        rows.append(
            (
                spec.name,
                partitions,
                spec.cleanup_policy,
                _retention(spec),
                state,
                spec.description,
            )
        )
    catalog_names = {spec.name for spec in catalog.shared_topics}
    reply_prefix = catalog.reply_topic("").name
    for name in _under_prefix(catalog, existing):
        if name in catalog_names:
            continue
        kind = "reply topic" if name.startswith(reply_prefix) else "not in the catalog"
        rows.append((name, str(existing[name].partitions), "", "", "exists", kind))
    return format_table(
        ("TOPIC", "PARTITIONS", "CLEANUP", "RETENTION", "STATE", "DESCRIPTION"), rows
    )


def description_text(description: TopicDescription, spec: TopicSpec | None) -> str:
    title = description.name + (f" - {spec.description}" if spec and spec.description else "")
    shown = [name for name in _ALWAYS_SHOWN_CONFIGS if name in description.configs]
    shown += sorted(description.set_on_topic - set(shown))
    configs = "  ".join(
        f"{name}={_config_value(name, description.configs[name])}" for name in shown
    )
    partitions = format_table(
        ("PARTITION", "LEADER", "REPLICAS", "IN SYNC", "START", "END"),
        [
            (
                str(p.partition),
                str(p.leader),
                ",".join(map(str, p.replicas)),
                ",".join(map(str, p.in_sync)),
                str(p.start_offset),
                str(p.end_offset),
            )
            for p in description.partitions
        ],
    )
    return "\n".join(
        [
            title,
            f"  partitions {len(description.partitions)}, "
            f"replication {description.replication_factor}, "
            f"offsets held {description.record_count}",
            f"  {configs}",
            *(f"  {line}" for line in partitions.splitlines()),
        ]
    )


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_duration_ms(duration_ms: int) -> str:
    """Milliseconds in the largest whole unit: 3600000 -> "1 h", 604800000 -> "7 d"."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if duration_ms >= size and duration_ms % size == 0:
            return f"{duration_ms // size} {unit}"
    return f"{duration_ms} ms"


def _retention(spec: TopicSpec) -> str:
    return format_duration_ms(spec.retention_ms) if "retention.ms" in spec.config else "-"


def _config_value(name: str, value: str) -> str:
    if name.endswith(".ms") and value.isdigit() and int(value) > 0:
        return f"{value} ({format_duration_ms(int(value))})"
    return value


def _under_prefix(catalog: TopicCatalog, existing: Iterable[str]) -> list[str]:
    return sorted(name for name in existing if name.startswith(f"{catalog.prefix}."))
