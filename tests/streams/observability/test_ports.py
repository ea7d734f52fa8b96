"""A worker's HTTP port: a chosen port that is taken stops it; the default gives way."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from core.settings import load_settings
from streams.observability.server import WorkerHttpError, bind_worker_port


@pytest.fixture
def taken() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_a_chosen_port_that_is_taken_is_an_error_naming_the_setting(taken: int) -> None:
    with pytest.raises(WorkerHttpError, match=f"127.0.0.1:{taken}.*TELEPROMPTER_WORKER_HTTP_PORT"):
        bind_worker_port("127.0.0.1", taken, chosen=True)


def test_the_default_port_when_taken_gives_way_to_a_free_one(
    taken: int, caplog: pytest.LogCaptureFixture
) -> None:
    sock = bind_worker_port("127.0.0.1", taken, chosen=False)
    try:
        port = sock.getsockname()[1]
        assert port not in (0, taken)
        assert f"port {taken} is taken: worker metrics on port {port} instead" in caplog.text
    finally:
        sock.close()


def test_a_port_from_the_environment_counts_as_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "worker_http_port" not in load_settings().model_fields_set
    monkeypatch.setenv("TELEPROMPTER_WORKER_HTTP_PORT", "9181")
    assert "worker_http_port" in load_settings().model_fields_set
