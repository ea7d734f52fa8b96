"""Apache Kafka's jars: pinned in deploy/kafka/pom.xml, fetched once by Maven into a local cache.

The cache is `.cache/apache-kafka/<version>-<pom digest>/lib` in the source tree (git-ignored).
Maven downloads into a temporary directory beside it, renamed into place only once complete, so
a directory that exists is a whole download and checking the cache is one `stat`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from teleprompter.apache_kafka.processes import die_with_parent_kill

logger = logging.getLogger(__name__)

SOURCE_ROOT: Final = Path(__file__).resolve().parents[2]
POM_PATH: Final = SOURCE_ROOT / "deploy" / "kafka" / "pom.xml"
DEFAULT_CACHE_DIR: Final = SOURCE_ROOT / ".cache" / "apache-kafka"
FETCH_TIMEOUT_S: Final = 900.0
# A partial download older than this is left over from a fetch that died, not one in progress.
_STALE_PARTIAL_S: Final = 3600.0
_POM_NS: Final = {"m": "http://maven.apache.org/POM/4.0.0"}
# The full plugin name: a bare `dependency:` prefix needs repository metadata first and, when
# Maven Central is unreachable, fails with a message about prefixes instead of the network.
_COPY_GOAL: Final = "org.apache.maven.plugins:maven-dependency-plugin:copy-dependencies"
_MAVEN_NETWORK_OPTIONS: Final = (
    # Fail within minutes, not Maven's default half hour, when Central stops answering.
    "-Dmaven.wagon.rto=60000",
    "-Daether.connector.connectTimeout=10000",
    "-Daether.connector.requestTimeout=60000",
)


class ApacheKafkaError(RuntimeError):
    """Apache Kafka cannot be run here; the message says why, in one line."""


class MissingToolError(ApacheKafkaError):
    """`java` or `mvn` is not installed (exit code 2: the machine's to fix)."""


class FetchError(ApacheKafkaError):
    """Maven could not fetch the pinned artifacts (exit code 1)."""


@dataclass(frozen=True, kw_only=True)
class KafkaArtifacts:
    """A complete set of Apache Kafka server jars, and the java that runs them."""

    version: str
    lib_dir: Path
    java: str

    @property
    def classpath(self) -> str:
        return str(self.lib_dir / "*")


def kafka_version(pom: Path = POM_PATH) -> str:
    """The Kafka release the pom pins (`kafka.version`)."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ApacheKafkaError(f"cannot read the Apache Kafka pin {pom}: {exc}") from None
    version = root.findtext("m:properties/m:kafka.version", namespaces=_POM_NS)
    if not version:
        raise ApacheKafkaError(f"{pom} sets no <kafka.version> property")
    return version.strip()


def find_java() -> str:
    """The java that runs Kafka: $JAVA_HOME/bin/java if set (as Kafka's scripts do), else PATH's."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise MissingToolError(
            "java not found: Apache Kafka needs Java 17 or newer on PATH (or JAVA_HOME)"
        )
    return found


def find_maven() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise MissingToolError(
            "mvn not found: Maven is needed once to fetch Apache Kafka's jars from Maven Central"
        )
    return found


def cached_lib_dir(*, cache_dir: Path = DEFAULT_CACHE_DIR, pom: Path = POM_PATH) -> Path:
    """Where the jars of this pom live once fetched; any edit to the pom is a new place."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    return cache_dir / f"{kafka_version(pom)}-{digest}" / "lib"


def ensure_artifacts(
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    pom: Path = POM_PATH,
    echo: Callable[[str], None] | None = None,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> KafkaArtifacts:
    """The pinned jars, fetched with Maven first if the cache lacks them (blocks meanwhile).

    Raises MissingToolError without java (or without mvn when a fetch is needed), FetchError when
    Maven fails.
    """
    java = find_java()
    lib_dir = cached_lib_dir(cache_dir=cache_dir, pom=pom)
    version = kafka_version(pom)
    if not lib_dir.is_dir():
        mvn = find_maven()
        if echo is not None:
            echo(f"fetching Apache Kafka {version} with Maven into {lib_dir.parent} (once)...")
        _fetch(mvn, pom=pom, target=lib_dir.parent, timeout_s=timeout_s)
    return KafkaArtifacts(version=version, lib_dir=lib_dir, java=java)


def _fetch(mvn: str, *, pom: Path, target: Path, timeout_s: float) -> None:
    """Run Maven into a temporary directory beside `target`; rename it into place when done."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target.parent)
    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    maven_log = target.parent / "maven.log"
    command = [
        mvn,
        "-B",
        "-ntp",
        "-f",
        str(pom),
        *_MAVEN_NETWORK_OPTIONS,
        _COPY_GOAL,
        f"-DoutputDirectory={partial / 'lib'}",
        "-DincludeScope=runtime",
    ]
    try:
        with maven_log.open("wb") as log:
            try:
                code = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent_kill,
                    timeout=timeout_s,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                raise FetchError(
                    f"could not fetch Apache Kafka {kafka_version(pom)}: Maven had not finished "
                    f"after {timeout_s:.0f} s (full log: {maven_log})"
                ) from None
        if code != 0:
            raise FetchError(
                f"could not fetch Apache Kafka {kafka_version(pom)} from Maven Central: "
                f"{_maven_error(maven_log)} (full log: {maven_log})"
            )
        try:
            partial.rename(target)
        except OSError:
            # Another fetch finished first: its complete copy is as good as ours.
            if not target.is_dir():
                raise
        logger.info("Apache Kafka jars fetched into %s", target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _maven_error(log: Path) -> str:
    """Maven's first error line, without its decorations."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("[ERROR]") and line[7:].strip():
            return line[7:].strip().removesuffix("-> [Help 1]").strip()
    return "Maven failed without an error line"


def _remove_stale_partials(cache_dir: Path) -> None:
    now = time.time()
    for partial in cache_dir.glob(".*.partial-*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
