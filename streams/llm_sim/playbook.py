"""The LLM simulator's script: objections and intents a customer voices, and what a rep answers.

The simulator answers the last customer utterance in a prompt with one of a play's answers, so
suggestions look plausible on screen and in benchmarks without any model. A play is matched
by keyword patterns; the play with the most matching patterns wins, earlier plays break ties.
"""

from __future__ import annotations

import functools
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from streams.prompt import SPEAKER_LABELS

logger = logging.getLogger(__name__)

# Word-piece fragments: a word with its leading space, a run of punctuation, or whitespace.
_PIECE: Final = re.compile(r" ?[A-Za-z0-9']+| ?[^A-Za-z0-9'\s]+|\s+")
# Long words stream in several pieces, as real BPE tokens do.
MAX_PIECE_CHARS: Final = 9
_CUSTOMER_LINE: Final = re.compile(
    rf"^\s*{re.escape(SPEAKER_LABELS['customer'])}\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE
)
# An utterance this long is matched by its last words: that is where the question is.
MAX_UTTERANCE_CHARS: Final = 600


@dataclass(frozen=True, slots=True)
class Play:
    """One objection or intent: how to recognise it and what a good rep says."""

    name: str
    patterns: tuple[re.Pattern[str], ...]
    answers: tuple[str, ...]

    def score(self, utterance: str) -> int:
        return sum(1 for pattern in self.patterns if pattern.search(utterance))


def _play(name: str, patterns: Sequence[str], answers: Sequence[str]) -> Play:
    return Play(
        name=name,
        patterns=tuple(re.compile(rf"\b(?:{p})", re.IGNORECASE) for p in patterns),
        answers=tuple(answers),
    )


PLAYBOOK: Final[tuple[Play, ...]] = (
    _play(
        "billing_error",
        [
            r"charged (me )?twice",
            r"double[- ]charged",
            r"overcharg",
            r"wrong (amount|charge|invoice)",
            r"invoice",
            r"billing",
            r"(extra|unexpected) charge",
        ],
        [
            "I'm sorry about that, let me pull up your invoice right now. If there's a duplicate "
            "charge I'll reverse it today and send you a confirmation email.",
            "Thanks for flagging it. I can see the billing history from here, so let's go through "
            "the charge together and I'll correct anything that's wrong before we hang up.",
        ],
    ),
    _play(
        "refund",
        [r"refund", r"money back", r"reimburs", r"credit (back|my|our)"],
        [
            "I understand. Let me check what you're eligible for; if it falls within the refund "
            "window I can process it today and you'll see it in five to seven business days.",
            "That's fair to ask. I'll review the account now, and if a full refund isn't possible "
            "I'll see what credit I can apply so you're not out of pocket.",
        ],
    ),
    _play(
        "outage",
        [
            r"(is|it's|was|went|been|keeps going) down",
            r"outage",
            r"(not|nothing is|isn't|stopped) working",
            r"(can't|cannot|unable to) log ?in",
            r"broken",
            r"crash",
            r"error message",
        ],
        [
            "I'm sorry, that's frustrating. Let me check our status page and your account logs "
            "right now so we can see whether it's on our side.",
            "Thanks for your patience. Can you tell me what you see on screen and roughly when it "
            "started? I'll open a priority ticket with engineering while we talk.",
        ],
    ),
    _play(
        "cancellation",
        [
            r"cancel",
            r"terminat",
            r"close (my|our|the) account",
            r"stop (the|my|our) subscription",
            r"don't want to renew",
        ],
        [
            "I'm sorry to hear that. Before I process it, may I ask what's not working for you? "
            "If it's something we can fix, I'd rather fix it.",
            "I can help with that. Would it be useful to pause the account instead, so you keep "
            "your data and settings if you come back?",
        ],
    ),
    _play(
        "price",
        [
            r"expensive",
            r"too much",
            r"pric(e|ey|ing)",
            r"cost",
            r"budget",
            r"afford",
            r"out of (our|my) range",
        ],
        [
            "I hear you on price. Most teams your size see the cost pay back within the first "
            "quarter through time saved; would it help if I walked you through those numbers?",
            "That's a fair concern. Let's look at which features you'd actually use, because "
            "there may be a plan that fits your budget better.",
            "Totally understand. If we compare it to what the current process costs you in hours "
            "each week, I think the numbers look quite different.",
        ],
    ),
    _play(
        "discount",
        [r"discount", r"better (deal|price|rate)", r"cheaper", r"lower the price", r"promo"],
        [
            "I can't promise a discount on the spot, but with an annual commitment I can usually "
            "bring the price down. Would that work for you?",
            "Let me see what I can do. If you're able to sign this month, I can ask my manager "
            "about our current promotion.",
        ],
    ),
    _play(
        "competitor",
        [
            r"competitor",
            r"salesforce",
            r"hubspot",
            r"zendesk",
            r"compared to",
            r"(another|other) (vendor|provider|tool|company)",
            r"already (use|using|have)",
            r"switch(ing)? from",
        ],
        [
            "That's a solid tool. Where we usually win is setup time and support; most customers "
            "who switched were fully live in under two weeks.",
            "Good to know what you're comparing. What do you like most about them, and what's "
            "missing? That'll tell us quickly whether we're a better fit.",
        ],
    ),
    _play(
        "timing",
        [
            r"not (a good|the right) time",
            r"next (quarter|year|month)",
            r"not right now",
            r"too busy",
            r"circle back",
            r"revisit",
            r"maybe later",
        ],
        [
            "Completely understand. What would need to happen between now and then for this to be "
            "a priority? I can set things up so you're ready when it is.",
            "Makes sense. Would it help to start with a small pilot now, so you have results in "
            "hand when the budget conversation comes up?",
        ],
    ),
    _play(
        "stall",
        [
            r"think about it",
            r"get back to you",
            r"send me (some )?(info|information|details)",
            r"not sure",
            r"need (some )?time",
        ],
        [
            "Of course. What's the main thing you'd want to think through? Maybe I can answer it "
            "now and save you some time.",
            "Sure, I'll send a short summary today. Could we put fifteen minutes on the calendar "
            "later this week to go over any questions?",
        ],
    ),
    _play(
        "authority",
        [
            r"my (boss|manager)",
            r"(talk|speak|check) (to|with) (my|the) (team|boss|manager|cfo|ceo)",
            r"approv",
            r"sign[- ]off",
            r"decision",
            r"procurement",
        ],
        [
            "That makes sense. Who else should be part of this conversation? I'm happy to join a "
            "call with them and answer their questions directly.",
            "Great, I can put together a one-page summary with pricing and the business case so "
            "it's easy to share with them.",
        ],
    ),
    _play(
        "contract",
        [
            r"contract",
            r"lock(ed)? (me |us )?in",
            r"commitment",
            r"annual",
            r"terms",
            r"auto[- ]?renew",
        ],
        [
            "Good question. Our standard agreement is annual, but we also offer month-to-month so "
            "you can start without a long commitment.",
            "I can send you the contract terms today. The main points are the term length, the "
            "renewal notice period and the service-level commitments.",
        ],
    ),
    _play(
        "security",
        [
            r"secur",
            r"soc ?2",
            r"gdpr",
            r"hipaa",
            r"complian",
            r"data (privacy|protection|residency)",
            r"encrypt",
            r"iso ?27001",
        ],
        [
            "Security is a priority for us. We're SOC 2 Type II audited, data is encrypted in "
            "transit and at rest, and I can send the full security package today.",
            "Happy to go into that. Would it help to set up a call with our security team so they "
            "can walk your IT folks through the details?",
        ],
    ),
    _play(
        "integration",
        [
            r"integrat",
            r"\bapi\b",
            r"connect (to|with)",
            r"work with our",
            r"plug-?in",
            r"single sign[- ]on|sso",
            r"webhook",
        ],
        [
            "Yes, we integrate with most of the common tools, and there's a full API for "
            "anything custom. Which systems would you need it to connect to?",
            "Good question. Let me check that integration for you; if it's not built in, our "
            "API and webhooks usually cover it in an afternoon.",
        ],
    ),
    _play(
        "onboarding",
        [
            r"set ?up",
            r"onboard",
            r"get(ting)? started",
            r"training",
            r"how long (does|will) it take",
            r"implement",
            r"learning curve",
        ],
        [
            "Onboarding is included. You get a dedicated specialist, and most teams are up and "
            "running within a week.",
            "We'll walk your team through it step by step. Typically it's a kickoff call, a short "
            "training session and then we check in after the first week.",
        ],
    ),
    _play(
        "migration",
        [r"migrat", r"import (our|my|the)", r"move (our|my|all) data", r"export", r"transfer"],
        [
            "We handle the migration for you. Our team imports your existing data and checks it "
            "with you before you switch over.",
            "Moving your data over is straightforward; we support imports from most tools and "
            "you can export everything at any time.",
        ],
    ),
    _play(
        "feature_gap",
        [
            r"missing",
            r"doesn't have",
            r"does it (support|have|do)",
            r"feature",
            r"roadmap",
            r"can it",
        ],
        [
            "Good question. Can you tell me a bit about how you'd use that? There may be a way to "
            "do it today, and if not I'll share it with our product team.",
            "Let me check the roadmap for you. I'll confirm what's available now and what's "
            "coming, so you can plan around it.",
        ],
    ),
    _play(
        "performance",
        [r"slow", r"lag", r"takes forever", r"performance", r"loading"],
        [
            "Sorry about that. Can you tell me which pages feel slow and when? I'll check your "
            "account's performance metrics right now.",
            "Thanks for mentioning it. Let me look at what's happening on your account, and I'll "
            "get our engineers involved if it's on our side.",
        ],
    ),
    _play(
        "support_quality",
        [
            r"nobody (answered|responded|called)",
            r"no one got back",
            r"on hold",
            r"waited",
            r"support (is|was|has been)",
            r"ticket",
        ],
        [
            "I apologise, that's not the experience we want you to have. I'll take ownership of "
            "this personally and make sure it's resolved today.",
            "I'm sorry you had to wait. Let me pull up the ticket and give you my direct line so "
            "you won't be passed around again.",
        ],
    ),
    _play(
        "upgrade",
        [r"upgrade", r"more (seats|users|licen[cs]es)", r"add (users|seats)", r"higher tier"],
        [
            "Absolutely, I can set that up now. The change is prorated, so you only pay for the "
            "rest of this billing period.",
            "Great to hear you're growing. Let me show you what the next plan adds so you can "
            "decide whether it's worth it for your team.",
        ],
    ),
    _play(
        "trial",
        [r"trial", r"\bdemo\b", r"try it", r"pilot", r"test it"],
        [
            "Yes, you can start a fourteen-day trial today with full features. I'll check in "
            "halfway through to make sure you're getting value.",
            "A short pilot is a great idea. Let's pick one team and a clear success metric so the "
            "results speak for themselves.",
        ],
    ),
    _play(
        "interest",
        [
            r"sounds (good|great)",
            r"interested",
            r"let's do it",
            r"ready to",
            r"how do (we|i) (start|proceed|sign up)",
            r"next steps?",
        ],
        [
            "Wonderful. I'll send the agreement over today, and once it's signed we'll schedule "
            "your kickoff call.",
            "Great. The next step is a quick setup call with our onboarding team; does later this "
            "week work for you?",
        ],
    ),
)

FALLBACK_ANSWERS: Final[tuple[str, ...]] = (
    "That's a great point. Could you tell me a little more about what you have in mind, so I "
    "can give you the most useful answer?",
    "I understand. Let me make sure I've got that right, and then we can figure out the best "
    "next step together.",
    "Thanks for sharing that. What would a good outcome look like for you here?",
)
FALLBACK_PLAY: Final = Play(name="fallback", patterns=(), answers=FALLBACK_ANSWERS)


def match_play(utterance: str) -> Play:
    """The play whose patterns best match `utterance`, or the generic fallback."""
    utterance = utterance[-MAX_UTTERANCE_CHARS:]
    best, best_score = FALLBACK_PLAY, 0
    for play in PLAYBOOK:
        score = play.score(utterance)
        if score > best_score:
            best, best_score = play, score
    return best


def compose_reply(utterance: str, *, variant: int | None = None) -> str:
    """A rep's reply to `utterance`: the matched play's answer number `variant` (wrapping).

    Without a variant the answer is chosen by a stable hash of the utterance, so the same
    prompt gets the same reply across runs and processes.
    """
    play = match_play(utterance)
    index = zlib.crc32(utterance.encode()) if variant is None else variant
    return play.answers[index % len(play.answers)]


@functools.lru_cache(maxsize=1024)
def reply_fragments(utterance: str, variant: int | None = None) -> tuple[str, ...]:
    """`compose_reply` split by `tokenize`; cached, as benchmarks replay the same utterances."""
    return tuple(tokenize(compose_reply(utterance, variant=variant)))


def last_customer_utterance(messages: Sequence[Mapping[str, str]]) -> str:
    """The customer's last words in chat messages: the last `Customer:` line of the last user
    message (the transcript our prompt builder renders), else that message's whole text; at
    most the last `MAX_UTTERANCE_CHARS` of it."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content", "")
        lines = _CUSTOMER_LINE.findall(content)
        utterance = str(lines[-1]) if lines else content.strip()
        return utterance[-MAX_UTTERANCE_CHARS:]
    return ""


def tokenize(text: str) -> list[str]:
    """`text` split into word-piece fragments as an LLM would stream them; they join back to
    `text` exactly."""
    pieces: list[str] = []
    for match in _PIECE.finditer(text):
        piece = match.group()
        while len(piece) > MAX_PIECE_CHARS:
            # Split long words near the middle of what is left, like BPE merges stopping short.
            cut = min(MAX_PIECE_CHARS, max(3, (len(piece) + 1) // 2))
            pieces.append(piece[:cut])
            piece = piece[cut:]
        pieces.append(piece)
    return pieces
