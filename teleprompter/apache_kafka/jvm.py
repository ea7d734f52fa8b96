"""How Kafka's JVMs are launched: heap, JIT profile, logging, and a class-data archive.

Starting a Kafka node is mostly loading and compiling classes, which on a busy 2-core machine
takes a minute. Two things cut it down:
- a class-data-sharing archive of Kafka's classes (JDK AppCDS), made once per jar set and JDK
  by one short StorageTool run, and used by every JVM after: no effect on how Kafka runs;
- the `quick-start` profile, C1-only JIT: a fraction of the CPU to start, at some cost in peak
  throughput. For tests; `server` (Kafka's own flags) for operations and benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Final, Literal

from teleprompter.apache_kafka.artifacts import KafkaArtifacts
from teleprompter.apache_kafka.processes import die_with_parent_kill

logger = logging.getLogger(__name__)

JvmProfile = Literal["server", "quick-start"]

ARCHIVE_TIMEOUT_S: Final = 180.0
# Bounded in bytes: each node keeps at most 3 x 10 MB of logs.
LOG4J2_PROPERTIES: Final = """\
status = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 10MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
# One line per request is for debugging Kafka itself.
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def java_command(
    artifacts: KafkaArtifacts,
    *,
    heap_mb: int,
    profile: JvmProfile,
    logs_dir: Path,
    log_config: Path,
    archive: Path | None,
    dump_archive_to: Path | None = None,
) -> list[str]:
    """`java ... -cp <jars>`: append the main class and its arguments."""
    command = [
        artifacts.java,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 64)}m",
        # Kafka's own JVM flags (kafka-run-class.sh), less its heap.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}",
        f"-Dlog4j2.configurationFile={log_config}",
    ]
    if profile == "quick-start":
        command.append("-XX:TieredStopAtLevel=1")
    if dump_archive_to is not None:
        command.append(f"-XX:ArchiveClassesAtExit={dump_archive_to}")
    elif archive is not None:
        # An archive that no longer matches (another JDK, other jars) is ignored by the JVM.
        command.append(f"-XX:SharedArchiveFile={archive}")
    return [*command, "-cp", artifacts.classpath]


def class_archive_path(artifacts: KafkaArtifacts) -> Path:
    """Where the archive for these jars and this JDK lives, beside the jars."""
    jdk = hashlib.sha256(os.path.realpath(artifacts.java).encode()).hexdigest()[:8]
    return artifacts.lib_dir.parent / f"classes-{jdk}.jsa"


async def ensure_class_archive(artifacts: KafkaArtifacts) -> Path | None:
    """The class archive, made now if missing by formatting a throwaway log dir; None if it
    cannot be made (Kafka then starts without one, only slower)."""
    path = class_archive_path(artifacts)
    if path.exists():
        return path
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory(prefix=".archive-", dir=path.parent) as scratch:
        work = Path(scratch)
        (work / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        (work / "server.properties").write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            "controller.quorum.voters=1@127.0.0.1:9093\n"
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n"
            f"controller.listener.names=CONTROLLER\nlog.dirs={work / 'data'}\n"
        )
        command = java_command(
            artifacts,
            heap_mb=256,
            profile="quick-start",
            logs_dir=work,
            log_config=work / "log4j2.properties",
            archive=None,
            dump_archive_to=partial,
        )
        code = await run_to_completion(
            [*command, *format_arguments("AAAAAAAAAAAAAAAAAAAAAA", work / "server.properties")],
            log_path=work / "archive.log",
            timeout_s=ARCHIVE_TIMEOUT_S,
        )
    if code != 0 or not partial.exists():
        logger.warning("no class archive for Apache Kafka (exit %s): nodes start slower", code)
        partial.unlink(missing_ok=True)
        return None
    partial.replace(path)
    logger.info("class archive for Apache Kafka written to %s", path)
    return path


def format_arguments(cluster_id: str, config: Path) -> list[str]:
    """The main class and arguments that format a node's log dir for a cluster."""
    return ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={config}"]


async def run_to_completion(command: list[str], *, log_path: Path, timeout_s: float) -> int | None:
    """Run a short-lived JVM with its output in `log_path`; its exit code, None on time-out."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent_kill,
        )
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            return None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
