"""An OpenAI-compatible chat completions endpoint that answers from a playbook, on a set clock.

`POST /v1/chat/completions` (streamed as server-sent events, or plain), `GET /v1/models` and
`GET /v1/sim/stats`, which reports each recent request's time to first token as measured here,
keyed by the `X-Request-Id` the client sent (or one the simulator made up and returned in the
`X-Request-Id` response header), plus this process's CPU seconds. Benchmarks subtract that
time to first token from end-to-end latency to get the pipeline's own overhead.

The first token is written `ttft_ms` after the request arrived, then one token every
`1 / tokens_per_s` seconds. Each stream sleeps until absolute deadlines and writes whatever is
due when it wakes, so hundreds of concurrent streams cost little CPU and never drift.

A request carrying `X-Sim-Status: <4xx|5xx>` gets that error status, for testing clients'
error handling.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiohttp import web

from core.settings import Settings
from streams.llm_sim.playbook import last_customer_utterance, reply_fragments
from streams.prompt import MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS, estimate_tokens

logger = logging.getLogger(__name__)

Outcome = Literal["running", "completed", "disconnected"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER: Final = "X-Request-Id"
FORCED_STATUS_HEADER: Final = "X-Sim-Status"
DEFAULT_MODELS: Final = ("gpt-4o-mini", "teleprompter-sim")
MESSAGE_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})
_CONTENT_SENTINEL: Final = "\x00content\x00"
_DONE: Final = b"data: [DONE]\n\n"


class InvalidRequestError(Exception):
    """A request the simulator refuses, as OpenAI would: 400 naming the offending parameter."""

    def __init__(self, message: str, *, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """The parts of a chat completion request the simulator uses, validated."""

    model: str
    messages: tuple[Mapping[str, str], ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    seed: int | None


@dataclass(slots=True)
class RequestRecord:
    """What the simulator observed about one request; times in milliseconds."""

    request_id: str
    model: str
    stream: bool
    started_at_ms: float
    prompt_tokens: int
    completion_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float | None = None
    outcome: Outcome = "running"

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stream": self.stream,
            "started_at_ms": self.started_at_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": self.ttft_ms,
            "total_ms": self.total_ms,
            "outcome": self.outcome,
        }


class SimStats:
    """Counters and the most recent `capacity` request records, oldest forgotten first."""

    def __init__(self, *, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._records: OrderedDict[str, RequestRecord] = OrderedDict()
        self.requests_total = 0
        self.active = 0
        self.disconnects_total = 0

    def start(self, record: RequestRecord) -> None:
        self.requests_total += 1
        self.active += 1
        self._records[record.request_id] = record
        self._records.move_to_end(record.request_id)
        while len(self._records) > self._capacity:
            self._records.popitem(last=False)

    def finish(self, record: RequestRecord, outcome: Outcome, *, total_ms: float) -> None:
        self.active -= 1
        record.outcome = outcome
        record.total_ms = total_ms
        if outcome == "disconnected":
            self.disconnects_total += 1

    def records(self, request_ids: Sequence[str], *, limit: int) -> dict[str, RequestRecord]:
        if request_ids:
            return {rid: self._records[rid] for rid in request_ids if rid in self._records}
        newest = itertools.islice(reversed(self._records.items()), limit)
        return dict(reversed(list(newest)))


def parse_completion_request(body: object) -> CompletionRequest:
    """Validate a chat completion request body; `InvalidRequestError` names the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", param=None)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string", param="model"
        )
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequestError(
            "'messages' is required and must be a non-empty array of message objects",
            param="messages",
        )
    messages = tuple(_parse_message(index, raw) for index, raw in enumerate(raw_messages))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError(f"'stream' must be a boolean, got {stream!r:.40}", param="stream")
    include_usage = _parse_stream_options(body.get("stream_options"), stream=bool(stream))
    max_tokens: int | None = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise InvalidRequestError(
                f"'{name}' must be an integer >= 1, got {value!r:.40}", param=name
            )
        max_tokens = value if max_tokens is None else min(max_tokens, value)
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        raise InvalidRequestError(
            f"'temperature' must be a number from 0 to 2, got {temperature!r:.40}",
            param="temperature",
        )
    choices = body.get("n")
    if choices is not None and choices != 1:
        raise InvalidRequestError(f"'n' must be 1 here, got {choices!r:.40}", param="n")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise InvalidRequestError(f"'seed' must be an integer, got {seed!r:.40}", param="seed")
    return CompletionRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
        seed=seed,
    )


def _parse_stream_options(options: object, *, stream: bool) -> bool:
    """Whether the client asked for a usage chunk at the end of the stream."""
    if options is None:
        return False
    if not stream:
        raise InvalidRequestError(
            "'stream_options' is only allowed when 'stream' is true", param="stream_options"
        )
    if not isinstance(options, dict):
        raise InvalidRequestError("'stream_options' must be an object", param="stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise InvalidRequestError(
            "'stream_options.include_usage' must be a boolean",
            param="stream_options.include_usage",
        )
    return include_usage


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_message(index: int, raw: object) -> Mapping[str, str]:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'{where}' must be an object", param=where)
    role = raw.get("role")
    if role not in MESSAGE_ROLES:
        raise InvalidRequestError(
            f"'{where}.role' must be one of {', '.join(sorted(MESSAGE_ROLES))}, got {role!r:.40}",
            param=f"{where}.role",
        )
    content = raw.get("content")
    if content is None and role == "assistant":
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("text", ""), str) for part in content
    ):
        text = "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
    else:
        raise InvalidRequestError(
            f"'{where}.content' must be a string or an array of text parts",
            param=f"{where}.content",
        )
    return {"role": str(role), "content": text}


@functools.lru_cache(maxsize=256)
def _json_strings(pieces: tuple[str, ...]) -> tuple[str, ...]:
    """Each fragment as a JSON string literal; cached, as replies come from a small playbook."""
    return tuple(json.dumps(piece) for piece in pieces)


def _error_response(
    status: int, message: str, *, param: str | None = None, request_id: str | None = None
) -> web.Response:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status=status,
        headers=headers,
    )


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as OpenAI's JSON error object, so clients report it properly."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(exc.status, f"{request.method} {request.path}: {exc.reason}")


class ChatCompletionSimulator:
    """The request handlers and their shared clock settings and statistics."""

    def __init__(
        self,
        *,
        ttft_ms: float = 300.0,
        tokens_per_s: float = 40.0,
        model_names: Sequence[str] = DEFAULT_MODELS,
        stats_capacity: int = 10_000,
    ) -> None:
        if ttft_ms < 0:
            raise ValueError(f"ttft_ms must be >= 0, got {ttft_ms}")
        if tokens_per_s <= 0:
            raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
        self.ttft_ms = ttft_ms
        self.tokens_per_s = tokens_per_s
        self.model_names = tuple(model_names)
        self.stats = SimStats(capacity=stats_capacity)
        self._ids = itertools.count(1)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started, started_at_ms = loop.time(), time.time() * 1000.0
        request_id = request.headers.get(REQUEST_ID_HEADER) or f"simreq-{next(self._ids)}"
        forced = request.headers.get(FORCED_STATUS_HEADER)
        if forced is not None:
            return self._forced_error(forced, request_id)
        try:
            body = await request.json()
        except ValueError as exc:
            return _error_response(
                400, f"the request body is not valid JSON: {exc}", request_id=request_id
            )
        try:
            parsed = parse_completion_request(body)
        except InvalidRequestError as exc:
            return _error_response(400, exc.message, param=exc.param, request_id=request_id)

        pieces = reply_fragments(last_customer_utterance(parsed.messages), parsed.seed)
        finish_reason = "stop"
        if parsed.max_tokens is not None and len(pieces) > parsed.max_tokens:
            finish_reason = "length"
        pieces = pieces[: parsed.max_tokens]
        prompt_tokens = REPLY_PRIMING_TOKENS + sum(
            estimate_tokens(message["content"]) + MESSAGE_OVERHEAD_TOKENS
            for message in parsed.messages
        )
        record = RequestRecord(
            request_id=request_id,
            model=parsed.model,
            stream=parsed.stream,
            started_at_ms=started_at_ms,
            prompt_tokens=prompt_tokens,
        )
        self.stats.start(record)
        # Cancellation means the client disconnected (or the server is stopping).
        outcome: Outcome = "disconnected"
        try:
            if parsed.stream:
                response, outcome = await self._stream(
                    request, parsed, pieces, finish_reason, record, started=started
                )
            else:
                response = await self._complete(parsed, pieces, finish_reason, record, started)
                outcome = "completed"
            return response
        finally:
            self.stats.finish(record, outcome, total_ms=(loop.time() - started) * 1000.0)

    async def _stream(
        self,
        request: web.Request,
        parsed: CompletionRequest,
        pieces: tuple[str, ...],
        finish_reason: str,
        record: RequestRecord,
        *,
        started: float,
    ) -> tuple[web.StreamResponse, Outcome]:
        events = self._stream_events(parsed, pieces, finish_reason, record)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                REQUEST_ID_HEADER: record.request_id,
            }
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        first_at = started + self.ttft_ms / 1000.0
        interval = 1.0 / self.tokens_per_s
        sent = 0
        try:
            while sent < len(events):
                delay = first_at + sent * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                # Write everything due by now: a late wake-up catches up instead of drifting.
                due = int((loop.time() - first_at) / interval) + 1
                ready = min(len(events), max(due, sent + 1))
                await response.write(b"".join(events[sent:ready]))
                if sent == 0:
                    record.ttft_ms = (loop.time() - started) * 1000.0
                sent = ready
                record.completion_tokens = sent
            await response.write_eof()
        except ConnectionError:
            # The client went away mid-stream: this stream ends, quietly; aiohttp finishes the
            # (already prepared) response without complaint.
            logger.debug("client of %s disconnected after %d tokens", record.request_id, sent)
            return response, "disconnected"
        return response, "completed"

    def _stream_events(
        self,
        parsed: CompletionRequest,
        pieces: tuple[str, ...],
        finish_reason: str,
        record: RequestRecord,
    ) -> list[bytes]:
        """One SSE event per token; the role rides with the first, the end with the last."""
        chunk: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": parsed.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": _CONTENT_SENTINEL},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        if parsed.include_usage:
            chunk["usage"] = None

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return f"data: {json.dumps(chunk | {'choices': [choice]})}\n\n".encode()

        # Serialise the chunk once and splice each token's text in: no per-token dict work.
        head, tail = ("data: " + json.dumps(chunk) + "\n\n").split(json.dumps(_CONTENT_SENTINEL))
        events = [f"{head}{piece}{tail}".encode() for piece in _json_strings(pieces)]
        events[0] = event({"role": "assistant", "content": ""}, None) + events[0]
        end = event({}, finish_reason)
        if parsed.include_usage:
            usage = self._usage(record.prompt_tokens, len(pieces))
            end += f"data: {json.dumps(chunk | {'choices': [], 'usage': usage})}\n\n".encode()
        events[-1] += end + _DONE
        return events

    async def _complete(
        self,
        parsed: CompletionRequest,
        pieces: tuple[str, ...],
        finish_reason: str,
        record: RequestRecord,
        started: float,
    ) -> web.Response:
        """A plain response, sent when the last token would have been generated."""
        loop = asyncio.get_running_loop()
        done_at = started + self.ttft_ms / 1000.0 + (len(pieces) - 1) / self.tokens_per_s
        delay = done_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": self._usage(record.prompt_tokens, len(pieces)),
        }
        record.completion_tokens = len(pieces)
        record.ttft_ms = (loop.time() - started) * 1000.0
        return web.json_response(body, headers={REQUEST_ID_HEADER: record.request_id})

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _forced_error(self, forced: str, request_id: str) -> web.Response:
        try:
            status = int(forced)
        except ValueError:
            status = 0
        if not 400 <= status <= 599:
            return _error_response(
                400,
                f"'{FORCED_STATUS_HEADER}' must be an HTTP error status (400-599), got {forced!r}",
                param=FORCED_STATUS_HEADER,
                request_id=request_id,
            )
        return _error_response(
            status,
            f"simulated error {status} ({FORCED_STATUS_HEADER} header)",
            request_id=request_id,
        )

    async def models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "teleprompter"}
                    for name in self.model_names
                ],
            }
        )

    async def sim_stats(self, request: web.Request) -> web.Response:
        """Configuration, counters, CPU seconds and recent requests (`?request_id=` filters)."""
        request_ids = request.query.getall("request_id", [])
        try:
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            return _error_response(400, "'limit' must be an integer", param="limit")
        records = self.stats.records(request_ids, limit=max(0, limit))
        return web.json_response(
            {
                "ttft_ms": self.ttft_ms,
                "tokens_per_s": self.tokens_per_s,
                "requests_total": self.stats.requests_total,
                "active": self.stats.active,
                "disconnects_total": self.stats.disconnects_total,
                "cpu_s": time.process_time(),
                "requests": {rid: record.as_json() for rid, record in records.items()},
            }
        )


SIMULATOR_KEY: Final = web.AppKey("simulator", ChatCompletionSimulator)


def create_app(
    *,
    ttft_ms: float = 300.0,
    tokens_per_s: float = 40.0,
    model_names: Sequence[str] = DEFAULT_MODELS,
    stats_capacity: int = 10_000,
    max_body_bytes: int = 1024 * 1024,
) -> web.Application:
    """The simulator as an aiohttp application."""
    simulator = ChatCompletionSimulator(
        ttft_ms=ttft_ms,
        tokens_per_s=tokens_per_s,
        model_names=model_names,
        stats_capacity=stats_capacity,
    )
    app = web.Application(middlewares=[_openai_errors], client_max_size=max_body_bytes)
    app[SIMULATOR_KEY] = simulator
    app.router.add_post("/v1/chat/completions", simulator.chat_completions)
    app.router.add_get("/v1/models", simulator.models)
    app.router.add_get("/v1/sim/stats", simulator.sim_stats)
    return app


class RunningSimulator:
    """A simulator listening on a port in this event loop; `close` stops it."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self._runner = runner
        self.url = url

    async def close(self) -> None:
        await self._runner.cleanup()


async def start(settings: Settings, *, host: str = "127.0.0.1") -> RunningSimulator:
    """Start the simulator on `settings.llm_sim_port` (0: any free port) in this event loop."""
    app = create_app(ttft_ms=settings.llm_ttft_ms, tokens_per_s=settings.llm_tokens_per_s)
    # Cancel a stream's handler the moment its client disconnects: no sleeping zombie streams.
    # No access log: a benchmark sends thousands of requests.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, settings.llm_sim_port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://{bound_host}:{bound_port}/v1"
    logger.info(
        "llm-sim serving %s (ttft %.0f ms, %.0f tokens/s)",
        url,
        settings.llm_ttft_ms,
        settings.llm_tokens_per_s,
    )
    return RunningSimulator(runner, url)


async def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set, or, without a `stop` event, until SIGTERM or SIGINT.

    `ready` is called with the base URL (`http://host:port/v1`) once the port is bound; with
    port 0 that is how the caller learns the port. A caller passing `stop` owns the signals.
    """
    simulator = await start(settings, host=host)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(simulator.url)
        await stop.wait()
        logger.info("llm-sim stopping")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await simulator.close()


def run(settings: Settings) -> None:
    """Serve the simulator in this process until SIGTERM or Ctrl-C; print the URL when ready."""
    asyncio.run(
        serve(
            settings,
            host=settings.llm_sim_host,
            ready=lambda url: print(f"llm-sim serving {url}", flush=True),
        )
    )
