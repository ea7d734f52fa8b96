"""One connected client: its messages in (to Kafka events) and a bounded, coalescing queue out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from aiohttp import web

from core.kafka.catalog import TopicCatalog
from gateway.audio_streams import AudioStreams
from gateway.event_producer import Delivery, EventProducer, ProduceError
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    AudioConfig,
    ClientMessage,
    ContextMessage,
    EndMessage,
    ErrorMessage,
    ProtocolError,
    Ready,
    ServerMessage,
    SuggestionCancelled,
    SuggestionComplete,
    SuggestionDelta,
    Throttled,
    TranscriptChunk,
    message_type,
    parse_client_message,
)
from schemas.events import (
    AudioChunk,
    CustomerProfile,
    Event,
    SessionRoute,
    Speaker,
    TranscriptSegment,
)

logger = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER: Final = 1013
# A client whose Kafka writes keep failing hears about it at most this often.
DELIVERY_ERROR_INTERVAL_S: Final = 1.0


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A message waiting for the socket; `received_at` (perf_counter) if it came from Kafka."""

    message: ServerMessage
    received_at: float | None = None


class SendQueue:
    """A bounded queue of outgoing messages that, when full, merges deltas of one turn.

    Merging keeps the newest delta of a run and prepends the older fragments to its `text`,
    so a client that appends fragments and one that shows `fullText` both stay exact.
    """

    def __init__(self, *, capacity: int, on_coalesce: Callable[[int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self._items: deque[Outgoing] = deque()
        self._not_empty = asyncio.Event()
        self._on_coalesce = on_coalesce

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> bool:
        """Queue `item` without waiting; False if there is no room even after merging."""
        self._items.append(item)
        self._not_empty.set()
        if len(self._items) <= self.capacity:
            return True
        merged = self._coalesce()
        if merged and self._on_coalesce is not None:
            self._on_coalesce(merged)
        if len(self._items) <= self.capacity:
            return True
        self._items.pop()
        return False

    async def get(self) -> Outgoing:
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        return self._items.popleft()

    def clear(self) -> None:
        self._items.clear()

    def _coalesce(self) -> int:
        """Merge each run of one turn's deltas into its newest; returns how many were merged."""
        kept: list[Outgoing] = []  # newest first
        newest_delta: dict[str, int] = {}  # turn id -> index in `kept` of a delta to merge into
        merged = 0
        for item in reversed(self._items):
            message = item.message
            if isinstance(message, SuggestionDelta):
                index = newest_delta.get(message.turn_id)
                if index is not None:
                    later = kept[index]
                    assert isinstance(later.message, SuggestionDelta)
                    kept[index] = Outgoing(
                        message=replace(later.message, text=message.text + later.message.text),
                        received_at=item.received_at or later.received_at,
                    )
                    merged += 1
                    continue
                newest_delta[message.turn_id] = len(kept)
            elif isinstance(message, SuggestionComplete | SuggestionCancelled | Throttled):
                # A turn's end separates its deltas: never merge across it.
                newest_delta.pop(message.turn_id, None)
            kept.append(item)
        kept.reverse()
        self._items = deque(kept)
        return merged


class Session:
    """One authenticated client connection and the conversation it speaks for."""

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        conversation_id: str,
        gateway_id: str,
        reply_topic: str,
        catalog: TopicCatalog,
        producer: EventProducer,
        metrics: GatewayMetrics,
        rep: str | None = None,
        send_queue_size: int = 256,
        max_in_flight: int = 1024,
        close_timeout_s: float = 5.0,
        audio_min_chunk_ms: float = 100.0,
        audio_max_chunk_ms: float = 200.0,
    ) -> None:
        self.conversation_id = conversation_id
        self.session_id = uuid.uuid4().hex
        self.rep = rep
        self._ws = ws
        self._transport = transport
        self._gateway_id = gateway_id
        self._reply_topic = reply_topic
        self._catalog = catalog
        self._producer = producer
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._close_timeout_s = close_timeout_s
        self._queue = SendQueue(capacity=send_queue_size, on_coalesce=self._count_coalesced)
        self._writer: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._closing = False
        self._ended = False
        self._in_flight = 0
        self._segments = 0
        self._last_delivery_error = float("-inf")
        self._audio = AudioStreams(
            conversation_id=conversation_id,
            session_id=self.session_id,
            produce=self._produce_audio,
            min_chunk_ms=audio_min_chunk_ms,
            max_chunk_ms=audio_max_chunk_ms,
        )
        self._route_connected = False

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def route_connected(self) -> bool:
        """Whether this session last told the workers it holds the conversation."""
        return self._route_connected

    def start(self) -> None:
        """Greet the client and begin writing to it."""
        self._queue.put(
            Outgoing(
                message=Ready(
                    conversation_id=self.conversation_id,
                    session_id=self.session_id,
                    gateway_id=self._gateway_id,
                )
            )
        )
        self._writer = asyncio.create_task(
            self._write_until_closed(), name=f"session-writer-{self.session_id}"
        )

    # --- out: server to client ---------------------------------------------------------

    def deliver(self, message: ServerMessage, *, received_at: float | None = None) -> None:
        """Queue `message` for the client without waiting; a client that cannot keep up is
        closed with 1013 rather than allowed to hold anyone else up."""
        if self._closing or self._close_task is not None:
            return
        if not self._queue.put(Outgoing(message=message, received_at=received_at)):
            self._metrics.slow_client_closes.inc()
            logger.warning(
                "closing session %s (conversation %s): %d messages unread, send queue full",
                self.session_id,
                self.conversation_id,
                len(self._queue),
            )
            self._close_soon(code=CLOSE_TRY_AGAIN_LATER, message="Client too slow")

    async def _write_until_closed(self) -> None:
        try:
            while not self._ws.closed:
                item = await self._queue.get()
                await self._ws.send_str(item.message.to_json())
                self._metrics.messages_out.labels(type=message_type(item.message)).inc()
                if item.received_at is not None:
                    self._metrics.observe_stage(
                        "gateway_deliver", time.perf_counter() - item.received_at
                    )
        except ConnectionError as exc:  # the client went away mid-write
            logger.debug("session %s: write failed: %s", self.session_id, exc)

    def _count_coalesced(self, merged: int) -> None:
        self._metrics.coalesced_deltas.inc(merged)

    def _reject(self, error: ProtocolError) -> None:
        self._metrics.protocol_errors.labels(code=error.code).inc()
        logger.debug("session %s: %s", self.session_id, error)  # counted; clients can flood
        self.deliver(ErrorMessage(code=error.code, message=error.message))

    # --- in: client to server ----------------------------------------------------------

    def handle_text(self, text: str) -> None:
        """One text frame: a JSON message, answered with `error` if it is not a valid one."""
        received_at = time.perf_counter()
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            self._metrics.messages_in.labels(type="invalid").inc()
            self._reject(exc)
            return
        self._metrics.messages_in.labels(type=message.type).inc()
        if self._ended:
            self._reject(
                ProtocolError("conversation_ended", f"'{message.type}' after 'end' is ignored")
            )
            return
        self._dispatch(message, received_at)

    def _dispatch(self, message: ClientMessage, received_at: float) -> None:
        if isinstance(message, TranscriptChunk):
            segment = self._segment(text=message.text, speaker=message.speaker, final=message.final)
            self._produce(self._catalog.transcripts.name, segment, received_at, what=message.type)
        elif isinstance(message, AudioConfig):
            try:
                self._audio.configure(message)
            except ProtocolError as exc:
                self._reject(exc)
        elif isinstance(message, ContextMessage):
            profile = CustomerProfile(
                conversation_id=self.conversation_id,
                profile_json=json.dumps(message.profile, ensure_ascii=False),
            )
            profile.stamp("gateway_in")
            self._produce(self._catalog.profiles.name, profile, received_at, what=message.type)
        elif isinstance(message, EndMessage):
            self._end(received_at)

    def handle_binary(self, data: bytes) -> None:
        """One binary frame: audio of one of the session's streams (see gateway.audio_streams)."""
        received_at = time.perf_counter()
        self._metrics.messages_in.labels(type="audio").inc()
        self._metrics.audio_bytes_in.inc(len(data))
        if self._ended:
            self._reject(ProtocolError("conversation_ended", "audio after 'end' is ignored"))
            return
        try:
            self._audio.push(data, received_at)
        except ProtocolError as exc:
            self._reject(exc)

    def _end(self, received_at: float) -> None:
        self._audio.end(received_at)
        segment = self._segment(text="", speaker="customer", end_of_conversation=True)
        self._produce(self._catalog.transcripts.name, segment, received_at, what="end")
        self._ended = True
        self.announce_route(connected=False)

    def _segment(
        self, *, text: str, speaker: Speaker, final: bool = True, end_of_conversation: bool = False
    ) -> TranscriptSegment:
        segment = TranscriptSegment(
            conversation_id=self.conversation_id,
            session_id=self.session_id,
            segment_id=f"{self.session_id}:{self._segments}",
            speaker=speaker,
            text=text,
            final=final,
            source="text",
            end_of_conversation=end_of_conversation,
        )
        self._segments += 1
        segment.stamp("gateway_in")
        return segment

    # --- audio -------------------------------------------------------------------------

    def _produce_audio(self, chunk: AudioChunk, received_at: float) -> None:
        self._produce(self._catalog.audio.name, chunk, received_at, what="audio")

    # --- Kafka -------------------------------------------------------------------------

    def announce_route(self, *, connected: bool) -> None:
        """Tell the workers whether this gateway holds the conversation (via this session)."""
        self._route_connected = connected
        route = SessionRoute(
            conversation_id=self.conversation_id,
            gateway_id=self._gateway_id,
            reply_topic=self._reply_topic,
            session_id=self.session_id,
            connected=connected,
        )
        self._produce(self._catalog.routes.name, route, time.perf_counter(), what="route")

    def _produce(self, topic: str, event: Event, received_at: float, *, what: str) -> None:
        if self._in_flight >= self._max_in_flight:
            self._reject(
                ProtocolError(
                    "unavailable",
                    f"'{what}' dropped: {self._in_flight} messages are still waiting for Kafka",
                )
            )
            return
        try:
            future = self._producer.produce(topic, event)
        except ProduceError as exc:
            self._reject(ProtocolError("unavailable", f"'{what}' was not stored: {exc}"))
            return
        self._in_flight += 1
        future.add_done_callback(lambda done: self._on_produced(done, received_at, what))

    def _on_produced(self, done: asyncio.Future[Delivery], received_at: float, what: str) -> None:
        self._in_flight -= 1
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._metrics.observe_stage("gateway_produce", time.perf_counter() - received_at)
            return
        # The producer has logged and counted it; the client hears at most once a second.
        now = time.monotonic()
        if not self._closing and now - self._last_delivery_error >= DELIVERY_ERROR_INTERVAL_S:
            self._last_delivery_error = now
            self._reject(ProtocolError("unavailable", f"'{what}' was not stored: {error}"))

    # --- ending ------------------------------------------------------------------------

    def _close_soon(self, *, code: int, message: str) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self.close(code=code, message=message))

    async def close(self, *, code: int, message: str) -> None:
        """Close the socket with `code`; a client that will not take the close frame is cut."""
        if self._closing:
            return
        self._closing = True
        await self._stop_writer()
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await self._ws.close(code=code, message=message.encode())
        except TimeoutError:
            logger.warning("session %s did not close in time; aborting", self.session_id)
            if isinstance(self._transport, asyncio.WriteTransport):
                self._transport.abort()

    async def finish(self) -> None:
        """The client is gone: hand over the audio still held, end its stream, stop writing."""
        if not self._ended:
            # This session's streams are over; a reconnect starts new ones (new session id).
            self._audio.end(time.perf_counter())
        self._closing = True
        await self._stop_writer()
        if self._close_task is not None:
            await self._close_task

    async def _stop_writer(self) -> None:
        self._queue.clear()
        writer, self._writer = self._writer, None
        if writer is None or writer is asyncio.current_task():
            return
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
