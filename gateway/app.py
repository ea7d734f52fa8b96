"""The gateway's aiohttp application: `/ws`, `/healthz`, `/metrics`, the rep's page, token
endpoints and `/twilio/media`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, hdrs, web

from core.kafka.admin import KafkaAdminError, TopicAdmin
from core.kafka.catalog import TopicCatalog
from core.settings import Settings, SettingsError
from core.tokens import TokenClaims, TokenError, TokenSigner, resolve_secret
from gateway.conversation_tokens import ConversationTokens
from gateway.event_producer import EventProducer
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.protocol import CLIENT_ID_PATTERN, ErrorMessage
from gateway.rate_limit import ConversationRateLimit, ConversationRateLimits
from gateway.reply_router import ReplyRouter, ReplyTopicError
from gateway.session import CLOSE_UNAUTHORIZED, Session
from gateway.telephony.media_stream import MediaStreamEndpoint
from gateway.telephony.twilio import TwilioDialect
from schemas.codec import EventCodec, default_codec

logger = logging.getLogger(__name__)

DEFAULT_STATIC_DIR: Final = Path(__file__).parent / "static"
STARTUP_RETRY_S: Final = 1.0


@dataclass(eq=False)
class Conversation:
    """One conversation's sockets on this gateway, oldest first, and the budget they share."""

    rate_limit: ConversationRateLimit
    sessions: list[Session] = field(default_factory=list)

    def open_sessions(self) -> list[Session]:
        return [session for session in self.sessions if not session.retiring]


class GatewayWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket response with our pong deadline instead of its `heartbeat / 2`.

    aiohttp pings after `heartbeat` seconds without a frame from the client and drops the
    connection if no pong follows within its pong deadline: with 30 s and 15 s, a client
    silent for 45 s is terminated. The contract's two numbers come from settings here.
    """

    def __init__(self, *, heartbeat_s: float, client_timeout_s: float, **kwargs: Any) -> None:
        if client_timeout_s <= heartbeat_s:
            raise ValueError(
                f"client_timeout_s ({client_timeout_s}) must exceed heartbeat_s ({heartbeat_s})"
            )
        super().__init__(heartbeat=heartbeat_s, **kwargs)
        # aiohttp has no parameter for this; the attribute is what its heartbeat reads.
        self._pong_heartbeat = client_timeout_s - heartbeat_s


class Gateway:
    """Sessions, the Kafka producer and the reply router of one running gateway."""

    def __init__(
        self,
        settings: Settings,
        *,
        signer: TokenSigner,
        codec: EventCodec,
        metrics: GatewayMetrics,
        static_dir: Path = DEFAULT_STATIC_DIR,
        kafka_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        if settings.client_timeout_s <= settings.heartbeat_s:
            raise SettingsError(
                f"TELEPROMPTER_CLIENT_TIMEOUT_S ({settings.client_timeout_s}) must exceed "
                f"TELEPROMPTER_HEARTBEAT_S ({settings.heartbeat_s})"
            )
        self.settings = settings
        self.metrics = metrics
        self.catalog = TopicCatalog.from_settings(settings)
        self.reply_topic = self.catalog.reply_topic(settings.gateway_id)
        self.static_dir = static_dir
        self._signer = signer
        self._codec = codec
        self._kafka_timeout_s = kafka_timeout_s
        self._close_timeout_s = close_timeout_s
        self.producer = EventProducer(
            bootstrap_servers=settings.bootstrap_servers,
            codec=codec,
            client_id=f"teleprompter-{settings.gateway_id}",
            # librdkafka retries a client's message until then; the client hears `ack` or
            # `error` with its seq, whichever comes first.
            delivery_timeout_s=settings.ws_delivery_timeout_s,
            metrics=metrics,
        )
        self.router = ReplyRouter(
            bootstrap_servers=settings.bootstrap_servers,
            topic=self.reply_topic.name,
            codec=codec,
            metrics=metrics,
            group_id=f"{settings.topic_prefix}.gateway.{settings.gateway_id}",
        )
        self._sessions: set[Session] = set()
        self._conversations: dict[str, Conversation] = {}
        # Shared with the phone-call media streams of the same conversations.
        self.rate_limits = ConversationRateLimits.from_settings(settings)
        self._ready = False
        self._ready_event = asyncio.Event()
        self._stopping = False
        self._startup: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Serving: the reply topic exists and its consumer is assigned and running."""
        return self._ready and self.router.running and not self._stopping

    async def wait_ready(self) -> None:
        """Return once the gateway has become ready (it may have stopped again since)."""
        await self._ready_event.wait()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.producer.start()
        self._startup = asyncio.create_task(self._become_ready(), name="gateway-startup")

    async def _become_ready(self) -> None:
        # Kafka may come up after the gateway; keep trying and stay unready meanwhile.
        while not self._stopping:
            try:
                admin = TopicAdmin(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    timeout_s=self._kafka_timeout_s,
                )
                report = await admin.ensure_topics([self.reply_topic])
                if not report.ok:
                    logger.warning("reply topic differs from the catalog: %s", report.summary())
                await self.router.start(timeout_s=self._kafka_timeout_s)
            except (KafkaAdminError, ReplyTopicError) as exc:
                logger.warning("gateway not ready yet: %s; retrying", exc)
                await asyncio.sleep(STARTUP_RETRY_S)
                continue
            self._ready = True
            self._ready_event.set()
            logger.info(
                "gateway %s ready: replies on %s", self.settings.gateway_id, self.reply_topic.name
            )
            return

    async def shutdown(self) -> None:
        """Stop taking connections; hand conversations back (routes first), then close 1001."""
        self._stopping = True
        sessions = [session for session in self._sessions if not session.closing]
        for session in sessions:
            if session.route_connected:
                session.announce_route(connected=False)
        # The workers must see these routes before a client can reconnect elsewhere.
        await self.producer.flush(timeout_s=self._close_timeout_s)
        await asyncio.gather(
            *(
                session.close(code=WSCloseCode.GOING_AWAY, message="Server shutting down")
                for session in sessions
            )
        )

    async def cleanup(self) -> None:
        """After every handler has finished: stop routing, flush and close the producer."""
        self._stopping = True
        if self._startup is not None:
            self._startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._startup
        await self.router.stop()
        await self.producer.close(timeout_s=self._close_timeout_s)

    # --- handlers ----------------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if not self.ready:
            raise web.HTTPServiceUnavailable(text="gateway not ready\n")
        ws = GatewayWebSocket(
            heartbeat_s=self.settings.heartbeat_s,
            client_timeout_s=self.settings.client_timeout_s,
            max_msg_size=self.settings.max_msg_size,
            timeout=self._close_timeout_s,
            compress=False,  # messages are small; deflate would only add latency
        )
        await ws.prepare(request)
        conversation_id = request.query.get("conversation_id", "")
        try:
            claims = self._signer.verify(_token(request), conversation_id=conversation_id)
        except TokenError as exc:
            self.metrics.connection_attempts.labels(outcome="unauthorized").inc()
            logger.info(
                "refused a connection for conversation %r: %s", conversation_id[:80], exc.reason
            )
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"Unauthorized")
            return ws
        client_id = request.query.get("client_id")
        if client_id is not None and not CLIENT_ID_PATTERN.match(client_id):
            self.metrics.connection_attempts.labels(outcome="bad_client_id").inc()
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"bad client_id")
            return ws
        session = self._open_session(ws, request, claims, client_id)
        try:
            await self._receive(ws, session)
        finally:
            self._close_session(session)
            await session.finish()
            self._hand_back_route(session)
            logger.info("session %s closed (code %s)", session.session_id, ws.close_code)
        return ws

    def _open_session(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        claims: TokenClaims,
        client_id: str | None,
    ) -> Session:
        settings = self.settings
        conversation = self._conversations.get(claims.conversation_id)
        if conversation is None:
            conversation = Conversation(rate_limit=self.rate_limits.hold(claims.conversation_id))
            self._conversations[claims.conversation_id] = conversation
        session = Session(
            ws=ws,
            transport=request.transport,
            conversation_id=claims.conversation_id,
            rep=claims.rep,
            client_id=client_id,
            gateway_id=settings.gateway_id,
            reply_topic=self.reply_topic.name,
            catalog=self.catalog,
            producer=self.producer,
            metrics=self.metrics,
            rate_limit=conversation.rate_limit,
            # A session lasts as long as its token would still be accepted.
            expires_at=claims.expires_at + self._signer.leeway_s,
            renew_token=lambda token: (
                self._signer.verify(token, conversation_id=claims.conversation_id).expires_at
                + self._signer.leeway_s
            ),
            send_queue_bytes=settings.ws_send_queue_bytes,
            max_unacked_bytes=settings.ws_unacked_bytes,
            close_timeout_s=self._close_timeout_s,
        )
        # Older sockets end their audio streams before this one can start its own.
        self._make_room(conversation, client_id)
        conversation.sessions.append(session)
        self.metrics.connection_attempts.labels(outcome="accepted").inc()
        self.metrics.connections.inc()
        self._sessions.add(session)
        session.start()
        self.router.attach(session)
        session.announce_route(connected=True)
        logger.info(
            "session %s open: conversation %s, rep %s, client %s",
            session.session_id,
            session.conversation_id,
            session.rep,
            client_id,
        )
        return session

    def _make_room(self, conversation: Conversation, client_id: str | None) -> None:
        """A client's new socket replaces its old one; beyond the cap, the oldest goes."""
        if client_id is not None:
            for old in conversation.open_sessions():
                if old.client_id == client_id:
                    self.metrics.replaced_sockets.labels(reason="same_client").inc()
                    old.replace(by_same_client=True)
        open_sessions = conversation.open_sessions()
        while len(open_sessions) >= self.settings.ws_sockets_per_conversation:
            self.metrics.replaced_sockets.labels(reason="socket_cap").inc()
            open_sessions.pop(0).replace(by_same_client=False)

    def _close_session(self, session: Session) -> None:
        self.router.detach(session)
        self._sessions.discard(session)
        self.metrics.connections.dec()
        conversation = self._conversations.get(session.conversation_id)
        if conversation is not None:
            if session in conversation.sessions:
                conversation.sessions.remove(session)
            if not conversation.sessions:
                del self._conversations[session.conversation_id]
                self.rate_limits.release(session.conversation_id)

    async def _receive(self, ws: web.WebSocketResponse, session: Session) -> None:
        async for frame in ws:
            try:
                if frame.type is WSMsgType.TEXT:
                    session.handle_text(frame.data)
                elif frame.type is WSMsgType.BINARY:
                    session.handle_binary(frame.data)
                elif frame.type is WSMsgType.ERROR:
                    # aiohttp has already closed the socket, e.g. 1009 for an oversized frame.
                    logger.info("session %s: %s", session.session_id, ws.exception())
                    return
            except Exception:
                # A bug handling one frame must not end the session or touch any other.
                logger.exception("session %s: error handling a frame", session.session_id)
                session.deliver(ErrorMessage(code="internal", message="the frame was not handled"))

    def _hand_back_route(self, session: Session) -> None:
        if not session.route_connected:
            return  # `end`, or shutdown, already said so
        others = [
            other
            for other in self.router.recipients_for(session.conversation_id)
            if isinstance(other, Session) and other.route_connected
        ]
        if others:
            # Another tab holds the conversation here: the route must keep pointing at us.
            others[-1].announce_route(connected=True)
        else:
            session.announce_route(connected=False)

    async def handle_healthz(self, request: web.Request) -> web.Response:
        if self.ready:
            # 200 means this gateway can serve; a degraded LLM is reported, not a failure here.
            llm, llm_reason = self.router.llm
            body: dict[str, object] = {
                "status": "ok",
                "gateway_id": self.settings.gateway_id,
                "sessions": len(self._sessions),
                "llm": llm,
            }
            if llm_reason:
                body["llm_reason"] = llm_reason
            return web.json_response(body)
        status = "stopping" if self._stopping else "starting"
        return web.json_response({"status": status}, status=503)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        page = self.static_dir / "index.html"
        if not page.is_file():
            raise web.HTTPNotFound(text="the rep's page is not installed\n")
        return web.FileResponse(page)


def _token(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query.get("token")


GATEWAY_KEY: Final = web.AppKey("gateway", Gateway)


def create_app(
    settings: Settings,
    *,
    signer: TokenSigner | None = None,
    codec: EventCodec | None = None,
    metrics: GatewayMetrics | None = None,
    static_dir: Path = DEFAULT_STATIC_DIR,
    kafka_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> web.Application:
    """The gateway app; Kafka clients start with the app and stop with it."""
    signer = signer or TokenSigner(resolve_secret(settings, create=True))
    gateway = Gateway(
        settings,
        signer=signer,
        codec=codec or default_codec(),
        metrics=metrics or GatewayMetrics(),
        static_dir=static_dir,
        kafka_timeout_s=kafka_timeout_s,
        close_timeout_s=close_timeout_s,
    )
    app = web.Application()
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/ws", gateway.handle_ws)
    app.router.add_get("/healthz", gateway.handle_healthz)
    app.router.add_get("/metrics", gateway.handle_metrics)
    app.router.add_get("/", gateway.handle_index)
    tokens = ConversationTokens(settings=settings, signer=signer)
    app.router.add_post("/conversations", tokens.handle_new_conversation)
    app.router.add_post("/token", tokens.handle_renew)
    twilio = MediaStreamEndpoint(
        dialect=TwilioDialect(),
        settings=settings,
        signer=signer,
        producer=gateway.producer,
        catalog=gateway.catalog,
        metrics=gateway.metrics,
        rate_limits=gateway.rate_limits,
        close_timeout_s=close_timeout_s,
    )
    app.router.add_get("/twilio/media", twilio.handle)
    app.on_shutdown.append(twilio.shutdown)
    if static_dir.is_dir():
        app.router.add_static("/static/", static_dir)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.cleanup()

    async def on_shutdown(app: web.Application) -> None:
        await gateway.shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app
