"""Fixtures that run the whole system (gateway, worker, LLM simulator) on the session's broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from core.settings import load_settings
from teleprompter.local_system import LocalSystem
from tests.rep_client import RepClient

RepClientFactory = Callable[..., AbstractAsyncContextManager[RepClient]]


def system_settings(bootstrap_servers: str, data_dir: Path, **overrides: Any) -> Any:
    """Settings for a system of its own: own topics, own consumer group, own gateway id."""
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "data_dir": data_dir,
        "topic_prefix": f"t{tag}",
        "gateway_id": f"gw-{tag}",
        "gateway_port": 0,
        "llm_sim_port": 0,
        "partitions": 4,
        "llm_ttft_ms": 50.0,
        # Slow enough that a suggestion is still streaming when a test reconnects or interrupts.
        "llm_tokens_per_s": 20.0,
        "log_level": "INFO",
    }
    return load_settings(**{**base, **overrides})


@pytest.fixture(scope="session")
async def system(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LocalSystem]:
    settings = system_settings(bootstrap_servers, tmp_path_factory.mktemp("system"))
    async with LocalSystem(settings=settings) as running:
        yield running


@pytest.fixture
def rep_client(system: LocalSystem) -> RepClientFactory:
    """Opens a real WebSocket to the system's gateway (or `ws_url`) for a conversation."""

    def connect(conversation_id: str | None = None, *, ws_url: str | None = None) -> RepClient:
        cid = conversation_id or f"conv-{uuid.uuid4().hex[:8]}"
        return RepClient(
            ws_url=ws_url or system.ws_url, conversation_id=cid, token=system.token(cid)
        )

    return connect
