"""One phone call's media stream: a carrier's events in, the conversation's two audio streams out.

A carrier (Twilio, or any with a similar protocol) opens a WebSocket per call and sends a start
event, audio per track, and a stop. A dialect parses its frames into the small events below;
`MediaStreamEndpoint` checks the start's token, feeds each track to the audio topic as its
speaker (the customer or the rep), and ends both streams when the call ends. It answers
nothing: suggestions go to the rep's page socket(s) for the conversation, wherever they are,
because this stream never claims the conversation's route. Bad input closes this stream with a
log line naming what was wrong; no other call or session notices.

A call spends its conversation's rate limit, the budget the rep's sockets share (every frame
costs one message and its size): a real call's two 20 ms tracks are 100 frames/s, well inside
it. Frames over it are dropped, counted and logged; there is no client to tell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import WSMsgType, web

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from core.tokens import TokenError, TokenSigner
from gateway.audio_ledger import AudioRange
from gateway.audio_streams import AudioStreams
from gateway.event_producer import Delivery, EventProducer, ProduceError
from gateway.metrics import GatewayMetrics
from gateway.protocol import AudioConfig, ProtocolError
from gateway.rate_limit import ConversationRateLimit, ConversationRateLimits
from schemas.events import AudioChunk, AudioEncoding, Speaker

logger = logging.getLogger(__name__)

CLOSE_UNSUPPORTED: Final = 1003  # an event, format or frame kind we do not take
CLOSE_INVALID_PAYLOAD: Final = 1007  # not JSON, bad base64, fields of the wrong shape
CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_POLICY_VIOLATION: Final = 1008
PRODUCE_ERROR_INTERVAL_S: Final = 5.0  # a failing Kafka is logged at most this often per call
RATE_LIMITED_LOG_INTERVAL_S: Final = 5.0  # a call over its rate limit is logged this often
# Twilio sends `connected`, then `start`; a stream that sends more before it names its
# conversation (and so its rate limit) is not Twilio.
MAX_FRAMES_BEFORE_START: Final = 4


@dataclass(frozen=True, kw_only=True)
class CallStarted:
    """The call's stream began: who it is for, and which tracks carry which speaker."""

    call_id: str
    stream_id: str
    conversation_id: str
    token: str
    speakers: dict[str, Speaker]
    encoding: AudioEncoding
    sample_rate: int


@dataclass(frozen=True, kw_only=True)
class CallAudio:
    """Audio of one track, in the format the start announced."""

    track: str
    audio: bytes


@dataclass(frozen=True, kw_only=True)
class CallNotice:
    """An event that needs no action (connected, mark, dtmf)."""

    what: str


@dataclass(frozen=True)
class CallStopped:
    """The call's stream is over."""


CallEvent = CallStarted | CallAudio | CallNotice | CallStopped


class MediaStreamError(Exception):
    """Carrier input we cannot take: the stream is closed with `close_code` and `reason`."""

    def __init__(self, message: str, *, close_code: int, reason: str | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code
        # A close reason must fit in a control frame (at most 123 bytes).
        self.reason = reason or message.encode()[:120].decode(errors="ignore")


class MediaStreamDialect(Protocol):
    """One carrier's media-stream protocol."""

    @property
    def name(self) -> str: ...

    def parse(self, text: str) -> CallEvent: ...


class _Call:
    """The state of one call's stream once it has started."""

    def __init__(
        self,
        start: CallStarted,
        audio: AudioStreams,
        *,
        tags: dict[str, int],
        conversation_id: str,
        expires_at: float,
        rate_limit: ConversationRateLimit,
    ) -> None:
        self.start = start
        self.audio = audio
        self.tags = tags  # track -> stream tag
        self.conversation_id = conversation_id
        self.expires_at = expires_at
        self.rate_limit = rate_limit
        self.rate_limited = _Throttled(
            f"call {start.call_id}: frames over the conversation's rate limit dropped",
            interval_s=RATE_LIMITED_LOG_INTERVAL_S,
        )


class MediaStreamEndpoint:
    """`GET /twilio/media` (and its like): one WebSocket per call, from a carrier."""

    def __init__(
        self,
        *,
        dialect: MediaStreamDialect,
        settings: Settings,
        signer: TokenSigner,
        producer: EventProducer,
        catalog: TopicCatalog,
        metrics: GatewayMetrics,
        rate_limits: ConversationRateLimits,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._dialect = dialect
        self._settings = settings
        self._signer = signer
        self._producer = producer
        self._catalog = catalog
        self._metrics = metrics
        self._rate_limits = rate_limits
        self._close_timeout_s = close_timeout_s
        self._open: set[web.WebSocketResponse] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=self._settings.heartbeat_s,
            max_msg_size=self._settings.max_msg_size,
            timeout=self._close_timeout_s,
            compress=False,
        )
        await ws.prepare(request)
        self._open.add(ws)
        call: _Call | None = None
        try:
            call = await self._receive(ws)
        finally:
            self._open.discard(ws)
            if call is not None:
                call.audio.end(time.perf_counter())
                self._rate_limits.release(call.conversation_id)
                logger.info(
                    "%s call %s ended (stream %s, conversation %s, close code %s)",
                    self._dialect.name,
                    call.start.call_id,
                    call.start.stream_id,
                    call.start.conversation_id,
                    ws.close_code,
                )
        return ws

    async def shutdown(self, app: web.Application) -> None:
        """The gateway is stopping: close every call's stream with 1001."""
        await asyncio.gather(
            *(ws.close(code=1001, message=b"Server shutting down") for ws in list(self._open))
        )

    async def _receive(self, ws: web.WebSocketResponse) -> _Call | None:
        """Frames until the call stops or fails; returns the started call, if it started."""
        call: _Call | None = None
        frames_before_start = 0
        async for frame in ws:
            try:
                if frame.type is WSMsgType.TEXT:
                    if call is None:
                        frames_before_start += 1
                        if frames_before_start > MAX_FRAMES_BEFORE_START:
                            raise MediaStreamError(
                                f"{MAX_FRAMES_BEFORE_START} frames without a 'start'",
                                close_code=CLOSE_POLICY_VIOLATION,
                            )
                    elif not call.rate_limit.admit(len(frame.data)):
                        self._metrics.protocol_errors.labels(code="rate_limited").inc()
                        call.rate_limited.note()
                        continue
                    event = self._dialect.parse(frame.data)
                elif frame.type is WSMsgType.BINARY:
                    raise MediaStreamError(
                        "a binary frame; this protocol sends JSON text frames",
                        close_code=CLOSE_UNSUPPORTED,
                    )
                else:  # aiohttp has closed the socket already (e.g. 1009 for a huge frame)
                    logger.info("%s stream: %s", self._dialect.name, ws.exception())
                    return call
                if call is not None and time.time() >= call.expires_at:
                    raise MediaStreamError(
                        "the token expired", close_code=CLOSE_UNAUTHORIZED, reason="token_expired"
                    )
                call = self._apply(event, call)
                if isinstance(event, CallStopped):
                    await ws.close()
                    return call
            except MediaStreamError as exc:
                self._metrics.protocol_errors.labels(code=f"{self._dialect.name}_stream").inc()
                logger.warning(
                    "%s stream %s refused: %s; closing it (%d)",
                    self._dialect.name,
                    _describe(call),
                    exc,
                    exc.close_code,
                )
                await ws.close(code=exc.close_code, message=exc.reason.encode())
                return call
        return call

    def _apply(self, event: CallEvent, call: _Call | None) -> _Call | None:
        if isinstance(event, CallStarted):
            if call is not None:
                raise MediaStreamError("a second 'start'", close_code=CLOSE_INVALID_PAYLOAD)
            return self._begin(event)
        if isinstance(event, CallAudio):
            if call is None:
                raise MediaStreamError("media before 'start'", close_code=CLOSE_INVALID_PAYLOAD)
            tag = call.tags.get(event.track)
            if tag is None:
                raise MediaStreamError(
                    f"media for track {event.track!r}, which 'start' did not announce",
                    close_code=CLOSE_INVALID_PAYLOAD,
                )
            self._metrics.audio_bytes_in.inc(len(event.audio))
            if event.audio:  # Twilio may send an empty payload; it carries nothing
                try:
                    call.audio.push_to(tag, event.audio, time.perf_counter())
                except ProtocolError as exc:
                    raise MediaStreamError(exc.message, close_code=CLOSE_INVALID_PAYLOAD) from None
            return call
        if isinstance(event, CallNotice):
            logger.debug("%s stream %s: %s", self._dialect.name, _describe(call), event.what)
        return call

    def _begin(self, start: CallStarted) -> _Call:
        try:
            claims = self._signer.verify(start.token, conversation_id=start.conversation_id)
        except TokenError as exc:
            self._metrics.connection_attempts.labels(outcome="call_unauthorized").inc()
            raise MediaStreamError(
                f"token refused for conversation {start.conversation_id[:80]!r} "
                f"({exc.reason}), call {start.call_id}",
                close_code=CLOSE_UNAUTHORIZED,
                reason="Unauthorized",
            ) from None
        self._metrics.connection_attempts.labels(outcome="call_accepted").inc()
        failures = _Throttled(f"{self._dialect.name} call {start.call_id}: audio was not stored")
        audio = AudioStreams(
            conversation_id=claims.conversation_id,
            session_id=start.stream_id,
            produce=lambda chunk, _received_at, piece: self._produce(chunk, piece, audio, failures),
        )
        tags = {track: tag for tag, track in enumerate(start.speakers)}
        for track, tag in tags.items():
            audio.configure(
                AudioConfig(
                    encoding=start.encoding,
                    sample_rate=start.sample_rate,
                    speaker=start.speakers[track],
                    stream=tag,
                )
            )
        logger.info(
            "%s call %s started: stream %s, conversation %s, rep %s, tracks %s",
            self._dialect.name,
            start.call_id,
            start.stream_id,
            claims.conversation_id,
            claims.rep,
            ", ".join(f"{track}={speaker}" for track, speaker in start.speakers.items()),
        )
        return _Call(
            start,
            audio,
            tags=tags,
            conversation_id=claims.conversation_id,
            expires_at=claims.expires_at,
            rate_limit=self._rate_limits.hold(claims.conversation_id),
        )

    def _produce(
        self,
        chunk: AudioChunk,
        piece: AudioRange | None,
        audio: AudioStreams,
        failures: _Throttled,
    ) -> None:
        """Hand a chunk to Kafka; a failure is counted by the producer, and the call goes on
        (a carrier does not resend)."""

        def settled(done: asyncio.Future[Delivery]) -> None:
            if piece is not None:
                audio.settle(piece)  # keeps the stream's byte ledger short
            if not done.cancelled() and (error := done.exception()) is not None:
                failures.note(error)

        try:
            self._producer.produce(self._catalog.audio.name, chunk).add_done_callback(settled)
        except ProduceError as exc:
            if piece is not None:
                audio.settle(piece)
            failures.note(exc)


class _Throttled:
    """Logs one kind of trouble of a call at most once per `interval_s`."""

    def __init__(self, what: str, *, interval_s: float = PRODUCE_ERROR_INTERVAL_S) -> None:
        self._what = what
        self._interval_s = interval_s
        self._last = float("-inf")

    def note(self, error: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            logger.warning("%s%s", self._what, "" if error is None else f": {error}")


def _describe(call: _Call | None) -> str:
    if call is None:
        return "(not started)"
    return f"{call.start.stream_id} (call {call.start.call_id})"
