"""The LLM behind suggestions and summaries: any OpenAI-compatible chat completions endpoint.

One `SuggestionModel` per process holds one HTTP connection pool sized for `max_streams`
concurrent streams. Errors leave this module only as `LlmError`, whose `kind` tells the caller
what to do about it and whose message names the endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Final, Literal

import openai
from openai.types.chat import ChatCompletionMessageParam

from core.settings import Settings
from streams.prompt import ChatMessage, Prompt

logger = logging.getLogger(__name__)

# unavailable: connection failed, or the endpoint failed (5xx) - another try may work.
# rate_limited: 429 - back off. timeout: no answer in time. bad_request: the request (or the
# configuration: key, model name) is wrong - retrying the same request will not help.
LlmErrorKind = Literal["unavailable", "rate_limited", "bad_request", "timeout"]

REQUEST_ID_HEADER: Final = "X-Request-Id"
SUMMARY_TEMPERATURE: Final = 0.2
# Connections beyond the stream limit, so summaries never wait behind suggestion streams.
SPARE_CONNECTIONS: Final = 4


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
        http_client = openai.DefaultAsyncHttpxClient(
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
            chunks = await self._client.chat.completions.create(
                model=self.model,
                messages=_message_params(prompt),
                stream=True,
                max_tokens=prompt.max_tokens or self._max_tokens,
                temperature=self._temperature,
                extra_headers=_headers(request_id),
            )
            async with chunks:
                async for chunk in chunks:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc

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
        if isinstance(exc, openai.APITimeoutError):
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
