"""What the suggestion model is told: a bounded conversation context and the prompts built from it.

A `ConversationContext` holds one conversation's recent transcript (the last `window_s` seconds,
at most ~500 tokens), the rolling summary of everything before (~200 tokens) and the customer
profile with product notes (~300 tokens), all in bounded memory. A `PromptBuilder` renders it
into chat messages that stay under ~1,200 tokens, and renders the summarizer's prompt that folds
the transcript not yet summarized into the rolling summary.

Token counts are estimates (`estimate_tokens`), not a tokenizer's: no model files to download,
and a prompt budget only needs to be right to within a few percent.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from schemas.events import ConversationSummary, Speaker, TranscriptSegment

logger = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]
KeepEnd = Literal["head", "tail"]

# How transcript lines are labelled in prompts; the LLM simulator reads the last customer line.
SPEAKER_LABELS: Final[Mapping[Speaker, str]] = {"customer": "Customer", "rep": "Rep"}

MAX_PROMPT_TOKENS: Final = 1200
TRANSCRIPT_TOKENS: Final = 500
SUMMARY_TOKENS: Final = 200
PROFILE_TOKENS: Final = 300
# Transcript kept for the summarizer even after it leaves the window, should the summarizer lag.
SUMMARY_BACKLOG_TOKENS: Final = 1500
# One endless utterance must not crowd everything else out of the prompt.
MAX_UTTERANCE_TOKENS: Final = 300
SUMMARY_REPLY_TOKENS: Final = 260
# The chat format spends a few tokens per message on role and separators, and 3 priming the reply.
MESSAGE_OVERHEAD_TOKENS: Final = 4
REPLY_PRIMING_TOKENS: Final = 3
ELLIPSIS: Final = "…"
# `covers_until_ms` before any summary: earlier than any event time.
NOTHING_SUMMARIZED: Final = -1

_WORD: Final = re.compile(r"\S+")
_SPACES: Final = re.compile(r"\s+")

SUGGESTION_SYSTEM_PROMPT: Final = (
    "You help a sales and support rep during a live phone call. Write what the rep should say "
    "next to the customer: one to three short sentences in a natural spoken style, ready to be "
    "read aloud. Answer the customer's last words directly, and use the profile, product notes "
    "and summary when they help. No preamble, no lists, no quotation marks. Never invent "
    "prices, dates or commitments that the notes do not state."
)
SUMMARY_SYSTEM_PROMPT: Final = (
    "You keep a running summary of a live sales or support call for the rep's assistant. Merge "
    "the new transcript into the current summary. Keep what matters for the rep's next replies: "
    "who the customer is, what they need, their objections, numbers and dates mentioned, "
    "promises made and open questions. At most 120 words of plain prose, latest state last. "
    "No preamble."
)


class ProfileError(ValueError):
    """A customer profile is not a JSON object; the message says what it was instead."""


def estimate_tokens(text: str) -> int:
    """Roughly how many BPE tokens `text` costs, without a tokenizer.

    English averages ~4 characters and ~0.75 words per token (OpenAI's rule of thumb). Taking
    the larger of the two errs high on short-word or punctuation-heavy text, so a prompt
    estimated under budget is under it in practice.
    """
    if not text:
        return 0
    by_chars = math.ceil(len(text) / 4)
    by_words = math.ceil(len(text.split()) * 4 / 3)
    return max(by_chars, by_words)


def truncate_to_tokens(text: str, max_tokens: int, *, keep: KeepEnd) -> str:
    """`text` cut at a word boundary to at most `max_tokens`, the cut marked with an ellipsis.

    `keep="head"` keeps the beginning (profiles: most important fields first), `keep="tail"` the
    end (summaries and utterances: the latest words matter most).
    """
    if estimate_tokens(text) <= max_tokens:
        return text
    if max_tokens < 2:
        return ""
    spans = [match.span() for match in _WORD.finditer(text)]

    def cut(words: int) -> str:
        if keep == "head":
            return text[: spans[words - 1][1]] + " " + ELLIPSIS
        return ELLIPSIS + " " + text[spans[len(spans) - words][0] :]

    # Binary search for the most whole words that fit: the estimate grows with every word.
    low, high = 0, len(spans)
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(cut(middle)) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    if low > 0:
        return cut(low)
    # Not even one word fits (a giant unbroken string): cut characters instead.
    chars = (max_tokens - 1) * 4
    return text[:chars] + ELLIPSIS if keep == "head" else ELLIPSIS + text[-chars:]


@dataclass(frozen=True, slots=True)
class Utterance:
    """One transcript line: a speaker's words, stamped with when they were said (epoch ms)."""

    speaker: Speaker
    text: str
    at_ms: int
    tokens: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", estimate_tokens(self.line) + 1)  # + the newline

    @property
    def line(self) -> str:
        return f"{SPEAKER_LABELS[self.speaker]}: {self.text}"


def render_profile(profile: Mapping[str, Any]) -> str:
    """A profile object as `- key: value` lines; nested objects get dotted keys."""
    lines: list[str] = []

    def add(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, Mapping) and value and depth < 3:
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner, depth + 1)
            return
        if isinstance(value, str):
            shown = _SPACES.sub(" ", value).strip()
        elif isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
            shown = ", ".join(str(item) for item in value)
        else:
            shown = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if shown:
            lines.append(f"- {prefix}: {shown}")

    add("", profile, 0)
    return "\n".join(lines)


class ConversationContext:
    """One conversation's transcript window, rolling summary and profile, in bounded memory.

    Lines are kept while either the suggestion prompt needs them (said within `window_s` of the
    newest line, and among the newest `transcript_tokens`) or the summarizer does (said after
    the summary's `covers_until_ms`, and among the newest `summary_backlog_tokens`). A
    summarizer that falls that far behind loses the oldest lines, and its prompt says so.
    Consecutive lines of one speaker less than `merge_gap_s` apart are joined, so the
    customer's latest utterance is one line even when it arrived as several segments.
    Time is event time (`at_ms`), so replaying a conversation rebuilds the same context.
    """

    def __init__(
        self,
        conversation_id: str,
        *,
        window_s: float = 90.0,
        transcript_tokens: int = TRANSCRIPT_TOKENS,
        summary_tokens: int = SUMMARY_TOKENS,
        profile_tokens: int = PROFILE_TOKENS,
        summary_backlog_tokens: int = SUMMARY_BACKLOG_TOKENS,
        max_utterance_tokens: int = MAX_UTTERANCE_TOKENS,
        merge_gap_s: float = 3.0,
    ) -> None:
        self.conversation_id = conversation_id
        self.window_s = window_s
        self._window_ms = window_s * 1000.0
        self._transcript_tokens = transcript_tokens
        self._summary_tokens = summary_tokens
        self._profile_tokens = profile_tokens
        self._backlog_tokens = max(summary_backlog_tokens, transcript_tokens)
        self._max_utterance_tokens = max_utterance_tokens
        self._merge_gap_ms = merge_gap_s * 1000.0
        self._lines: deque[Utterance] = deque()
        self._line_tokens = 0
        self._summary = ""
        self._summary_covers_until_ms = NOTHING_SUMMARIZED
        self._summary_turns = 0
        self._profile = ""
        self._unsummarized_dropped = 0

    # --- input ----------------------------------------------------------------------------
    def add(self, speaker: Speaker, text: str, *, at_ms: int) -> None:
        """Record that `speaker` said `text` at `at_ms` (Unix epoch ms)."""
        text = _SPACES.sub(" ", text).strip()
        if not text:
            return
        last = self._lines[-1] if self._lines else None
        # Keep lines in time order even when segments arrive slightly out of order.
        at_ms = max(at_ms, last.at_ms) if last is not None else at_ms
        if (
            last is not None
            and last.speaker == speaker
            and at_ms - last.at_ms <= self._merge_gap_ms
        ):
            self._lines.pop()
            self._line_tokens -= last.tokens
            text = f"{last.text} {text}"
        text = truncate_to_tokens(text, self._max_utterance_tokens, keep="tail")
        line = Utterance(speaker=speaker, text=text, at_ms=at_ms)
        self._lines.append(line)
        self._line_tokens += line.tokens
        self._evict()

    def add_segment(self, segment: TranscriptSegment) -> None:
        """Record a final transcript segment; partial (non-final) recognitions are ignored."""
        if segment.final:
            self.add(segment.speaker, segment.text, at_ms=segment.event_time_ms)

    def set_summary(self, summary: str, *, covers_until_ms: int, turn_count: int = 0) -> None:
        """Adopt a rolling summary of everything said up to `covers_until_ms`."""
        if covers_until_ms < self._summary_covers_until_ms:
            logger.debug("ignoring a stale summary for %s", self.conversation_id)
            return
        self._summary = truncate_to_tokens(summary.strip(), self._summary_tokens, keep="tail")
        self._summary_covers_until_ms = covers_until_ms
        self._summary_turns = turn_count
        self._unsummarized_dropped = 0
        self._evict()

    def apply_summary(self, event: ConversationSummary) -> None:
        self.set_summary(
            event.summary, covers_until_ms=event.covers_until_ms, turn_count=event.turn_count
        )

    def set_profile(self, profile: Mapping[str, Any]) -> None:
        """Adopt the customer profile and product notes (a JSON-like object)."""
        self._profile = truncate_to_tokens(
            render_profile(profile), self._profile_tokens, keep="head"
        )

    def set_profile_json(self, profile_json: str) -> None:
        """Adopt a profile given as JSON object text; anything else raises `ProfileError`."""
        try:
            profile = json.loads(profile_json)
        except ValueError as exc:
            raise ProfileError(f"profile is not valid JSON: {exc}") from None
        if not isinstance(profile, dict):
            raise ProfileError(f"profile must be a JSON object, got {type(profile).__name__}")
        self.set_profile(profile)

    # --- views ----------------------------------------------------------------------------
    @property
    def summary(self) -> str:
        return self._summary

    @property
    def summary_covers_until_ms(self) -> int:
        return self._summary_covers_until_ms

    @property
    def summary_turns(self) -> int:
        return self._summary_turns

    @property
    def profile(self) -> str:
        return self._profile

    @property
    def last_at_ms(self) -> int | None:
        return self._lines[-1].at_ms if self._lines else None

    @property
    def transcript(self) -> tuple[Utterance, ...]:
        """The window: lines within `window_s` of the newest, newest `transcript_tokens` only."""
        if not self._lines:
            return ()
        since_ms = self._lines[-1].at_ms - self._window_ms
        kept: list[Utterance] = []
        tokens = 0
        for line in reversed(self._lines):
            if kept and (line.at_ms < since_ms or tokens + line.tokens > self._transcript_tokens):
                break
            kept.append(line)
            tokens += line.tokens
        kept.reverse()
        return tuple(kept)

    @property
    def unsummarized(self) -> tuple[Utterance, ...]:
        """Lines said after the summary's cut-off, oldest first."""
        covers = self._summary_covers_until_ms
        return tuple(line for line in self._lines if line.at_ms > covers)

    @property
    def unsummarized_dropped(self) -> int:
        """Lines lost before the summarizer saw them since the last summary."""
        return self._unsummarized_dropped

    def __len__(self) -> int:
        return len(self._lines)

    # --- memory bound ---------------------------------------------------------------------
    def _evict(self) -> None:
        """Drop the oldest lines that neither the window nor the summarizer still needs."""
        if not self._lines:
            return
        since_ms = self._lines[-1].at_ms - self._window_ms
        while len(self._lines) > 1:
            oldest = self._lines[0]
            # The deque is a time-ordered suffix of the conversation, so the oldest line is in a
            # budget exactly when everything retained fits in that budget.
            in_window = oldest.at_ms >= since_ms and self._line_tokens <= self._transcript_tokens
            unsummarized = oldest.at_ms > self._summary_covers_until_ms
            in_backlog = unsummarized and self._line_tokens <= self._backlog_tokens
            if in_window or in_backlog:
                return
            self._lines.popleft()
            self._line_tokens -= oldest.tokens
            if unsummarized:
                self._unsummarized_dropped += 1


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def as_openai(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Prompt:
    """Chat messages for one completion; `max_tokens` overrides the model's reply length."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None

    @property
    def estimated_tokens(self) -> int:
        return REPLY_PRIMING_TOKENS + sum(
            estimate_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS for message in self.messages
        )

    def as_openai(self) -> list[dict[str, str]]:
        return [message.as_openai() for message in self.messages]


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    """The summarizer's prompt, and what to pass to `set_summary` once it has answered."""

    prompt: Prompt
    covers_until_ms: int
    utterances: int


class PromptBuilder:
    """Renders suggestion prompts under `max_prompt_tokens`, and the summarizer's prompts.

    Over budget, a suggestion prompt loses the oldest transcript lines first, then the oldest
    part of the summary, then the end of the profile; the customer's latest utterance is never
    dropped (only, as a last resort, shortened to its last words).
    """

    def __init__(
        self,
        *,
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        summary_reply_tokens: int = SUMMARY_REPLY_TOKENS,
    ) -> None:
        self._max_prompt_tokens = max_prompt_tokens
        self._summary_reply_tokens = summary_reply_tokens

    def suggestion(self, context: ConversationContext) -> Prompt:
        """The prompt asking what the rep should say next to the customer's latest words."""
        lines = list(context.transcript)
        pinned = _last_customer_line(lines)
        summary = context.summary
        profile = context.profile
        prompt = self._render_suggestion(lines, summary, profile)
        while (excess := prompt.estimated_tokens - self._max_prompt_tokens) > 0:
            droppable = [line for line in lines if line is not pinned]
            if droppable:
                # Drop enough of the oldest lines to cover the excess, then re-measure.
                while droppable and excess > 0:
                    oldest = droppable.pop(0)
                    lines.remove(oldest)
                    excess -= oldest.tokens
            elif summary:
                summary = truncate_to_tokens(
                    summary, estimate_tokens(summary) - excess, keep="tail"
                )
            elif profile:
                profile = truncate_to_tokens(
                    profile, estimate_tokens(profile) - excess, keep="head"
                )
            elif pinned is not None and len(pinned.text) > 1:
                shorter = truncate_to_tokens(
                    pinned.text, estimate_tokens(pinned.text) - excess, keep="tail"
                )
                if not shorter or shorter == pinned.text:
                    break
                pinned = Utterance(speaker=pinned.speaker, text=shorter, at_ms=pinned.at_ms)
                lines = [pinned]
            else:
                break
            prompt = self._render_suggestion(lines, summary, profile)
        if prompt.estimated_tokens > self._max_prompt_tokens:
            logger.warning(
                "suggestion prompt for %s is %d tokens, over the %d budget",
                context.conversation_id,
                prompt.estimated_tokens,
                self._max_prompt_tokens,
            )
        return prompt

    def summary(self, context: ConversationContext) -> SummaryRequest | None:
        """The prompt folding the not-yet-summarized transcript into the summary, if any."""
        lines = context.unsummarized
        if not lines:
            return None
        sections = [
            "Current summary:\n" + (context.summary or "(none yet)"),
            "New transcript:\n" + "\n".join(line.line for line in lines),
        ]
        if context.unsummarized_dropped:
            sections.append(
                f"({context.unsummarized_dropped} earlier lines were lost before they could be "
                "summarized.)"
            )
        sections.append("Write the updated summary.")
        prompt = Prompt(
            messages=(
                ChatMessage(role="system", content=SUMMARY_SYSTEM_PROMPT),
                ChatMessage(role="user", content="\n\n".join(sections)),
            ),
            max_tokens=self._summary_reply_tokens,
        )
        return SummaryRequest(prompt=prompt, covers_until_ms=lines[-1].at_ms, utterances=len(lines))

    @staticmethod
    def _render_suggestion(lines: Sequence[Utterance], summary: str, profile: str) -> Prompt:
        sections: list[str] = []
        if profile:
            sections.append("Customer profile and product notes:\n" + profile)
        if summary:
            sections.append("Summary of the call so far:\n" + summary)
        if lines:
            sections.append("Recent transcript, oldest first:\n" + "\n".join(x.line for x in lines))
        sections.append("Suggest the rep's reply to the customer's last words.")
        return Prompt(
            messages=(
                ChatMessage(role="system", content=SUGGESTION_SYSTEM_PROMPT),
                ChatMessage(role="user", content="\n\n".join(sections)),
            )
        )


def _last_customer_line(lines: Sequence[Utterance]) -> Utterance | None:
    for line in reversed(lines):
        if line.speaker == "customer":
            return line
    return None
