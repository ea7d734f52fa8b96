"""The LLM behind suggestions and summaries: any OpenAI-compatible chat completions endpoint.

One `SuggestionModel` per process holds one HTTP connection pool sized for `max_streams`
concurrent streams. Errors leave this module only as `LlmError`, whose `kind` tells the caller
what to do about it and whose message names the endpoint.

Streams are requested through the `openai` client (its request building, headers, status errors)
but read raw: the `data:` lines of the server-sent events are parsed here with orjson, which costs
a fraction of the client's own stream (an SSE decoder in Python and a pydantic model per chunk;
docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final, Literal

import openai
import orjson
from openai.types.chat import ChatCompletionMessageParam

from core.settings import Settings
from streams.prompt import ChatMessage, Prompt

logger = logging.getLogger(__name__)

# unavailable: connection failed, or the endpoint failed (5xx) - another try may work.
# rate_limited: 429 - back off. timeout: no answer in time. bad_request: the request (or the
# configuration: key, model name) is wrong - retrying the same request will not help.
LlmErrorKind = Literal["unavailable", "rate_limited", "bad_request", "timeout"]

REQUEST_ID_HEADER: Final = "X-Request-Id"
# The loggers of the HTTP clients under openai, which log every request at INFO.
HTTP_CLIENT_LOGGERS: Final = ("httpx", "httpx2", "openai")
SUMMARY_TEMPERATURE: Final = 0.2
# Connections beyond the stream limit, so summaries never wait behind suggestion streams.
SPARE_CONNECTIONS: Final = 4
_DONE: Final = b"[DONE]"


class LlmError(Exception):
    """A chat completion failed; `kind` says how, the message names the endpoint and why."""

    def __init__(
        self, message: str, *, kind: LlmErrorKind, url: str, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind: LlmErrorKind = kind
        self.url = url
        self.status = status


class SuggestionModel:
    """Streams suggestions from `model` and completes summaries with `summary_model`.

    `timeout_s` bounds the wait for each piece of the answer (connect, the first token, every
    token after it); connecting gets at most `connect_timeout_s`. Retries are off by default:
    a late suggestion is a useless one, so the caller decides whether another try is worth it.
    `default_headers` go with every request (some gateways want their own headers).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str = "gpt-4o-mini",
        summary_model: str = "gpt-4o-mini",
        max_tokens: int = 120,
        temperature: float = 0.4,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 5.0,
        max_streams: int = 64,
        max_retries: int = 0,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.summary_model = summary_model
        self._max_tokens = max_tokens
        self._temperature = temperature
        timeout = openai.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        # The pool's Limits class is whichever HTTP library this openai version is built on.
        limits_type = type(openai.DEFAULT_CONNECTION_LIMITS)
        connections = max_streams + SPARE_CONNECTIONS
        # openai's aiohttp transport (the `aiohttp` extra): aiohttp parses HTTP in C, a quarter
        # less CPU per streamed suggestion than the default pure-Python one (docs/benchmarks.md).
        http_client = openai.DefaultAioHttpClient(
            timeout=timeout,
            limits=limits_type(max_connections=connections, max_keepalive_connections=connections),
        )
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            http_client=http_client,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SuggestionModel:
        return cls(
            base_url=settings.llm_base_url,
            api_key=settings.openai_api_key.get_secret_value(),
            model=settings.llm_model,
            summary_model=settings.summary_model,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            timeout_s=settings.llm_timeout_s,
            max_streams=settings.llm_max_streams,
        )

    async def stream(
        self, prompt: Prompt, *, request_id: str | None = None
    ) -> AsyncGenerator[str, None]:
        """The suggestion's text, fragment by fragment as the endpoint streams it.

        Cancelling the consuming task closes the HTTP stream at once. A consumer that stops
        early without being cancelled should iterate inside `contextlib.aclosing(...)`, so
        the stream closes then rather than when the generator is garbage-collected.
        `request_id` is sent as `X-Request-Id`, which the simulator keys its timings by.
        """
        try:
            async with self._client.chat.completions.with_streaming_response.create(
                model=self.model,
                messages=_message_params(prompt),
                stream=True,
                max_tokens=prompt.max_tokens or self._max_tokens,
                temperature=self._temperature,
                extra_headers=_headers(request_id),
            ) as response:
                events = ServerSentEvents()
                done = False
                async for chunk in response.iter_bytes():
                    if done:
                        continue  # read to the end, so the connection goes back to the pool
                    # What arrived together is yielded together: one delta, not one per token.
                    pieces: list[str] = []
                    for data in events.feed(chunk):
                        if data == _DONE:
                            done = True
                            break
                        pieces += self._contents(data)
                    if pieces:
                        yield "".join(pieces)
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc
        except _HTTP_TIMEOUT_ERRORS as exc:
            raise LlmError(
                f"LLM endpoint {self.base_url} timed out mid-stream",
                kind="timeout",
                url=self.base_url,
            ) from exc
        except _HTTP_ERRORS as exc:
            raise LlmError(
                f"LLM endpoint {self.base_url} failed mid-stream ({exc!r})",
                kind="unavailable",
                url=self.base_url,
            ) from exc

    def _contents(self, data: bytes) -> list[str]:
        """The text of one streamed chunk (`choices[].delta.content`); an error event raises."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LlmError(
                f"LLM endpoint {self.base_url} sent a malformed event: {data[:200]!r}",
                kind="unavailable",
                url=self.base_url,
            ) from exc
        if not isinstance(chunk, dict):
            return []
        if error := chunk.get("error"):
            message = error.get("message") if isinstance(error, dict) else None
            raise LlmError(
                f"LLM endpoint {self.base_url} failed: {message or 'an error event mid-stream'}",
                kind="unavailable",
                url=self.base_url,
            )
        return [
            content
            for choice in chunk.get("choices") or ()
            if isinstance(choice, dict)
            and isinstance(delta := choice.get("delta"), dict)
            and isinstance(content := delta.get("content"), str)
            and content
        ]

    async def complete(self, prompt: Prompt, *, request_id: str | None = None) -> str:
        """The whole answer at once, from the summary model (for the rolling summary)."""
        try:
            completion = await self._client.chat.completions.create(
                model=self.summary_model,
                messages=_message_params(prompt),
                max_tokens=prompt.max_tokens or self._max_tokens,
                temperature=SUMMARY_TEMPERATURE,
                extra_headers=_headers(request_id),
            )
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc
        if not completion.choices:
            raise LlmError(
                f"LLM endpoint {self.base_url} returned no choices",
                kind="unavailable",
                url=self.base_url,
            )
        return (completion.choices[0].message.content or "").strip()

    async def probe(self) -> None:
        """A one-token completion; raises `LlmError` unless the endpoint answers it."""
        try:
            await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": "ping"}],
                max_tokens=1,
                extra_headers=_headers("probe"),
            )
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> SuggestionModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _wrap(self, exc: openai.OpenAIError) -> LlmError:
        """Our error for the SDK's, classified by what the caller can do about it."""
        status: int | None = None
        kind: LlmErrorKind
        if isinstance(exc, openai.APITimeoutError) and (refused := _refusal(exc)) is not None:
            # openai's aiohttp transport reports every failed connect as a connect timeout.
            kind, what = "unavailable", f"unreachable ({refused})"
        elif isinstance(exc, openai.APITimeoutError):
            kind, what = "timeout", "timed out"
        elif isinstance(exc, openai.APIConnectionError):
            kind, what = "unavailable", f"unreachable ({exc.__cause__ or exc})"
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            what = f"answered {status}: {exc.message}"
            if status == 429:
                kind = "rate_limited"
            elif status == 408:
                kind = "timeout"
            elif status >= 500:
                kind = "unavailable"
            else:
                kind = "bad_request"
        else:
            # A malformed response or an error event mid-stream: the endpoint is misbehaving.
            kind, what = "unavailable", f"failed: {exc}"
        return LlmError(
            f"LLM endpoint {self.base_url} {what}", kind=kind, url=self.base_url, status=status
        )


class ServerSentEvents:
    """Splits a server-sent event stream, fed in chunks as they arrive, into its events' data.

    Only `data:` fields matter here (several in one event are joined by newlines, as the
    standard says); comments and the `event`, `id` and `retry` fields are skipped.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event that `chunk` completes."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events: list[bytes] = []
        for raw in lines:
            line = raw.removesuffix(b"\r")
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events


def _refusal(exc: BaseException) -> OSError | None:
    """The connection error (refused, reset, unreachable) behind `exc`, if one is."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _http_module() -> Any:
    """The HTTP library under this openai version (httpx, or httpx2 in newer ones)."""
    return sys.modules[type(openai.DEFAULT_CONNECTION_LIMITS).__module__.partition(".")[0]]


# A stream's body is read outside the openai client, so its transport errors are mapped here.
_HTTP_TIMEOUT_ERRORS: Final[type[Exception]] = _http_module().TimeoutException
_HTTP_ERRORS: Final[type[Exception]] = _http_module().HTTPError


def _headers(request_id: str | None) -> dict[str, str] | None:
    return {REQUEST_ID_HEADER: request_id} if request_id else None


def _message_params(prompt: Prompt) -> list[ChatCompletionMessageParam]:
    return [_message_param(message) for message in prompt.messages]


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}
