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
from dataclasses import dataclass, field, replace
from typing import Final

from aiohttp import web

from core.kafka.catalog import TopicCatalog
from core.tokens import TokenError
from gateway.audio_ledger import AudioRange
from gateway.audio_streams import AudioRefusedError, AudioStreams
from gateway.event_producer import Delivery, EventProducer, ProduceError
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    Ack,
    AudioConfig,
    ClientMessage,
    EndMessage,
    ErrorMessage,
    ProtocolError,
    Ready,
    ServerMessage,
    SuggestionCancelled,
    SuggestionComplete,
    SuggestionDelta,
    SuggestionFailed,
    Throttled,
    TokenRenewal,
    TranscriptChunk,
    message_type,
    parse_client_message,
)
from gateway.rate_limit import ConversationRateLimit
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
CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_REPLACED: Final = 4002
# A client whose unsequenced Kafka writes keep failing, or whose unsequenced frames are over
# the rate limit, hears about it at most this often.
DELIVERY_ERROR_INTERVAL_S: Final = 1.0
# What a queued message costs beyond its JSON: the Python objects holding it (measured ~400).
QUEUED_MESSAGE_OVERHEAD_BYTES: Final = 512


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A message waiting for the socket, rendered once; `received_at` (perf_counter) if it
    came from Kafka. `size` is what it costs the queue in bytes."""

    message: ServerMessage
    received_at: float | None = None
    text: str = field(init=False, repr=False, compare=False)
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = self.message.to_json()
        # Frozen: set the derived fields the way dataclasses' own __init__ does.
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "size", len(text.encode()) + QUEUED_MESSAGE_OVERHEAD_BYTES)


class SendQueue:
    """A queue of outgoing messages bounded in bytes that, when full, merges deltas of a turn.

    Merging keeps the newest delta of a run and prepends the older fragments to its `text`,
    so a client that appends fragments and one that shows `fullText` both stay exact.
    """

    def __init__(
        self, *, capacity_bytes: int, on_coalesce: Callable[[int], None] | None = None
    ) -> None:
        if capacity_bytes < 1:
            raise ValueError(f"capacity_bytes must be at least 1 (got {capacity_bytes})")
        self.capacity_bytes = capacity_bytes
        self._items: deque[Outgoing] = deque()
        self._bytes = 0
        self._not_empty = asyncio.Event()
        self._on_coalesce = on_coalesce

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, item: Outgoing) -> bool:
        """Queue `item` without waiting; False if there is no room even after merging."""
        self._items.append(item)
        self._bytes += item.size
        self._not_empty.set()
        if self._bytes <= self.capacity_bytes:
            return True
        merged = self._coalesce()
        if merged and self._on_coalesce is not None:
            self._on_coalesce(merged)
        if self._bytes <= self.capacity_bytes:
            return True
        self._bytes -= self._items.pop().size
        return False

    async def get(self) -> Outgoing:
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        item = self._items.popleft()
        self._bytes -= item.size
        return item

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

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
            elif isinstance(
                message, SuggestionComplete | SuggestionCancelled | SuggestionFailed | Throttled
            ):
                # A turn's end separates its deltas: never merge across it.
                newest_delta.pop(message.turn_id, None)
            kept.append(item)
        kept.reverse()
        self._items = deque(kept)
        self._bytes = sum(item.size for item in kept)
        return merged


TokenRenewer = Callable[[str], float]
"""Verifies a fresh token for the session's conversation; returns its expiry (Unix s)."""


class Session:
    """One authenticated client connection and the conversation it speaks for.

    Every client message that carries `seq` is answered exactly once: `ack` when Kafka has
    stored its event, or `error` naming it. Audio is acknowledged by byte offset, per stream
    (see AudioStreams and AudioLedger). Kafka retries are librdkafka's, bounded by the
    producer's delivery timeout and by `max_unacked_bytes` per session.
    """

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
        client_id: str | None = None,
        rate_limit: ConversationRateLimit | None = None,
        expires_at: float | None = None,
        renew_token: TokenRenewer | None = None,
        send_queue_bytes: int = 1024 * 1024,
        max_unacked_bytes: int = 8 * 1024 * 1024,
        close_timeout_s: float = 5.0,
        audio_min_chunk_ms: float = 100.0,
        audio_max_chunk_ms: float = 200.0,
    ) -> None:
        self.conversation_id = conversation_id
        self.session_id = uuid.uuid4().hex
        self.rep = rep
        self.client_id = client_id
        self._ws = ws
        self._transport = transport
        self._gateway_id = gateway_id
        self._reply_topic = reply_topic
        self._catalog = catalog
        self._producer = producer
        self._metrics = metrics
        self._rate_limit = rate_limit
        self._expires_at = expires_at
        self._renew_token = renew_token
        self._max_unacked_bytes = max_unacked_bytes
        self._close_timeout_s = close_timeout_s
        self._queue = SendQueue(capacity_bytes=send_queue_bytes, on_coalesce=self._count_coalesced)
        self._writer: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closing = False
        self._ended = False
        self._audio_stream_ended = False
        self._unacked_bytes = 0
        self._segments = 0
        self._last_delivery_error = float("-inf")
        self._last_rate_limited = float("-inf")
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
    def retiring(self) -> bool:
        """Closing, or about to: replaced, expired or too slow."""
        return self._closing or self._close_task is not None

    @property
    def route_connected(self) -> bool:
        """Whether this session last told the workers it holds the conversation."""
        return self._route_connected

    @property
    def unacked_bytes(self) -> int:
        """Bytes of this client's messages handed to Kafka and not yet acknowledged."""
        return self._unacked_bytes

    @property
    def _acks_audio(self) -> bool:
        # Audio acks only make sense to a client that can resend: one that named itself.
        return self.client_id is not None

    def start(self) -> None:
        """Greet the client, begin writing to it, and watch its token's expiry."""
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
        self._watch_expiry()

    # --- out: server to client ---------------------------------------------------------

    def deliver(self, message: ServerMessage, *, received_at: float | None = None) -> None:
        """Queue `message` for the client without waiting; a client that cannot keep up is
        closed with 1013 rather than allowed to hold anyone else up."""
        if self._closing or self._close_task is not None:
            return
        if not self._queue.put(Outgoing(message=message, received_at=received_at)):
            self._metrics.slow_client_closes.inc()
            logger.warning(
                "closing session %s (conversation %s): %d messages (%d bytes) unread, "
                "send queue full",
                self.session_id,
                self.conversation_id,
                len(self._queue),
                self._queue.size_bytes,
            )
            self._close_soon(code=CLOSE_TRY_AGAIN_LATER, message="Client too slow")

    async def _write_until_closed(self) -> None:
        try:
            while not self._ws.closed:
                item = await self._queue.get()
                await self._ws.send_str(item.text)
                self._metrics.messages_out.labels(type=message_type(item.message)).inc()
                if item.received_at is not None:
                    self._metrics.observe_stage(
                        "gateway_deliver", time.perf_counter() - item.received_at
                    )
        except ConnectionError as exc:  # the client went away mid-write
            logger.debug("session %s: write failed: %s", self.session_id, exc)

    def _count_coalesced(self, merged: int) -> None:
        self._metrics.coalesced_deltas.inc(merged)

    def _reject(
        self, error: ProtocolError, *, audio: AudioRange | None = None, seq: int | None = None
    ) -> None:
        self._metrics.protocol_errors.labels(code=error.code).inc()
        logger.debug("session %s: %s", self.session_id, error)  # counted; clients can flood
        named = (seq if seq is not None else error.seq) is not None or (
            audio is not None and self._acks_audio
        )
        if error.code == "rate_limited" and not named:
            # A flood of frames that name nothing hears it once a second, not once a frame.
            now = time.monotonic()
            if now - self._last_rate_limited < DELIVERY_ERROR_INTERVAL_S:
                return
            self._last_rate_limited = now
        self.deliver(
            ErrorMessage(
                code=error.code,
                message=error.message,
                seq=error.seq if seq is None else seq,
                # Offsets only mean something to a client that counts them (acked audio).
                audio_offset=audio.start if audio is not None and self._acks_audio else None,
                audio_bytes=audio.size if audio is not None and self._acks_audio else None,
                stream=audio.stream if audio is not None and self._acks_audio else None,
            )
        )

    def _ack(self, seq: int) -> None:
        self._metrics.acks.labels(kind="seq").inc()
        self.deliver(Ack(seq=seq))

    def _ack_audio(self, stream: int | None) -> None:
        if not self._acks_audio:
            return
        offset = self._audio.take_ack(stream)
        if offset is not None:
            self._metrics.acks.labels(kind="audio").inc()
            self.deliver(Ack(audio_offset=offset, stream=stream))

    # --- in: client to server ----------------------------------------------------------

    def handle_text(self, text: str) -> None:
        """One text frame: a JSON message, answered with `error` if it is not a valid one."""
        if self.retiring:
            return  # replaced or expired: what arrives while closing is not this session's
        received_at = time.perf_counter()
        size = len(text.encode("utf-8", errors="surrogatepass"))
        admitted = self._rate_limit is None or self._rate_limit.admit(size)
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            self._metrics.messages_in.labels(type="invalid").inc()
            self._reject(exc if admitted else _rate_limited(size, exc.seq))
            return
        self._metrics.messages_in.labels(type=message.type).inc()
        if not admitted:
            self._reject(_rate_limited(size, message.seq))
        elif self._ended:
            self._reject(
                ProtocolError(
                    "conversation_ended",
                    f"'{message.type}' after 'end' is ignored",
                    seq=message.seq,
                )
            )
        else:
            self._dispatch(message, size, received_at)

    def _dispatch(self, message: ClientMessage, size: int, received_at: float) -> None:
        if isinstance(message, AudioConfig):
            self._configure_audio(message)
            return
        if isinstance(message, EndMessage):
            self._end(received_at, size=size, seq=message.seq)
            return
        if isinstance(message, TokenRenewal):
            self._renew(message)
            return
        event: Event
        if isinstance(message, TranscriptChunk):
            topic = self._catalog.transcripts.name
            event = self._segment(
                text=message.text, speaker=message.speaker, final=message.final, seq=message.seq
            )
        else:  # a ContextMessage, the last kind left
            topic = self._catalog.profiles.name
            event = CustomerProfile(
                conversation_id=self.conversation_id,
                profile_json=json.dumps(message.profile, ensure_ascii=False),
            )
            event.stamp("gateway_in")
        self._produce(topic, event, received_at, what=message.type, size=size, seq=message.seq)

    def handle_binary(self, data: bytes) -> None:
        """One binary frame: audio of one of the session's streams (see gateway.audio_streams)."""
        if self.retiring:
            return
        received_at = time.perf_counter()
        self._metrics.messages_in.labels(type="audio").inc()
        self._metrics.audio_bytes_in.inc(len(data))
        if self._ended:
            self._reject(ProtocolError("conversation_ended", "audio after 'end' is ignored"))
            return
        refusal: ProtocolError | None = None
        if data and self._rate_limit is not None and not self._rate_limit.admit(len(data)):
            refusal = _rate_limited(len(data), None)
        try:
            self._audio.push(data, received_at, refusal=refusal)
        except AudioRefusedError as exc:
            self._reject(exc, audio=exc.refused)
            self._ack_audio(exc.refused.stream)
        except ProtocolError as exc:  # a frame of no stream: no offsets to name
            self._reject(exc)

    def _configure_audio(self, config: AudioConfig) -> None:
        try:
            self._audio.configure(config)
        except ProtocolError as exc:
            exc.seq = config.seq
            self._reject(exc)
            return
        self._ack_audio(config.stream)  # an `offset` past the stream settles the bytes between
        if config.seq is not None:
            self._ack(config.seq)  # nothing to store: it applies from the next frame

    def _renew(self, renewal: TokenRenewal) -> None:
        if self._renew_token is None:
            self._reject(
                ProtocolError("bad_token", "this gateway does not renew tokens", seq=renewal.seq)
            )
            return
        try:
            self._expires_at = self._renew_token(renewal.token)
        except TokenError as exc:
            # The reason stays in the log, as for a refused connection.
            logger.info("session %s: token renewal refused: %s", self.session_id, exc.reason)
            self._reject(
                ProtocolError(
                    "bad_token", "the token does not admit to this conversation", seq=renewal.seq
                )
            )
            return
        self._watch_expiry()
        if renewal.seq is not None:
            self._ack(renewal.seq)

    def _end(self, received_at: float, *, size: int, seq: int | None) -> None:
        self._end_audio_stream(keep_held=True)
        segment = self._segment(text="", speaker="customer", end_of_conversation=True, seq=seq)
        self._produce(
            self._catalog.transcripts.name, segment, received_at, what="end", size=size, seq=seq
        )
        self._ended = True
        self.announce_route(connected=False)

    def _segment(
        self,
        *,
        text: str,
        speaker: Speaker,
        final: bool = True,
        end_of_conversation: bool = False,
        seq: int | None = None,
    ) -> TranscriptSegment:
        segment = TranscriptSegment(
            conversation_id=self.conversation_id,
            session_id=self.session_id,
            segment_id=self._segment_id(seq),
            speaker=speaker,
            text=text,
            final=final,
            source="text",
            end_of_conversation=end_of_conversation,
        )
        segment.stamp("gateway_in")
        return segment

    def _segment_id(self, seq: int | None) -> str:
        """The dedupe key of a segment: the same for a resend, on any gateway, in any session.

        `client_id:seq` when the client names both (the client keeps its seq across
        reconnects); otherwise unique to this session, as a message without seq cannot be
        told from a new one.
        """
        if seq is not None:
            return f"{self.client_id or self.session_id}:{seq}"
        self._segments += 1
        return f"{self.session_id}:n{self._segments - 1}"

    # --- audio -------------------------------------------------------------------------

    def _produce_audio(
        self, chunk: AudioChunk, received_at: float, piece: AudioRange | None
    ) -> None:
        size = 0 if piece is None else piece.size
        self._produce(
            self._catalog.audio.name, chunk, received_at, what="audio", size=size, audio=piece
        )

    def _end_audio_stream(self, *, keep_held: bool) -> None:
        """This session's audio streams are over; a reconnect starts new ones (new session id).

        With `keep_held` False the audio the framers hold is dropped: it was never acked, and
        a client that names itself resends it on its next connection.
        """
        if self._audio_stream_ended:
            return
        self._audio_stream_ended = True
        self._audio.end(time.perf_counter(), keep_held=keep_held)

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

    def _produce(
        self,
        topic: str,
        event: Event,
        received_at: float,
        *,
        what: str,
        size: int = 0,
        seq: int | None = None,
        audio: AudioRange | None = None,
    ) -> None:
        """Hand `event` to Kafka; its outcome answers `seq` (ack or error) or settles `audio`."""
        if size and self._unacked_bytes + size > self._max_unacked_bytes:
            self._fail(
                ProtocolError(
                    "unavailable",
                    f"'{what}' not stored: {self._unacked_bytes} bytes of this connection "
                    "already wait for Kafka",
                ),
                seq=seq,
                audio=audio,
            )
            return
        try:
            future = self._producer.produce(topic, event)
        except ProduceError as exc:
            self._fail(_produce_error(exc, what), seq=seq, audio=audio)
            return
        self._unacked_bytes += size
        self._metrics.unacked_bytes.inc(size)
        future.add_done_callback(
            lambda done: self._on_produced(done, received_at, what, size, seq, audio)
        )

    def _on_produced(
        self,
        done: asyncio.Future[Delivery],
        received_at: float,
        what: str,
        size: int,
        seq: int | None,
        audio: AudioRange | None,
    ) -> None:
        self._unacked_bytes -= size
        self._metrics.unacked_bytes.dec(size)
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._metrics.observe_stage("gateway_produce", time.perf_counter() - received_at)
            if seq is not None:
                self._ack(seq)
            elif audio is not None:
                self._audio.settle(audio)
                self._ack_audio(audio.stream)
            return
        # The producer has logged and counted it.
        assert isinstance(error, ProduceError)
        self._fail(_produce_error(error, what), seq=seq, audio=audio)

    def _fail(
        self, error: ProtocolError, *, seq: int | None = None, audio: AudioRange | None = None
    ) -> None:
        """A message was not stored: say so, naming it, or (unnamed) at most once a second."""
        if audio is not None:
            self._audio.settle(audio)
        if self._closing:
            return
        named = seq is not None or (audio is not None and self._acks_audio)
        now = time.monotonic()
        if named or now - self._last_delivery_error >= DELIVERY_ERROR_INTERVAL_S:
            self._last_delivery_error = now
            self._reject(error, seq=seq, audio=audio if self._acks_audio else None)
        if audio is not None:
            self._ack_audio(audio.stream)

    # --- ending ------------------------------------------------------------------------

    def _watch_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._expires_at is None:
            return
        delay_s = max(0.0, self._expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._metrics.sessions_expired.inc()
        logger.info("session %s: its token expired; closing", self.session_id)
        self._close_soon(code=CLOSE_UNAUTHORIZED, message="token_expired")

    def replace(self, *, by_same_client: bool) -> None:
        """A newer socket takes this one's place: end its audio stream now, then close 4002.

        The audio stream ends before the newer socket can produce any, so the workers never
        see this session's end after the newer one's start. A client replacing its own socket
        resends what was never acked, so held audio is dropped for it.
        """
        if self.retiring:
            return
        if not self._ended:
            self._end_audio_stream(keep_held=not by_same_client)
        self._close_soon(code=CLOSE_REPLACED, message="replaced")

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
        """The client is gone: end its audio stream, stop writing.

        Held audio is handed on unless the client named itself and left abnormally: then it
        resends what was never acked on its next connection.
        """
        if not self._ended:
            left_cleanly = self._ws.close_code in (1000, 1001)
            self._end_audio_stream(keep_held=not self._acks_audio or left_cleanly)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
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


def _rate_limited(size: int, seq: int | None) -> ProtocolError:
    return ProtocolError(
        "rate_limited",
        f"a {size}-byte frame over this conversation's rate limit was dropped, not stored",
        seq=seq,
    )


def _produce_error(error: ProduceError, what: str) -> ProtocolError:
    if error.failure == "too_large":
        return ProtocolError("too_large", f"'{what}' is bigger than Kafka takes; not stored")
    if error.failure == "encode":
        return ProtocolError("bad_field", f"'{what}' cannot be stored: {error}")
    return ProtocolError("unavailable", f"'{what}' was not stored: {error}")
