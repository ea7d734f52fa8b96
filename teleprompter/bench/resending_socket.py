"""A rep's WebSocket that keeps what it sent until the gateway acks it, and resends the rest
after a reconnect: the bench's (and the fault tests') twin of the page's connection.js.

Every JSON message gets a `seq` (per client, kept across reconnects) and every audio byte an
offset in the client's audio stream. The gateway answers `ack` once Kafka has stored a
message (or every audio byte before an offset), or `error` naming it. What is neither is
"sent, never acked": the bench's count of lost messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import orjson

logger = logging.getLogger(__name__)

MessageHandler = Callable[[dict[str, Any], float], None]
"""Every server message but acks, with the loop time it arrived."""

CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_REPLACED: Final = 4002
# After these a reconnect would only be refused again.
FINAL_CLOSE_CODES: Final = frozenset({1008, CLOSE_UNAUTHORIZED, CLOSE_REPLACED})
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024


@dataclass(kw_only=True)
class Unacked:
    """A message or audio frame sent (or waiting to be) and not yet answered."""

    kind: Literal["message", "frame"]
    data: str | bytes
    size: int
    seq: int | None = None
    offset: int | None = None
    sent: bool = False  # on some connection already


@dataclass(kw_only=True)
class DeliveryCounts:
    """What happened to everything sent, for the report."""

    messages_sent: int = 0
    messages_acked: int = 0
    messages_refused: int = 0  # answered by an error naming the seq
    messages_dropped: int = 0  # pushed out of the bounded resend buffer, never acked
    audio_bytes_sent: int = 0
    audio_bytes_acked: int = 0  # passed by an audio ack: stored, or refused (below)
    audio_bytes_refused: int = 0  # named by an error's audio range
    audio_bytes_dropped: int = 0
    reconnects: int = 0
    resent: int = 0  # messages and frames sent again after a reconnect
    refusals: dict[str, int] = field(default_factory=dict)

    def add(self, other: DeliveryCounts) -> None:
        for name in (
            "messages_sent",
            "messages_acked",
            "messages_refused",
            "messages_dropped",
            "audio_bytes_sent",
            "audio_bytes_acked",
            "audio_bytes_refused",
            "audio_bytes_dropped",
            "reconnects",
            "resent",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for code, count in other.refusals.items():
            self.refusals[code] = self.refusals.get(code, 0) + count


class ResendingSocket:
    """One client's connection to a conversation, across reconnects.

    `url` is the /ws URL with its credentials; a `client_id` is added. `urls` may name more
    gateways to try in turn (a reconnect moves on to the next), as a load balancer would.
    """

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        urls: list[str],
        on_message: MessageHandler,
        client_id: str | None = None,
        max_unacked_message_bytes: int = 1024 * 1024,
        max_unacked_audio_bytes: int = 15 * 32_000,
        connect_timeout_s: float = 30.0,
        reconnect: bool = True,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        on_close: Callable[[int | None], None] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("need at least one URL")
        self.client_id = client_id or uuid.uuid4().hex
        self._urls = [f"{url}&client_id={self.client_id}" for url in urls]
        self._http = http
        self._on_message = on_message
        self._on_close = on_close
        self._max_unacked = {"message": max_unacked_message_bytes, "frame": max_unacked_audio_bytes}
        self._connect_timeout_s = connect_timeout_s
        self._reconnect = reconnect
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self.counts = DeliveryCounts()
        self.session_id: str | None = None
        self._unacked: list[Unacked] = []
        self._unacked_bytes = {"message": 0, "frame": 0}
        self._next_seq = 0
        self._audio_offset = 0
        self._audio_config: dict[str, Any] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._live = asyncio.Event()
        self._changed = asyncio.Event()  # an answer arrived, or the connection changed
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._attempt = 0
        self._stopped = False
        self._final_close: int | None = None

    # --- state -----------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self._live.is_set()

    @property
    def finished(self) -> bool:
        """Closed by us, or by the server for good (unauthorized, replaced)."""
        return self._stopped or self._final_close is not None

    @property
    def unacked_messages(self) -> int:
        return sum(1 for item in self._unacked if item.kind == "message")

    @property
    def unacked_audio_bytes(self) -> int:
        return self._unacked_bytes["frame"]

    # --- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Open the first connection and wait for `ready`; False if that fails (no retry)."""
        if not await self._open(resending=False):
            return False
        self._reader = asyncio.create_task(self._run(), name=f"socket-{self.client_id}")
        return True

    async def wait_settled(self, timeout_s: float) -> bool:
        """Wait until everything sent is answered (or `timeout_s`); True if it all was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._unacked and not self.finished:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return not self._unacked

    async def close(self) -> None:
        """Hang up for good; what is unacked stays counted as such."""
        self._stopped = True
        self._live.clear()
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    # --- sending ---------------------------------------------------------------------------

    async def send_json(self, message: dict[str, Any]) -> int:
        """Number `message`, keep it until answered, send it now if connected; its seq."""
        seq = self._next_seq
        self._next_seq += 1
        stamped = {**message, "seq": seq}
        if message.get("type") == "audio_config":
            self._audio_config = dict(message)
            if self._audio_offset:
                stamped["offset"] = self._audio_offset
        data = orjson.dumps(stamped).decode()
        self.counts.messages_sent += 1
        await self._send(Unacked(kind="message", data=data, size=len(data.encode()), seq=seq))
        return seq

    async def send_audio(self, data: bytes) -> None:
        """One audio frame: kept, by its offset in the stream, until acked."""
        self.counts.audio_bytes_sent += len(data)
        offset = self._audio_offset
        self._audio_offset += len(data)
        await self._send(Unacked(kind="frame", data=data, size=len(data), offset=offset))

    async def _send(self, item: Unacked) -> None:
        self._keep(item)
        async with self._send_lock:
            ws = self._ws
            if not self.live or ws is None:
                return  # resent after the next `ready`
            try:
                item.sent = True
                await _send_frame(ws, item.data)
            except (ConnectionError, aiohttp.ClientError) as exc:
                logger.debug("%s: send failed, kept for resending: %s", self.client_id, exc)

    def _keep(self, item: Unacked) -> None:
        self._unacked.append(item)
        self._unacked_bytes[item.kind] += item.size
        while self._unacked_bytes[item.kind] > self._max_unacked[item.kind]:
            oldest = next(i for i, kept in enumerate(self._unacked) if kept.kind == item.kind)
            dropped = self._unacked.pop(oldest)
            self._unacked_bytes[item.kind] -= dropped.size
            if dropped.kind == "frame":
                self.counts.audio_bytes_dropped += dropped.size
            else:
                self.counts.messages_dropped += 1

    # --- receiving and reconnecting ----------------------------------------------------------

    async def _open(self, *, resending: bool) -> bool:
        url = self._urls[self._attempt % len(self._urls)]
        self._attempt += 1
        try:
            ws = await self._http.ws_connect(
                url,
                autoping=True,
                heartbeat=None,
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.debug("%s: cannot connect: %s", self.client_id, exc)
            return False
        except RuntimeError as exc:  # the HTTP session was closed under us: nothing to retry
            logger.debug("%s: cannot connect: %s", self.client_id, exc)
            self._stopped = True
            return False
        try:
            first = await ws.receive(timeout=self._connect_timeout_s)
        except TimeoutError:
            await ws.close()
            return False
        if first.type is not aiohttp.WSMsgType.TEXT or orjson.loads(first.data).get("type") != (
            "ready"
        ):
            if first.type is aiohttp.WSMsgType.CLOSE and first.data in FINAL_CLOSE_CODES:
                self._final_close = int(first.data)
            await ws.close()
            return False
        self.session_id = orjson.loads(first.data).get("session_id")
        async with self._send_lock:
            self._ws = ws
            await self._resend(ws, count=resending)
            self._live.set()
        self._changed.set()
        return True

    async def _resend(self, ws: aiohttp.ClientWebSocketResponse, *, count: bool) -> None:
        """A new session: the audio format (from where the unacked audio starts), then
        everything unacked in its original order."""
        frames = [item for item in self._unacked if item.kind == "frame"]
        if self._audio_config is not None and (frames or self._audio_offset):
            resume_at = frames[0].offset if frames else self._audio_offset
            await ws.send_str(orjson.dumps({**self._audio_config, "offset": resume_at}).decode())
        for item in self._unacked:
            if count and item.sent:
                self.counts.resent += 1
            item.sent = True
            await _send_frame(ws, item.data)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            ws = self._ws
            assert ws is not None
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    self._receive(orjson.loads(frame.data), loop.time())
            self._live.clear()
            self._changed.set()
            code = ws.close_code
            if self._on_close is not None and not self._stopped:
                self._on_close(code)
            if self._stopped or not self._reconnect or code in FINAL_CLOSE_CODES:
                self._final_close = code if code in FINAL_CLOSE_CODES else None
                self._stopped = self._stopped or not self._reconnect
                return
            await self._reconnect_with_backoff()

    async def _reconnect_with_backoff(self) -> None:
        delay_s = self._initial_backoff_s
        while not self._stopped:
            await asyncio.sleep(delay_s)  # backoff between attempts
            if await self._open(resending=True):
                self.counts.reconnects += 1
                return
            if self._final_close is not None:
                self._stopped = True
                return
            delay_s = min(self._max_backoff_s, delay_s * 2)

    def _receive(self, message: dict[str, Any], at: float) -> None:
        kind = message.get("type")
        if kind == "ack":
            self._settle(message, refused=None)
            return
        if kind == "error" and ("seq" in message or "audio_offset" in message):
            self._settle(message, refused=str(message.get("code")))
        self._on_message(message, at)

    def _settle(self, message: dict[str, Any], *, refused: str | None) -> None:
        seq = message.get("seq")
        audio_offset = message.get("audio_offset")
        self._changed.set()
        if refused is not None:
            self.counts.refusals[refused] = self.counts.refusals.get(refused, 0) + 1
            if audio_offset is not None:
                self.counts.audio_bytes_refused += int(message.get("audio_bytes") or 0)
                audio_offset = None  # the ack that follows moves past the refused range
        kept: list[Unacked] = []
        for item in self._unacked:
            answered = (item.kind == "message" and seq is not None and item.seq == seq) or (
                item.kind == "frame"
                and audio_offset is not None
                and item.offset is not None
                and item.offset + item.size <= audio_offset
            )
            if not answered:
                kept.append(item)
                continue
            self._unacked_bytes[item.kind] -= item.size
            if item.kind == "frame":
                self.counts.audio_bytes_acked += item.size
            elif refused is None:
                self.counts.messages_acked += 1
            else:
                self.counts.messages_refused += 1
        self._unacked = kept


async def _send_frame(ws: aiohttp.ClientWebSocketResponse, data: str | bytes) -> None:
    if isinstance(data, bytes):
        await ws.send_bytes(data)
    else:
        await ws.send_str(data)
