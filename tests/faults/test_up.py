"""`up` and `worker` as unlucky users meet them: crashes, taken ports, busy or bad folders."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from tests.rep_client import RepClient
from tests.system_fixtures import system_settings
from tests.up_process import UpProcess, clean_environment
from tests.waiting import wait_until_async

pytestmark = pytest.mark.slow

CONNECT_LINE = r"websocket: (ws://[^?\s]+)\?conversation_id=([^&\s]+)&token=(\S+)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def fixed_ports() -> dict[str, int]:
    return {"--gateway-port": free_port(), "--broker-port": free_port(), "--llm-port": free_port()}


@pytest.fixture(scope="module")
async def running_up(
    tmp_path_factory: pytest.TempPathFactory, fixed_ports: dict[str, int]
) -> AsyncIterator[UpProcess]:
    """One whole system on fixed ports, shared by the tests that try to start a second one."""
    args = [str(part) for pair in fixed_ports.items() for part in pair]
    args += ["--data-dir", str(tmp_path_factory.mktemp("up")), "--llm-ttft-ms", "50"]
    async with UpProcess(args) as up:
        await up.line(CONNECT_LINE)
        yield up
        assert await up.stop() == 0, up.tail()


async def test_a_crashed_worker_is_restarted_and_suggestions_resume(
    running_up: UpProcess,
) -> None:
    ws_url, conversation, token = (await running_up.line(CONNECT_LINE)).groups()
    [worker] = [pid for pid, command in running_up.children().items() if command == "worker"]

    os.kill(worker, signal.SIGKILL)

    await running_up.line(r"worker exited with code -9 .*restarting in", timeout_s=30)
    await running_up.line(r"worker restarted \(pid \d+\)", timeout_s=30)
    async with RepClient(ws_url=ws_url, conversation_id=conversation, token=token) as rep:
        await rep.say("Can we move the renewal to next quarter?")
        [complete] = await rep.wait_for("suggestion_complete", timeout_s=90)
    assert complete["text"]
    assert running_up.process.returncode is None, "up stopped instead of restarting the worker"


async def test_a_second_up_on_the_same_ports_is_refused_in_one_line(
    running_up: UpProcess, fixed_ports: dict[str, int], tmp_path: Path
) -> None:
    args = [str(part) for pair in fixed_ports.items() for part in pair]
    async with UpProcess([*args, "--data-dir", str(tmp_path)]) as second:
        assert await second.exit_code() == 1

    gateway_port = fixed_ports["--gateway-port"]
    assert second.output == [
        f"teleprompter: port {gateway_port} for the gateway is in use (another teleprompter "
        "up?); pass --gateway-port 0 to pick a free one"
    ]
    assert await _healthy(f"http://127.0.0.1:{gateway_port}/healthz"), "the first system broke"


async def test_a_second_up_on_the_same_data_dir_is_refused_in_one_line(
    running_up: UpProcess,
) -> None:
    data_dir = running_up.args[running_up.args.index("--data-dir") + 1]
    args = ["--gateway-port", "0", "--broker-port", "0", "--llm-port", "0", "--data-dir", data_dir]
    async with UpProcess(args) as second:
        assert await second.exit_code() == 1

    [line] = second.output
    assert line.startswith(f"teleprompter: data dir {data_dir} is in use")
    assert f"(pid {running_up.process.pid})" in line


async def test_the_data_dir_and_everything_in_it_is_private(running_up: UpProcess) -> None:
    data_dir = Path(running_up.args[running_up.args.index("--data-dir") + 1])
    modes = _modes(data_dir)
    assert "secret" in modes and "broker" in modes, sorted(modes)

    loose = {name: stat.filemode(mode) for name, mode in modes.items() if mode & 0o077}
    assert loose == {}, "readable or writable by other users"


async def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--gateway-port", "0", "--broker-port", str(port), "--llm-port", "0"]
        async with UpProcess([*args, "--data-dir", str(tmp_path)]) as up:
            assert await up.exit_code() == 1

    assert up.output == [
        f"teleprompter: port {port} for the broker is in use (another teleprompter up?); "
        "pass --broker-port 0 to pick a free one"
    ]


async def test_an_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    args = ["--gateway-port", "0", "--broker-port", "0", "--llm-port", "0"]
    async with UpProcess([*args, "--data-dir", str(not_a_folder / "data")]) as up:
        assert await up.exit_code() == 1

    assert up.output == [
        f"teleprompter: cannot use data dir {not_a_folder / 'data'}: Not a directory"
    ]


async def test_a_missing_speech_model_is_one_line_for_up_and_worker(tmp_path: Path) -> None:
    env = clean_environment(TELEPROMPTER_ASR_MODEL="/nonexistent/whisper")
    args = ["--gateway-port", "0", "--broker-port", "0", "--llm-port", "0"]
    async with UpProcess([*args, "--data-dir", str(tmp_path)], env=env) as up:
        assert await up.exit_code() == 1
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "worker",
        env={**env, "TELEPROMPTER_DATA_DIR": str(tmp_path / "worker")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    worker_output, _ = await asyncio.wait_for(worker.communicate(), 60)

    expected = (
        "teleprompter: speech model directory '/nonexistent/whisper' does not exist "
        "(TELEPROMPTER_ASR_MODEL)"
    )
    assert up.output == [expected]
    assert worker.returncode == 2
    assert worker_output.decode().splitlines() == [expected]


async def test_a_worker_in_a_fresh_folder_makes_its_data_dir_and_stops_on_sigterm(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    fresh_folder = tmp_path / "never" / "made"
    settings = system_settings(bootstrap_servers, fresh_folder)
    admin = TopicAdmin(bootstrap_servers=bootstrap_servers)
    await admin.ensure_topics(TopicCatalog.from_settings(settings).shared_topics)
    env = clean_environment(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap_servers,
        TELEPROMPTER_DATA_DIR=str(fresh_folder),
        TELEPROMPTER_TOPIC_PREFIX=settings.topic_prefix,
        TELEPROMPTER_PARTITIONS=str(settings.partitions),
    )
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teleprompter",
        "worker",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        group = f"{settings.topic_prefix}-worker"

        async def joined_or_exited() -> bool:
            return worker.returncode is not None or await admin.group_is_stable(group, members=1)

        await wait_until_async(joined_or_exited, timeout_s=90, what="the worker to join")
        assert worker.returncode is None, f"the worker exited with {worker.returncode}"
        assert stat.S_IMODE(fresh_folder.stat().st_mode) == 0o700

        worker.terminate()
        assert await asyncio.wait_for(worker.wait(), 60) == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


def _modes(folder: Path) -> dict[str, int]:
    """Permission bits of `folder` ("") and of everything under it, by relative path."""
    paths = [folder, *folder.rglob("*")]
    return {str(p.relative_to(folder)).strip("."): stat.S_IMODE(p.stat().st_mode) for p in paths}


async def _healthy(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status == 200
