"""kcat (the command-line client on librdkafka) against both backends.

Metadata, produce and consume with timestamps (LogAppendTime shows the broker's clock), a
static group member, and SASL on the plaintext listener. kcat comes from the Debian package
that scripts/test.sh installs when missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.broker.helpers import create_topic

LOG_APPEND_TIME_PREFIX = "LogAppendTime"


@pytest.fixture(scope="module")
def kcat() -> str:
    found = shutil.which("kcat")
    assert found is not None, "kcat is needed: scripts/test.sh installs the Debian package"
    return found


def _run(kcat: str, *arguments: str, stdin: str = "", timeout_s: float = 60) -> str:
    finished = subprocess.run(
        [kcat, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_metadata_lists_the_topic_and_its_partitions(
    kcat: str, bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name, partitions=3)
    listing = _run(kcat, "-b", bootstrap_servers, "-L", "-t", topic)
    assert f'topic "{topic}" with 3 partitions' in listing


def test_records_produced_are_consumed_with_keys_and_offsets(
    kcat: str, bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    _run(kcat, "-b", bootstrap_servers, "-P", "-t", topic, "-K", ":", stdin="a:one\nb:two\n")
    out = _run(kcat, "-b", bootstrap_servers, "-C", "-t", topic, "-e", "-f", "%o %k %s\\n")
    assert out.splitlines() == ["0 a one", "1 b two"]


def test_log_append_time_is_shown_as_the_records_timestamp(
    kcat: str, bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(
        bootstrap_servers, unique_name, config={"message.timestamp.type": "LogAppendTime"}
    )
    before_ms = int(time.time() * 1000)
    _run(kcat, "-b", bootstrap_servers, "-P", "-t", topic, stdin="stamped\n")
    out = _run(kcat, "-b", bootstrap_servers, "-C", "-t", topic, "-e", "-f", "%T %s\\n")
    stamp, value = out.split()
    assert value == "stamped"
    assert int(stamp) >= before_ms


def test_a_static_group_member_consumes(
    kcat: str, bootstrap_servers: str, unique_name: str
) -> None:
    topic = create_topic(bootstrap_servers, unique_name)
    _run(kcat, "-b", bootstrap_servers, "-P", "-t", topic, stdin="for the group\n")
    out = _run(
        kcat,
        "-b",
        bootstrap_servers,
        "-G",
        unique_name,
        "-X",
        "group.instance.id=kcat-1",
        "-X",
        "auto.offset.reset=earliest",
        "-c",
        "1",
        "-f",
        "%s\\n",
        topic,
    )
    assert out.splitlines() == ["for the group"]


def test_sasl_on_the_plaintext_listener_fails_the_same_way(
    kcat: str, bootstrap_servers: str
) -> None:
    finished = subprocess.run(
        [
            kcat,
            "-b",
            bootstrap_servers,
            "-L",
            "-m",
            "5",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanism=PLAIN",
            "-X",
            "sasl.username=rep",
            "-X",
            "sasl.password=secret",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert "Request not valid in current SASL state" in finished.stderr
