"""A rep's WebSocket client for tests: connects with a token, sends chunks, awaits messages."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp


@dataclass(kw_only=True)
class RepClient:
    """One real WebSocket connection to a gateway, recording every message it receives."""

    ws_url: str
    conversation_id: str
    token: str
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)
    """When each message of `received` arrived (time.monotonic()), index for index."""
    close_code: int | None = None
    _session: aiohttp.ClientSession | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closed: bool = False

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            f"{self.ws_url}?conversation_id={self.conversation_id}&token={self.token}",
            autoping=True,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("ready")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(data)

    async def say(self, text: str, *, speaker: str = "customer", final: bool = True) -> None:
        await self.send(
            {"type": "transcript_chunk", "text": text, "speaker": speaker, "final": final}
        )

    def of_type(self, kind: str, *, turn_id: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.received
            if m.get("type") == kind and (turn_id is None or m.get("turn_id") == turn_id)
        ]

    async def wait_for(
        self, kind: str, *, count: int = 1, turn_id: str | None = None, timeout_s: float = 20.0
    ) -> list[dict[str, Any]]:
        """The first `count` messages of `kind` (optionally of one turn), once they have come."""

        def enough() -> bool:
            return len(self.of_type(kind, turn_id=turn_id)) >= count or self._closed

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(enough), timeout_s)
            except TimeoutError:
                seen = [m.get("type") for m in self.received]
                raise TimeoutError(
                    f"{self.conversation_id}: {count} x {kind!r} not in {timeout_s} s; got {seen}"
                ) from None
        found = self.of_type(kind, turn_id=turn_id)
        if len(found) < count:
            raise ConnectionError(f"connection closed ({self.close_code}) before {kind!r}")
        return found[:count]

    async def wait_closed(self, *, timeout_s: float = 20.0) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        return self.close_code

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    async with self._arrived:
                        self.received.append(json.loads(frame.data))
                        self.arrived_at.append(time.monotonic())
                        self._arrived.notify_all()
        finally:
            self.close_code = self._ws.close_code
            self._closed = True
            async with self._arrived:
                self._arrived.notify_all()
