"""The benchmark's open-loop script: every conversation's lines, who says them and when.

A conversation alternates as a call does: the customer speaks a sentence (interim transcripts
while speaking, the final one when done), the rep takes a moment to read the suggestion and
answers, there is a short pause, and the customer speaks again. Every time is fixed before the
run starts (open loop): a slow system shows up as latency and lost turns, never as fewer
requests. The same seed gives the same script.

`unpunctuated` sends a share of the customer's lines the way a recogniser without punctuation
does: no sentence end, so each waits for the turn pause, and a line with a comma as two finals
a short pause apart (the first of which speculation may start on, wrongly).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

logger = logging.getLogger(__name__)

Speaker = Literal["customer", "rep"]

_SENTENCE_END: Final = re.compile(r"[.?!]+$")

# What customers say on sales and support calls; each ends a sentence, so it makes a turn.
CUSTOMER_LINES: Final = (
    "Hi, I'm calling about my invoice from last month.",
    "It looks like I was charged twice for the same order.",
    "Can you tell me when my package will arrive?",
    "We are thinking about upgrading to the premium plan, but the price is a concern.",
    "Our team is growing quickly, and most of our people work remotely.",
    "I would like to cancel my subscription.",
    "Do you offer a discount if we sign a longer contract?",
    "Could you send me a quote by Friday?",
    "Honestly, this is more expensive than what we pay today.",
    "We already use another tool for this, so why would we switch?",
    "Is your platform SOC 2 compliant?",
    "Can it integrate with our Salesforce instance?",
    "The dashboard has been down all morning and my team cannot work.",
    "I need to talk to my manager before we decide.",
    "How long does the onboarding usually take for a team of fifty?",
    "What happens to our data if we cancel after the first year?",
    "Do you support single sign-on with Okta?",
    "The export keeps failing with a timeout error.",
    "Is there a limit on how many users we can add?",
    "Can we try it for a month before we commit?",
    "Who would be our point of contact after the sale?",
    "We had a bad experience with your support team last quarter.",
    "How much does the premium plan cost per seat?",
    "Does the price include training for our staff?",
    "I was promised a callback yesterday and nobody called.",
    "Can you walk me through how the billing works?",
)

# What the rep says back, read from the screen in their own words.
REP_LINES: Final = (
    "I understand, let me look into that for you right now.",
    "Thanks for your patience, I can see your account here.",
    "That's a fair question, and I'm glad you asked it.",
    "Let me check the details so I give you the right answer.",
    "I can definitely help with that today.",
    "Good point, many of our customers asked the same thing.",
    "I'm sorry about that, it should not have happened.",
    "Let me pull up the plan options so we can compare them together.",
)


@dataclass(frozen=True, kw_only=True)
class Pacing:
    """How people talk on a call; ranges are (low, high) seconds drawn uniformly."""

    words_per_s: float = 2.6  # ~155 words per minute, conversational speech
    partial_every_s: float = 0.7  # how often an ASR-style interim transcript updates
    reply_delay_s: tuple[float, float] = (0.8, 2.0)  # the rep reads the suggestion first
    rep_speaks_s: tuple[float, float] = (3.0, 7.0)
    pause_s: tuple[float, float] = (0.5, 1.5)  # before the customer speaks again
    # At a comma in an unpunctuated line: the customer pauses, and the recogniser's first
    # interim transcript comes soon after speech resumes, well inside the 0.6 s turn pause
    # (0.25-0.45 s after the first phrase's final): one turn per line, even under load.
    phrase_pause_s: tuple[float, float] = (0.1, 0.3)
    resumed_partial_s: float = 0.15


@dataclass(frozen=True, kw_only=True)
class Line:
    """One utterance: spoken from `start_s` to `end_s` after the run's start."""

    speaker: Speaker
    text: str
    start_s: float
    end_s: float
    # Interim transcripts while speaking: (seconds after the run's start, words so far).
    partials: tuple[tuple[float, str], ...] = ()
    # The turn this customer line makes ("<conversation>:<n>"); None for the rep.
    turn_key: str | None = None
    # Final transcripts (seconds after the run's start, text) when not just `text` at `end_s`:
    # an unpunctuated line, maybe in two phrases; `text` is then what they add up to.
    finals: tuple[tuple[float, str], ...] = ()

    @property
    def final_chunks(self) -> tuple[tuple[float, str], ...]:
        """Every final transcript of the line, in order; the last one ends it."""
        return self.finals or ((self.end_s, self.text),)


@dataclass(frozen=True, kw_only=True)
class ConversationScript:
    index: int
    lines: tuple[Line, ...]

    @property
    def turns(self) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if line.turn_key is not None)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """The whole run: every conversation's script, all within `duration_s`."""

    conversations: tuple[ConversationScript, ...]
    duration_s: float
    seed: int

    @property
    def turns(self) -> int:
        return sum(len(c.turns) for c in self.conversations)

    @property
    def planned_turns_per_s(self) -> float:
        return self.turns / self.duration_s if self.duration_s > 0 else 0.0


SpeechSeconds = Callable[[str], float]


def build_schedule(
    *,
    sessions: int,
    duration_s: float,
    seed: int = 0,
    pacing: Pacing | None = None,
    customer_lines: Sequence[str] = CUSTOMER_LINES,
    speech_s: SpeechSeconds | None = None,
    unpunctuated: float = 0.0,
) -> Schedule:
    """`sessions` conversations whose customer turns all end within `duration_s`.

    `speech_s(text)` is how long the customer takes to say `text` (audio mode passes the
    length of the synthesized speech); by default words at `pacing.words_per_s`.
    `unpunctuated` (0-1) is the share of customer lines sent without punctuation (module
    docstring); they are drawn from a random stream of their own, so the rest of the script
    is the one the seed gives without them.
    """
    if sessions < 1:
        raise ValueError(f"sessions must be at least 1, got {sessions}")
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s} s")
    if not customer_lines:
        raise ValueError("customer_lines must not be empty")
    if not 0.0 <= unpunctuated <= 1.0:
        raise ValueError(f"unpunctuated must be a share from 0 to 1, got {unpunctuated}")
    if unpunctuated and speech_s is not None:
        raise ValueError("unpunctuated lines are typed transcripts: not for speech")
    pacing = pacing or Pacing()
    rng = random.Random(seed)
    unpunctuated_rng = random.Random(f"{seed}:unpunctuated")

    def spoken(text: str) -> float:
        return len(text.split()) / pacing.words_per_s

    customer_s = speech_s or spoken
    # One customer-rep exchange takes about this long; conversations start spread across one,
    # so turns arrive at a steady rate rather than all together.
    mean_line = sum(customer_s(t) for t in customer_lines) / len(customer_lines)
    cycle_s = mean_line + _mid(pacing.reply_delay_s) + _mid(pacing.rep_speaks_s)
    cycle_s += _mid(pacing.pause_s)
    spread_s = min(cycle_s, duration_s / 2)
    conversations = []
    for index in range(sessions):
        lines: list[Line] = []
        now = rng.uniform(0.0, spread_s)
        turn = 0
        while True:
            text = rng.choice(customer_lines)
            if unpunctuated and unpunctuated_rng.random() < unpunctuated:
                line = _unpunctuated(text, now, pacing, spoken, rng=unpunctuated_rng)
            else:
                end = now + customer_s(text)
                partials = _partials(text, now, end, every_s=pacing.partial_every_s)
                line = Line(
                    speaker="customer", text=text, start_s=now, end_s=end, partials=partials
                )
            if line.end_s > duration_s:
                break
            lines.append(replace(line, turn_key=f"{index}:{turn}"))
            end = line.end_s
            turn += 1
            rep_start = end + rng.uniform(*pacing.reply_delay_s)
            rep_end = rep_start + rng.uniform(*pacing.rep_speaks_s)
            if rep_end <= duration_s:
                rep_text = rng.choice(REP_LINES)
                lines.append(Line(speaker="rep", text=rep_text, start_s=rep_start, end_s=rep_end))
            now = rep_end + rng.uniform(*pacing.pause_s)
        conversations.append(ConversationScript(index=index, lines=tuple(lines)))
    return Schedule(conversations=tuple(conversations), duration_s=duration_s, seed=seed)


def _unpunctuated(
    text: str, start_s: float, pacing: Pacing, spoken: SpeechSeconds, *, rng: random.Random
) -> Line:
    """`text` as a recogniser without punctuation sends it: no sentence end, and split at its
    first comma into two finals a short pause apart."""
    head, comma, tail = text.partition(", ")
    phrases = [head, tail] if comma else [text]
    phrases[-1] = _SENTENCE_END.sub("", phrases[-1])
    partials: list[tuple[float, str]] = []
    finals: list[tuple[float, str]] = []
    at = start_s
    for n, phrase in enumerate(phrases):
        if n:
            at += rng.uniform(*pacing.phrase_pause_s)
            partials.append((at + pacing.resumed_partial_s, phrase.split()[0]))
        end = at + spoken(phrase)
        partials += _partials(phrase, at, end, every_s=pacing.partial_every_s)
        finals.append((end, phrase))
        at = end
    return Line(
        speaker="customer",
        text=" ".join(phrases),
        start_s=start_s,
        end_s=at,
        partials=tuple(partials),
        finals=tuple(finals),
    )


def _partials(
    text: str, start_s: float, end_s: float, *, every_s: float
) -> tuple[tuple[float, str], ...]:
    """Interim transcripts: the words said so far, every `every_s` while the line is spoken."""
    words = text.split()
    out = []
    at = start_s + every_s
    while at < end_s - every_s / 2:
        said = max(1, round(len(words) * (at - start_s) / (end_s - start_s)))
        out.append((at, " ".join(words[:said])))
        at += every_s
    return tuple(out)


def _mid(bounds: tuple[float, float]) -> float:
    return (bounds[0] + bounds[1]) / 2
