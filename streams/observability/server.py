"""`GET /metrics` and `GET /healthz` on every worker, served by aiohttp on the worker's own loop.

Why not Faust's web server (`web_enabled`, off in `streams.app`): it brings routes of its own
(/, /router, /table, /stats) on its own port setting, and its Prometheus sensor registers
metrics under Faust's names in the process-wide registry; we want exactly two routes, our
metric names in a registry of our own, and the gateway's way of serving them. It runs as a
mode Service handed to `faust.Worker`, which starts it before the app (so /healthz answers
while Kafka is still being joined) and stops it after the app.

/healthz is 200 with {"status": "ok", ...} while the last probe of Kafka and of the LLM
endpoint succeeded, and 503 otherwise, with the JSON body naming what failed ("degraded") or
saying no probe has finished yet ("starting"). Probes run every `probe_interval_s`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, Final

import aiohttp
import faust
import mode
from aiohttp import hdrs, web

from core.kafka.groups import GroupAdmin, Partition
from core.settings import Settings
from streams.observability.health import WorkerProbe
from streams.observability.metrics import CONTENT_TYPE, WorkerMetrics

logger = logging.getLogger(__name__)

PROBE_INTERVAL_S: Final = 5.0
PROBE_TIMEOUT_S: Final = 5.0


class WorkerHttpError(RuntimeError):
    """The worker's HTTP port cannot be used; the message names the setting."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port), so a taken port fails at start, clearly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WorkerHttpError(
            f"cannot serve worker metrics on {host}:{port} ({exc.strerror}); set "
            "TELEPROMPTER_WORKER_HTTP_PORT to a free port, or 0 to pick one"
        ) from exc
    return sock


def bind_worker_port(host: str, port: int, *, chosen: bool) -> socket.socket:
    """The worker's listening socket. A port someone `chosen` that is taken is an error; the
    default, when taken (another worker on this machine), gives way to a free port, logged:
    a worker without metrics would be worse than one on a port the log names."""
    try:
        return listening_socket(host, port)
    except WorkerHttpError:
        if chosen:
            raise
    sock = listening_socket(host, 0)
    logger.warning(
        "port %d is taken: worker metrics on port %d instead "
        "(set TELEPROMPTER_WORKER_HTTP_PORT to choose)",
        port,
        sock.getsockname()[1],
    )
    return sock


class WorkerEndpoints(mode.Service):
    """Serves a worker's /metrics and /healthz and keeps its health and lag up to date."""

    def __init__(
        self,
        *,
        sock: socket.socket,
        metrics: WorkerMetrics,
        probe: WorkerProbe,
        probe_interval_s: float = PROBE_INTERVAL_S,
        **kwargs: Any,
    ) -> None:
        self._sock = sock
        self.metrics = metrics
        self.probe = probe
        self._probe_interval_s = probe_interval_s
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        super().__init__(**kwargs)

    @classmethod
    def for_worker(
        cls,
        settings: Settings,
        *,
        app: faust.App,
        metrics: WorkerMetrics,
        conversations: Callable[[], int],
    ) -> WorkerEndpoints:
        """The endpoints of the worker running `app`; binds the port now."""
        metrics.hold_conversations(conversations)
        probe = WorkerProbe(
            admin=GroupAdmin(
                bootstrap_servers=settings.bootstrap_servers, timeout_s=PROBE_TIMEOUT_S
            ),
            group_id=app.conf.id,
            assignment=lambda: _assigned(app),
            llm_base_url=settings.llm_base_url,
            llm_api_key=settings.openai_api_key.get_secret_value(),
            timeout_s=PROBE_TIMEOUT_S,
        )
        sock = bind_worker_port(
            settings.worker_http_host,
            settings.worker_http_port,
            chosen="worker_http_port" in settings.model_fields_set,
        )
        return cls(sock=sock, metrics=metrics, probe=probe)

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def on_start(self) -> None:
        web_app = web.Application()
        web_app.router.add_get("/metrics", self._serve_metrics)
        web_app.router.add_get("/healthz", self._serve_health)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        self._session = aiohttp.ClientSession()
        logger.info("worker metrics at %s/metrics, health at %s/healthz", self.url, self.url)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @mode.Service.task
    async def _probe_forever(self) -> None:
        while not self.should_stop:
            assert self._session is not None
            try:
                report = await self.probe.run_once(self._session)
            except Exception:  # a failing probe must never take the worker down with it
                logger.exception("health probe failed")
            else:
                for name, check in report.checks.items():
                    self.metrics.set_health(name, ok=check.ok)
                # Unknown lag (Kafka did not answer) shows as no series, never a stale one.
                self.metrics.set_consumer_lag(self.probe.lags)
            await self.sleep(self._probe_interval_s)

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})

    async def _serve_health(self, request: web.Request) -> web.Response:
        report = self.probe.report
        return web.json_response(report.as_json(), status=200 if report.healthy else 503)


def _assigned(app: faust.App) -> Iterable[Partition]:
    """The partitions Faust's consumer holds now; none before it has started."""
    # Faust raises its own errors (ConsumerNotStarted, ...) until the consumer runs.
    with contextlib.suppress(Exception):
        return [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
    return []
