"""The broker process: an asyncio TCP server speaking the Kafka protocol over local storage.

Requests on one connection are handled one at a time and answered in order, as Kafka does;
a Fetch with nothing to return parks until a record arrives on one of its partitions (or its
max wait passes), so a waiting consumer sees a new record within the same loop iteration.
A malformed frame, an unknown API or a failing handler closes that one connection, logged.

What one connection can cost is bounded: a frame longer than `max_request_bytes` (Kafka's
socket.request.max.bytes) is refused from its length prefix; a frame whose bytes stop
arriving is dropped after `request_read_timeout_s`; a connection with no request for
`idle_timeout_s` (Kafka's connections.max.idle.ms) is closed. Parsing is bounded by
decoding.py; a request holding more than a few thousand array items is parsed in a parser
process (a thread would still hold the interpreter lock the event loop needs), so one
connection's big request never stalls the loop that serves the others.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType
from typing import Final

from broker.decoding import MAX_REQUEST_ITEMS, RequestTooComplexError
from broker.errors import MalformedRequestError
from broker.groups import GroupCoordinator
from broker.handlers import BrokerInfo, RequestHandlers
from broker.log import Segment
from broker.offsets import OffsetStore
from broker.protocol import (
    API_VERSIONS_KEY,
    Request,
    UnsupportedApiError,
    api_versions_error_frame,
    encode_response,
    parse_request,
)
from broker.storage import BrokerIdentity, DataDirLock
from broker.topics import TopicStore

logger = logging.getLogger(__name__)

_LENGTH: Final = struct.Struct(">i")
_MIN_FRAME: Final = 8  # api key, version, correlation id, client id length
DEFAULT_MAX_REQUEST_BYTES: Final = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes
DEFAULT_IDLE_TIMEOUT_S: Final = 600.0  # Kafka's connections.max.idle.ms
DEFAULT_REQUEST_READ_TIMEOUT_S: Final = 30.0
# Array items a request may hold and still be parsed on the event loop (a few milliseconds at
# most); a bigger one is parsed again in the parser process, with the full budget.
_ITEMS_PARSED_ON_LOOP: Final = 1_000


class EmbeddedBroker:
    """A single-node Kafka-compatible broker. `await start()`, use, `await stop()`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        node_id: int = 1,
        advertised_host: str | None = None,
        auto_create_topics: bool = False,
        default_partitions: int = 1,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        request_read_timeout_s: float = DEFAULT_REQUEST_READ_TIMEOUT_S,
        flush_interval_s: float = 1.0,
        retention_check_interval_s: float = 30.0,
        min_session_timeout_ms: int = 100,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._host = host
        self._port = port
        self._node_id = node_id
        self._advertised_host = advertised_host or host
        self._auto_create_topics = auto_create_topics
        self._default_partitions = default_partitions
        self._max_request_bytes = max_request_bytes
        self._idle_timeout_s = idle_timeout_s
        self._request_read_timeout_s = request_read_timeout_s
        self._parser: ProcessPoolExecutor | None = None  # started at the first big request
        self._flush_interval_s = flush_interval_s
        self._retention_check_interval_s = retention_check_interval_s
        self._min_session_timeout_ms = min_session_timeout_ms
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._housekeeping: list[asyncio.Task[None]] = []
        self._topics: TopicStore | None = None
        self._offsets: OffsetStore | None = None
        self._groups: GroupCoordinator | None = None
        self._handlers: RequestHandlers | None = None
        self._lock = DataDirLock(self._data_dir)

    @property
    def port(self) -> int:
        """The port listened on (the ephemeral one chosen, when constructed with 0)."""
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self._advertised_host}:{self._port}"

    @property
    def topics(self) -> TopicStore:
        if self._topics is None:
            raise RuntimeError("the broker is not started")
        return self._topics

    async def start(self) -> None:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            await self._open()
        except BaseException:
            self._close_stores()
            raise
        logger.info(
            "embedded Kafka broker listening on %s (data in %s)",
            self.bootstrap_servers,
            self._data_dir,
        )

    async def _open(self) -> None:
        identity = BrokerIdentity(self._data_dir)
        self._topics = TopicStore(self._data_dir)
        self._offsets = OffsetStore(self._data_dir)
        self._groups = GroupCoordinator(
            offsets=self._offsets, min_session_timeout_ms=self._min_session_timeout_ms
        )
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        if self._port == 0:
            self._port = int(self._server.sockets[0].getsockname()[1])
        self._handlers = RequestHandlers(
            info=BrokerInfo(
                node_id=self._node_id,
                host=self._advertised_host,
                port=self._port,
                cluster_id=identity.cluster_id,
                auto_create_topics=self._auto_create_topics,
                default_partitions=self._default_partitions,
            ),
            topics=self._topics,
            offsets=self._offsets,
            groups=self._groups,
            identity=identity,
        )
        self._groups.start()
        loop = asyncio.get_running_loop()
        self._housekeeping = [
            loop.create_task(self._flush_periodically()),
            loop.create_task(self._enforce_retention_periodically()),
        ]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in [*self._connections, *self._housekeeping]:
            task.cancel()
        await asyncio.gather(*self._connections, *self._housekeeping, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if self._groups is not None:
            await self._groups.stop()
        if self._parser is not None:
            self._parser.shutdown(wait=True, cancel_futures=True)
            self._parser = None
        self._close_stores()
        logger.info("embedded Kafka broker on port %d stopped", self._port)

    def _close_stores(self) -> None:
        if self._topics is not None:
            self._topics.close()
            self._topics = None
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None
        self._lock.release()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- connections -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        try:
            await self._converse(reader, writer, peer_host)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            # stop() cancels connections; ending quietly here is the end of this task (asyncio's
            # start_server callback would otherwise report the cancellation as an error).
            pass
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        assert self._handlers is not None
        routes = self._handlers.routes
        while True:
            frame = await self._read_frame(reader, peer)
            if frame is None:
                return
            try:
                request = await self._parse(frame)
            except UnsupportedApiError as exc:
                if exc.header.api_key == API_VERSIONS_KEY:
                    writer.write(api_versions_error_frame(exc.header.correlation_id))
                    await writer.drain()
                    continue
                logger.warning("closing connection from %s: %s", peer, exc)
                return
            except MalformedRequestError as exc:
                logger.warning("closing connection from %s: malformed request: %s", peer, exc)
                return
            try:
                body = await routes[request.header.api_key](request, peer)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "closing connection from %s: %s v%d failed",
                    peer,
                    request.spec.name,
                    request.header.api_version,
                )
                return
            if body is not None:
                writer.write(encode_response(request, body))
                await writer.drain()

    async def _read_frame(self, reader: asyncio.StreamReader, peer: str) -> bytes | None:
        """The next request frame, or None when the connection is to close (logged)."""
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                first = await reader.readexactly(1)
        except TimeoutError:
            logger.info("closing connection from %s: idle for %g s", peer, self._idle_timeout_s)
            return None
        except asyncio.IncompleteReadError:
            return None  # the client closed between requests
        try:
            async with asyncio.timeout(self._request_read_timeout_s):
                (size,) = _LENGTH.unpack(first + await reader.readexactly(3))
                if not _MIN_FRAME <= size <= self._max_request_bytes:
                    logger.warning(
                        "closing connection from %s: frame length %d outside %d..%d bytes",
                        peer,
                        size,
                        _MIN_FRAME,
                        self._max_request_bytes,
                    )
                    return None
                return await reader.readexactly(size)
        except TimeoutError:
            logger.warning(
                "closing connection from %s: a request's bytes stopped arriving for %g s",
                peer,
                self._request_read_timeout_s,
            )
            return None

    async def _parse(self, frame: bytes) -> Request:
        try:
            return parse_request(frame, max_items=_ITEMS_PARSED_ON_LOOP)
        except RequestTooComplexError as exc:
            if exc.needed > MAX_REQUEST_ITEMS:
                raise  # no budget could take it: refused without parsing further
        # A big request: parse it again where it cannot stall the other connections.
        if self._parser is None:
            self._parser = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._parser, parse_request, frame)
        except BrokenProcessPool:
            self._parser = None  # the parser died (killed?); the next big request starts one
            raise MalformedRequestError("the parser process died") from None

    # --- housekeeping ----------------------------------------------------------------------

    async def _flush_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._flush_interval_s)
            segments = [s for log in self.topics.all_logs() for s in log.segments_to_sync()]
            try:
                await loop.run_in_executor(None, _fsync, segments, self._offsets)
            except OSError:
                logger.exception("periodic fsync failed")

    async def _enforce_retention_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._retention_check_interval_s)
            self.enforce_retention()

    def enforce_retention(self) -> int:
        """Apply every topic's retention now; returns the number of segments removed."""
        now_ms = int(time.time() * 1000)
        return sum(log.apply_retention(now_ms) for log in self.topics.all_logs())


def _fsync(segments: list[Segment], offsets: OffsetStore | None) -> None:
    for segment in segments:
        segment.fsync()
    if offsets is not None:
        offsets.flush()
