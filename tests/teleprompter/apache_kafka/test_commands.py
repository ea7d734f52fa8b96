"""`teleprompter kafka up|fetch` as a user runs them, and the one line that says what is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from teleprompter.apache_kafka.artifacts import (
    FetchError,
    MissingToolError,
    ensure_artifacts,
    kafka_version,
)
from tests.teleprompter.apache_kafka.jvms import jvms_under, port_open
from tests.waiting import wait_until


async def test_up_serves_stops_on_sigterm_and_restarts_on_its_storage(tmp_path: Path) -> None:
    up = await _kafka("up", "--jvm", "quick-start", "--data-dir", str(tmp_path))
    try:
        line = await asyncio.wait_for(_stdout_line(up), 180)
        name, _, servers = line.partition("=")
        assert name == "KAFKA_BOOTSTRAP_SERVERS"
        admin = AdminClient({"bootstrap.servers": servers})
        assert list((await asyncio.to_thread(admin.list_topics, timeout=30)).brokers) == [1]
        await asyncio.to_thread(_create_topic, admin, "kept")
        assert len(jvms_under(tmp_path)) == 1

        up.send_signal(signal.SIGTERM)

        assert await asyncio.wait_for(up.wait(), 90) == 0
    finally:
        await _reap(up)
    assert jvms_under(tmp_path) == []
    assert not await port_open(int(servers.rsplit(":", 1)[1]))
    node = tmp_path / "apache-kafka" / "node-1"
    assert (node / "logs" / "server.log").stat().st_size > 0

    again = await _kafka("up", "--jvm", "quick-start", "--data-dir", str(tmp_path))
    try:
        assert await asyncio.wait_for(_stdout_line(again), 180) == line  # the same ports
        metadata = await asyncio.to_thread(admin.list_topics, timeout=30)
        assert "kept" in metadata.topics
        assert (
            metadata.cluster_id
            == (node / "data" / "meta.properties").read_text().split("cluster.id=")[1].split()[0]
        )

        again.kill()  # no SIGTERM: the JVM must die with its parent all the same
        await again.wait()

        await wait_until(lambda: jvms_under(tmp_path) == [], timeout_s=30, what="no JVM left")
    finally:
        await _reap(again)


async def test_missing_java_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    process = await _kafka("up", "--data-dir", str(tmp_path), path=str(empty_bin))
    out, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 2
    assert out == b""
    assert err.decode().splitlines() == [
        "teleprompter: java not found: Apache Kafka needs Java 17 or newer on PATH (or JAVA_HOME)"
    ]


def test_missing_maven_is_named_when_the_jars_must_be_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java_only = tmp_path / "bin"
    java_only.mkdir()
    java = shutil.which("java")
    assert java is not None, "the build machine has Java 17"
    (java_only / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(java_only))
    monkeypatch.delenv("JAVA_HOME", raising=False)

    with pytest.raises(MissingToolError, match=r"^mvn not found: Maven is needed once"):
        ensure_artifacts(cache_dir=tmp_path / "cache")


def test_a_failed_download_names_the_reason_and_leaves_no_partial_cache(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    real = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "pom.xml"
    pom.write_text(real.read_text().replace(f">{kafka_version(real)}<", ">0.0.0-no-such-release<"))
    cache = tmp_path / "cache"

    with pytest.raises(FetchError) as failure:
        ensure_artifacts(cache_dir=cache, pom=pom)

    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("could not fetch Apache Kafka 0.0.0-no-such-release")
    assert "kafka_2.13" in message
    assert [p.name for p in cache.iterdir()] == ["maven.log"]


# --- helpers --------------------------------------------------------------------------------
async def _kafka(*args: str, path: str | None = None) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEPROMPTER_")}
    if path is not None:
        env["PATH"] = path
        env.pop("JAVA_HOME", None)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "kafka",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stdout_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await process.stdout.readline()
    assert line, "kafka up ended without printing KAFKA_BOOTSTRAP_SERVERS"
    return line.decode().strip()


def _create_topic(admin: AdminClient, name: str) -> None:
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()
