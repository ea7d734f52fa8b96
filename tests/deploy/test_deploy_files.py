"""deploy/ agrees with the code: every file parses; environment names, commands and ports are ours.

No container engine runs where the suite runs, so the Compose file and the Kubernetes manifests
are checked against what they drive instead: Settings, the command line and each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import click
import pytest
import yaml

from core.kafka.catalog import TopicCatalog
from core.settings import environment_names, load_settings
from teleprompter.cli import main

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml_documents(path)]


def manifest(kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml_documents(COMPOSE)[0]["services"]
    return services


def is_ours(image: str) -> bool:
    return image.rsplit("/", maxsplit=1)[-1].startswith("teleprompter:")


def our_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, container) for every container of ours in the Kubernetes manifests."""
    for m in manifests():
        pod = m.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            if is_ours(container["image"]):
                yield f"{m['kind']}/{m['metadata']['name']}", container


def command_path(args: list[str]) -> list[str]:
    """The subcommands `teleprompter ARGS` runs; fails as the real command line would."""
    command: click.Command = main
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"{' '.join(args)!r} names no command"
        name, rest = rest[0], rest[1:]
        sub = command.commands.get(name)
        assert sub is not None, f"teleprompter has no command {' '.join([*path, name])!r}"
        command, path = sub, [*path, name]
    command.make_context(" ".join(path), rest)  # raises on an unknown option or bad value
    return path


def option_value(args: list[str], option: str) -> str | None:
    return args[args.index(option) + 1] if option in args else None


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


# --- every file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"}), ids=str
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert yaml_documents(path)


# --- settings -------------------------------------------------------------------------------


def test_kubernetes_sets_only_settings_that_exist() -> None:
    known = environment_names()
    config = manifest("ConfigMap", "teleprompter")["data"]
    secret = manifest("Secret", "teleprompter")["stringData"]
    env = {e["name"] for _, c in our_containers() for e in c.get("env", [])}

    assert sorted((set(config) | set(secret) | env) - set(known)) == []


def test_kubernetes_configuration_is_valid_settings() -> None:
    known = environment_names()
    config = manifest("ConfigMap", "teleprompter")["data"]
    settings = load_settings(**{known[name]: value for name, value in config.items()})

    assert settings.replication_factor == 3
    assert settings.kafka_bootstrap_servers


def test_compose_sets_only_settings_that_exist() -> None:
    known = environment_names()
    names = set(env_file(COMPOSE.parent / ".env.example"))
    for service in compose_services().values():
        if is_ours(service.get("image", "")):
            names |= set(service.get("environment", {}))

    assert sorted(names - set(known)) == []


def test_every_container_of_ours_gets_its_secret_from_a_secret() -> None:
    for where, container in our_containers():
        secret_refs = [ref for ref in container.get("envFrom", []) if "secretRef" in ref]
        plain = {e["name"] for e in container.get("env", []) if "value" in e}
        assert not plain & {"TELEPROMPTER_SECRET", "OPENAI_API_KEY"}, where
        if container["args"][0] in {"gateway", "worker"}:
            assert secret_refs, f"{where} has no secretRef"


# --- commands -------------------------------------------------------------------------------


def test_every_kubernetes_command_exists() -> None:
    paths = {" ".join(command_path(c["args"])) for _, c in our_containers()}

    assert paths == {"topics create", "gateway", "worker"}


def test_every_compose_command_exists() -> None:
    paths = {
        " ".join(command_path(service["command"]))
        for service in compose_services().values()
        if is_ours(service.get("image", ""))
    }

    assert paths == {"topics create", "gateway", "worker", "llm-sim"}


def test_the_image_runs_the_teleprompter_command_with_every_package() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    packages = re.search(r"include = \[(.*)\]", pyproject)
    assert packages is not None

    assert 'ENTRYPOINT ["teleprompter"]' in dockerfile
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert f"COPY {package} {package}" in dockerfile, package


# --- ports ----------------------------------------------------------------------------------


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def test_kubernetes_gateway_listens_where_its_probes_service_and_scrape_look() -> None:
    gateway = manifest("StatefulSet", "teleprompter-gateway")
    pod = gateway["spec"]["template"]
    [container] = pod["spec"]["containers"]
    ports = container_ports(container)

    assert int(option_value(container["args"], "--port") or 0) == ports["http"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["tcpSocket"]["port"] in ports
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == ports["http"]
    for name in ("teleprompter-gateway", "teleprompter-gateway-pods"):
        [service_port] = manifest("Service", name)["spec"]["ports"]
        assert service_port["targetPort"] in ports
    assert gateway["spec"]["serviceName"] == "teleprompter-gateway-pods"


def test_kubernetes_gateway_ids_are_stable_legal_reply_topic_names() -> None:
    [container] = manifest("StatefulSet", "teleprompter-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    [gateway_id] = [e for e in container["env"] if e["name"] == "TELEPROMPTER_GATEWAY_ID"]

    assert gateway_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    load_settings(gateway_id="teleprompter-gateway-0")  # a pod name is a legal gateway id


def test_kubernetes_worker_serves_health_and_metrics_where_probes_and_scrape_look() -> None:
    pod = manifest("Deployment", "teleprompter-worker")["spec"]["template"]
    [container] = pod["spec"]["containers"]
    ports = container_ports(container)
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert int(env["TELEPROMPTER_WORKER_HTTP_PORT"] or 0) == ports["http"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == ports["http"]


def test_compose_ports_healthchecks_and_scrape_targets_agree() -> None:
    services = compose_services()
    scrape = yaml_documents(COMPOSE.parent / "prometheus.yml")[0]["scrape_configs"]
    targets = {job["job_name"]: job for job in scrape}
    gateways = {name: s for name, s in services.items() if s.get("command", [])[:1] == ["gateway"]}

    assert len(gateways) == 2
    ids = {option_value(s["command"], "--gateway-id") for s in gateways.values()}
    assert len(ids) == len(gateways), "each gateway needs its own id (its reply topic)"
    for name, service in gateways.items():
        port = option_value(service["command"], "--port")
        assert [m.split(":")[1] for m in service["ports"]] == [port]
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
        assert f"{name}:{port}" in targets["teleprompter-gateway"]["static_configs"][0]["targets"]
    worker_port = int(services["worker"]["environment"]["TELEPROMPTER_WORKER_HTTP_PORT"])
    [worker_sd] = targets["teleprompter-worker"]["dns_sd_configs"]
    assert worker_sd["port"] == worker_port


# --- Kafka ----------------------------------------------------------------------------------


def test_keda_scales_workers_on_their_own_group_and_topics() -> None:
    known = environment_names()
    config = manifest("ConfigMap", "teleprompter")["data"]
    settings = load_settings(**{known[name]: value for name, value in config.items()})
    catalog = TopicCatalog.from_settings(settings)
    scaled = manifest("ScaledObject", "teleprompter-worker")["spec"]

    assert scaled["scaleTargetRef"]["name"] == "teleprompter-worker"
    assert scaled["maxReplicaCount"] == settings.partitions
    for trigger in scaled["triggers"]:
        metadata = trigger["metadata"]
        assert metadata["consumerGroup"] == f"{settings.topic_prefix}-worker"
        assert metadata["topic"] in {spec.name for spec in catalog.shared_topics}
        assert metadata["bootstrapServers"] == settings.kafka_bootstrap_servers


def test_compose_kafka_matches_the_replication_our_topics_ask_for() -> None:
    services = compose_services()
    brokers = {name: s for name, s in services.items() if name.startswith("kafka-")}
    ours = services["worker"]["environment"]

    assert len(brokers) == int(ours["TELEPROMPTER_REPLICATION_FACTOR"])
    for service in brokers.values():
        env = service["environment"]
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == int(
            ours["TELEPROMPTER_MIN_INSYNC_REPLICAS"]
        )
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    voters = {f"{n}@kafka-{n}:9093" for n in range(1, len(brokers) + 1)}
    assert (
        set(
            next(iter(brokers.values()))["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        )
        == voters
    )


def test_compose_runs_the_kafka_release_the_tests_run() -> None:
    pom = ElementTree.parse(DEPLOY / "kafka" / "pom.xml")
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = pom.findtext("m:properties/m:kafka.version", namespaces=namespace)
    images = {s["image"] for name, s in compose_services().items() if name.startswith("kafka-")}

    assert images == {f"apache/kafka:{version}"}
