"""Fixtures for the streams tests: a real LLM simulator on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from streams.llm_sim.server import create_app


async def start_simulator(*, ttft_ms: float, tokens_per_s: float) -> TestServer:
    """A simulator serving on 127.0.0.1 at a free port; close it when done."""
    server = TestServer(create_app(ttft_ms=ttft_ms, tokens_per_s=tokens_per_s))
    await server.start_server()
    return server


@pytest.fixture
async def sim() -> AsyncIterator[TestServer]:
    """A fast simulator: 5 ms to the first token, 2000 tokens a second."""
    server = await start_simulator(ttft_ms=5.0, tokens_per_s=2000.0)
    yield server
    await server.close()
