"""What-if replay: a recorded conversation's turns, re-run through today's prompt and an LLM.

For each recorded turn, in order, the context is rebuilt as it stood when the turn was made:
a `ConversationContext` fed the conversation's final transcript segments, summaries and
profile up to the turn's event time (the worker builds it from the same events). Today's
`PromptBuilder` renders the prompt, optionally with another system prompt (`--prompt FILE`),
and the chosen OpenAI-compatible endpoint streams the new suggestion. Turns run one at a time,
after a 1-token warm-up request, so each time to first token is the endpoint's alone, on a
warm connection as the recorded ones were. Nothing is written to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import statistics
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from schemas.codec import default_codec
from schemas.events import (
    AudioChunk,
    ConversationSummary,
    CustomerProfile,
    Event,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)
from streams.llm import LlmError, SuggestionModel
from streams.prompt import (
    MAX_PROMPT_TOKENS,
    SUGGESTION_SYSTEM_PROMPT,
    ChatMessage,
    ConversationContext,
    ProfileError,
    Prompt,
    PromptBuilder,
    estimate_tokens,
)
from teleprompter.conversations.finder import ConversationFinder, UnknownConversationError
from teleprompter.conversations.render import LLM_STAGES, TTFT_STAGES, stage_gap_ms
from teleprompter.event_log.reader import (
    EventLogError,
    EventLogReader,
    RecordedEvent,
    UnknownTopicError,
)
from teleprompter.event_log.times import format_time
from teleprompter.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)

# Events at one millisecond in the order the worker saw them: the turn's own words first.
_ORDER: Final = {CustomerProfile: 0, ConversationSummary: 1, TranscriptSegment: 2, Turn: 3}
MAX_PROMPT_FILE_BYTES: Final = 64 * 1024
DEFAULT_WIDTH: Final = 100


class PromptFileError(ValueError):
    """The `--prompt` file cannot be used; the message names it and why."""


@dataclass(frozen=True, kw_only=True)
class WhatIfRequest:
    conversation_id: str
    from_ms: int | None = None
    to_ms: int | None = None
    llm_base_url: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    output_path: Path | None = None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a suggestion ended: the recorded one, or the one re-run now."""

    kind: str
    text: str
    ttft_ms: float | None
    total_ms: float | None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "ttft_ms": self.ttft_ms,
            "total_ms": self.total_ms,
            "reason": self.reason,
        }


NO_OUTCOME: Final = Outcome(kind="none", text="", ttft_ms=None, total_ms=None)


@dataclass(frozen=True, kw_only=True)
class TurnPrompt:
    """One recorded turn, the prompt it gets today, and what was suggested then."""

    turn: Turn
    prompt: Prompt
    original: Outcome


@dataclass(frozen=True, kw_only=True)
class Comparison:
    turn: TurnPrompt
    new: Outcome
    model: str
    base_url: str

    def as_json(self) -> dict[str, Any]:
        turn = self.turn.turn
        return {
            "conversation_id": turn.conversation_id,
            "turn_id": turn.turn_id,
            "at": format_time(turn.event_time_ms),
            "customer_text": turn.text,
            "prompt": self.turn.prompt.as_openai(),
            "original": self.turn.original.as_json(),
            "new": {**self.new.as_json(), "model": self.model, "base_url": self.base_url},
        }


def read_system_prompt(path: Path) -> str:
    """The `--prompt` file: UTF-8 text that replaces the system prompt."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptFileError(f"cannot read --prompt file {path}: {exc.strerror}") from None
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise PromptFileError(
            f"--prompt file {path} is {len(data)} bytes; a system prompt is at most "
            f"{MAX_PROMPT_FILE_BYTES} bytes"
        )
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"--prompt file {path} is not UTF-8 text: {exc.reason}") from None
    if not text:
        raise PromptFileError(f"--prompt file {path} is empty")
    return text


def turn_prompts(
    events: Iterable[Event],
    *,
    window_s: float,
    system_prompt: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[TurnPrompt]:
    """Each turn (made from `from_ms` to `to_ms`) with the prompt its context gives today."""
    ordered = sorted(events, key=lambda e: (e.event_time_ms, _ORDER.get(type(e), len(_ORDER))))
    outcomes = _recorded_outcomes(ordered)
    builder = _builder_for(system_prompt)
    context: ConversationContext | None = None
    prompts: list[TurnPrompt] = []
    for event in ordered:
        if context is None:
            context = ConversationContext(event.conversation_id, window_s=window_s)
        if isinstance(event, TranscriptSegment):
            context.add_segment(event)
        elif isinstance(event, ConversationSummary):
            context.apply_summary(event)
        elif isinstance(event, CustomerProfile):
            try:
                context.set_profile_json(event.profile_json)
            except ProfileError as exc:
                logger.warning("ignoring the recorded profile: %s", exc)
        elif isinstance(event, Turn):
            at = event.event_time_ms
            if (from_ms is not None and at < from_ms) or (to_ms is not None and at >= to_ms):
                continue
            prompt = builder.suggestion(context)
            if system_prompt is not None:
                prompt = _with_system_prompt(prompt, system_prompt)
            prompts.append(
                TurnPrompt(
                    turn=event, prompt=prompt, original=outcomes.get(event.turn_id, NO_OUTCOME)
                )
            )
    return prompts


async def rerun(
    turns: Iterable[TurnPrompt], model: SuggestionModel
) -> AsyncIterator[tuple[TurnPrompt, Outcome]]:
    """Each turn's new suggestion, streamed from `model`, one turn at a time."""
    for turn in turns:
        yield turn, await _suggest(turn, model)


def what_if(
    settings: Settings, request: WhatIfRequest, *, out: TextIO, err: Callable[[str], None]
) -> int:
    """Re-run the conversation's turns and print old and new side by side; the exit code."""
    try:
        events = _recorded_events(settings, request.conversation_id)
    except (UnknownTopicError, UnknownConversationError) as exc:
        err(f"teleprompter: {exc}")
        return EXIT_USAGE
    except EventLogError as exc:
        err(f"teleprompter: {exc}")
        return EXIT_FAILED
    turns = turn_prompts(
        events,
        window_s=settings.context_window_s,
        system_prompt=request.system_prompt,
        from_ms=request.from_ms,
        to_ms=request.to_ms,
    )
    if not turns:
        err(f"teleprompter: {request.conversation_id!r} has no customer turns to re-run")
        return EXIT_USAGE
    try:
        comparisons = asyncio.run(_run(settings, request, turns, out=out, err=err))
    except KeyboardInterrupt:
        err("teleprompter: stopped")
        return EXIT_FAILED
    failed = [c for c in comparisons if c.new.kind == "failed"]
    out.write(summary_line(comparisons) + "\n")
    if failed:
        first = failed[0].new.reason
        err(f"teleprompter: {len(failed)} of {len(comparisons)} turns failed: {first}")
        return EXIT_FAILED
    return EXIT_OK


def side_by_side(comparison: Comparison, *, index: int, count: int, width: int) -> str:
    """A turn's header, the customer's words, then old and new suggestion in two columns."""
    turn = comparison.turn.turn
    original, new = comparison.turn.original, comparison.new
    column = max(20, (width - 3) // 2)
    left_title = f"ORIGINAL {original.kind}{_timing(original)}"
    right_title = f"NEW {comparison.model}{_timing(new)}"
    left = textwrap.wrap(original.text or original.reason or "(nothing)", column)
    right = textwrap.wrap(new.text or new.reason or "(nothing)", column)
    rows = [(left_title, right_title), *_zip_longest(left, right)]
    lines = [
        f"turn {index} of {count}  {turn.turn_id}  {format_time(turn.event_time_ms)}",
        *textwrap.wrap(f"customer: {turn.text}", width, subsequent_indent="  "),
        *(f"{a:<{column}} | {b}".rstrip() for a, b in rows),
    ]
    return "\n".join(lines)


def summary_line(comparisons: list[Comparison]) -> str:
    def median(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{statistics.median(known):.0f} ms" if known else "-"

    return (
        f"{len(comparisons)} turns re-run; median time to first token: original "
        f"{median([c.turn.original.ttft_ms for c in comparisons])}, new "
        f"{median([c.new.ttft_ms for c in comparisons])}"
    )


# --- internals ----------------------------------------------------------------------------------
def _recorded_events(settings: Settings, conversation_id: str) -> list[Event]:
    """The conversation's events except audio, whose bytes the prompt never sees."""
    catalog = TopicCatalog.from_settings(settings)
    with EventLogReader(
        bootstrap_servers=settings.bootstrap_servers,
        codec=default_codec(),
        keys=[conversation_id.encode()],
    ) as reader:
        finder = ConversationFinder(reader, catalog, conversation_id)
        return [
            record.event
            for record in finder.history(replies=False)
            if isinstance(record, RecordedEvent) and not isinstance(record.event, AudioChunk)
        ]


async def _run(
    settings: Settings,
    request: WhatIfRequest,
    turns: list[TurnPrompt],
    *,
    out: TextIO,
    err: Callable[[str], None],
) -> list[Comparison]:
    width = min(shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns, 160)
    comparisons: list[Comparison] = []
    async with contextlib.AsyncExitStack() as stack:
        base_url = request.llm_base_url or settings.openai_base_url
        if base_url is None:
            from streams.llm_sim.server import start  # noqa: PLC0415  # only when no endpoint is set

            simulator = await start(settings.model_copy(update={"llm_sim_port": 0}))
            stack.push_async_callback(simulator.close)
            base_url = simulator.url
            err(f"teleprompter: no --llm-base-url or OPENAI_BASE_URL; the simulator: {base_url}")
        model = SuggestionModel(
            base_url=base_url,
            api_key=settings.openai_api_key.get_secret_value(),
            model=request.model or settings.llm_model,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            timeout_s=settings.llm_timeout_s,
            max_streams=1,
        )
        stack.push_async_callback(model.close)
        output = stack.enter_context(_open_output(request.output_path))
        await _warm_up(model, turns[0])
        async for turn, new in rerun(turns, model):
            comparison = Comparison(turn=turn, new=new, model=model.model, base_url=base_url)
            comparisons.append(comparison)
            out.write(
                side_by_side(comparison, index=len(comparisons), count=len(turns), width=width)
                + "\n\n"
            )
            out.flush()
            if output is not None:
                output.write(json.dumps(comparison.as_json(), ensure_ascii=False) + "\n")
                output.flush()
    return comparisons


@contextlib.contextmanager
def _open_output(path: Path | None) -> Iterator[TextIO | None]:
    if path is None:
        yield None
        return
    with path.open("w", encoding="utf-8") as file:
        yield file


async def _warm_up(model: SuggestionModel, turn: TurnPrompt) -> None:
    """One 1-token request first, so the first turn's time to first token does not include
    opening the connection (the recorded ones were measured on warm connections)."""
    prompt = Prompt(messages=turn.prompt.messages, max_tokens=1)
    try:
        async with contextlib.aclosing(model.stream(prompt, request_id="whatif-warm-up")) as s:
            async for _ in s:
                pass
    except LlmError as exc:
        logger.info("warm-up request failed (the first turn will say why): %s", exc)


async def _suggest(turn: TurnPrompt, model: SuggestionModel) -> Outcome:
    started = time.perf_counter()
    first: float | None = None
    text = ""
    try:
        stream = model.stream(turn.prompt, request_id=f"whatif-{turn.turn.turn_id}")
        async with contextlib.aclosing(stream) as fragments:
            async for fragment in fragments:
                if first is None and fragment:
                    first = time.perf_counter()
                text += fragment
    except LlmError as exc:
        return Outcome(
            kind="failed",
            text=text.strip(),
            ttft_ms=_ms(started, first),
            total_ms=_ms(started, time.perf_counter()),
            reason=str(exc),
        )
    return Outcome(
        kind="complete",
        text=text.strip(),
        ttft_ms=_ms(started, first),
        total_ms=_ms(started, time.perf_counter()),
    )


def _recorded_outcomes(events: Iterable[Event]) -> dict[str, Outcome]:
    """The last recorded outcome (not a delta) of each turn."""
    outcomes: dict[str, Outcome] = {}
    for event in events:
        if not isinstance(event, SuggestionEvent) or event.kind == "delta":
            continue
        outcomes[event.turn_id] = Outcome(
            kind=event.kind,
            text=event.text or event.full_text,
            ttft_ms=stage_gap_ms(event.trace, TTFT_STAGES),
            total_ms=stage_gap_ms(event.trace, LLM_STAGES),
            reason=event.reason,
        )
    return outcomes


def _builder_for(system_prompt: str | None) -> PromptBuilder:
    """Today's builder; a longer system prompt leaves the rest of the prompt less room."""
    if system_prompt is None:
        return PromptBuilder()
    extra = estimate_tokens(system_prompt) - estimate_tokens(SUGGESTION_SYSTEM_PROMPT)
    return PromptBuilder(max_prompt_tokens=MAX_PROMPT_TOKENS - max(0, extra))


def _with_system_prompt(prompt: Prompt, system_prompt: str) -> Prompt:
    messages = tuple(
        ChatMessage(role="system", content=system_prompt) if m.role == "system" else m
        for m in prompt.messages
    )
    return Prompt(messages=messages, max_tokens=prompt.max_tokens)


def _timing(outcome: Outcome) -> str:
    parts = []
    if outcome.ttft_ms is not None:
        parts.append(f"ttft {outcome.ttft_ms:.0f} ms")
    if outcome.total_ms is not None:
        parts.append(f"total {outcome.total_ms:.0f} ms")
    return f" ({', '.join(parts)})" if parts else ""


def _zip_longest(left: list[str], right: list[str]) -> list[tuple[str, str]]:
    length = max(len(left), len(right))
    return [
        (left[i] if i < len(left) else "", right[i] if i < len(right) else "")
        for i in range(length)
    ]


def _ms(started: float, at: float | None) -> float | None:
    return None if at is None else round((at - started) * 1000, 1)
