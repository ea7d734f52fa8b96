"""deploy/: the Prometheus config and the Grafana dashboard use only what the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.settings import Settings
from gateway.metrics import GatewayMetrics
from schemas.events import SuggestionEvent
from streams.observability.metrics import LLM_TTFT_STAGE, WorkerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_METRIC = re.compile(r"\bteleprompter_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"(teleprompter_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-z_]+)\s*=~?\s*"([^"]*)"')
_GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")


def exposed(text: str) -> dict[str, set[str]]:
    """Every series name in a Prometheus exposition, with the label names it carries."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def everything_exported() -> dict[str, set[str]]:
    """What a worker and a gateway expose once every metric has been fed through its methods."""
    worker = WorkerMetrics()
    worker.turn_emitted()
    worker.suggestion_published(
        SuggestionEvent(
            conversation_id="c",
            turn_id="t",
            kind="complete",
            timings={LLM_TTFT_STAGE: 300.0, "total": 900.0},
        )
    )
    worker.suggestion_published(
        SuggestionEvent(conversation_id="c", turn_id="t", kind="cancelled", reason="superseded")
    )
    worker.llm_error("timeout")
    worker.hold_conversations(lambda: 1)
    worker.set_consumer_lag([("tp.turns", 0, 3)])
    worker.set_health("kafka", ok=True)
    gateway = GatewayMetrics()
    gateway.connections.inc()
    gateway.observe_stage("gateway_deliver", 0.001)
    gateway.observe_stage(LLM_TTFT_STAGE, 0.3)
    return {**exposed(worker.render().decode()), **exposed(gateway.render().decode())}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "teleprompter.json").read_text())
    return loaded


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_every_metric_the_dashboard_uses_is_exported_with_those_labels() -> None:
    known = everything_exported()
    used: set[str] = set()
    for expr in expressions():
        names = set(_METRIC.findall(expr))
        assert names, f"no teleprompter metric in {expr!r}"
        for name in names:
            assert name in known, f"the dashboard uses {name}, which nothing exports"
        for name, matchers in _SELECTOR.findall(expr):
            for label, _ in _MATCHER.findall(matchers):
                assert label in known[name], f"{name} has no label {label!r}"
        labels_of_expr = set().union(*(known[name] for name in names))
        for grouping in _GROUPING.findall(expr):
            for label in (part.strip() for part in grouping.split(",")):
                assert label in labels_of_expr | {"instance", "job"}, (expr, label)
        used |= names
    # The operators' essentials are all on it.
    for essential in (
        "teleprompter_worker_stage_latency_seconds_bucket",
        "teleprompter_worker_suggestions_total",
        "teleprompter_worker_turns_total",
        "teleprompter_worker_llm_errors_total",
        "teleprompter_worker_consumer_lag",
        "teleprompter_worker_conversations",
        "teleprompter_gateway_connections",
    ):
        assert essential in used, f"the dashboard does not show {essential}"


def test_the_ttft_panel_selects_the_stage_the_workers_name() -> None:
    ttft = [expr for expr in expressions() if "first_token" in expr]
    assert ttft
    for expr in ttft:
        assert f'stage="{LLM_TTFT_STAGE}"' in expr


def test_every_panel_reads_the_chosen_prometheus() -> None:
    board = dashboard()
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"]


def test_prometheus_scrapes_gateways_and_workers_on_their_default_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings()

    assert set(jobs) == {"teleprompter-gateway", "teleprompter-worker"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
    gateway_ports = _ports(jobs["teleprompter-gateway"])
    worker_ports = _ports(jobs["teleprompter-worker"])
    assert gateway_ports == [defaults.gateway_port]
    assert worker_ports[0] == defaults.worker_http_port
    assert worker_ports == list(range(worker_ports[0], worker_ports[0] + len(worker_ports)))


def _ports(job: dict[str, Any]) -> list[int]:
    return [
        int(target.rsplit(":", 1)[1])
        for static in job["static_configs"]
        for target in static["targets"]
    ]
