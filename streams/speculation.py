"""Speculative suggestions: the LLM starts on customer words still waiting to become a turn.

A typed customer chunk that does not end a sentence becomes a turn only after `turn_pause_ms`
(600 ms) without new customer speech. A `Speculator` starts the LLM on it after a shorter pause
(`pause_ms`, 200 ms) and holds what streams back: nothing reaches the client until a turn
claims the speculation. The turn's suggestion then releases the held text at once as its first
delta and streams the rest as it comes; a speculation no turn claims is cancelled, which closes
its HTTP stream, and nobody ever sees it.

The rules (docs/protocol.md, "Speculative suggestions"):

- A speculation is not a turn. It publishes nothing, is in no table, has no outcome of its own;
  a worker that dies or loses the partition simply forgets it. The turn that claims it keeps its
  id and gets exactly one outcome, from the suggester, as any other turn.
- It matches when the prompt the turn is answered from equals the speculation's prompt, up to
  case, punctuation and spacing (`prompt_key`): the same customer words and the same context.
  New customer words (a partial with words, or a final that changes the prompt) cancel it at
  once; anything else that changed the prompt (a rep line, a new summary) is caught when the
  turn claims it.
- It never costs a turn its LLM slot: it takes a slot only when one is free and no turn waits,
  and gives it up the moment a turn finds every slot busy (`AdmissionGate.spare_slot`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Final, Literal

from schemas.events import TranscriptSegment, Turn, now_ms
from streams.admission import AdmissionGate, LentSlot
from streams.coalescer import turn_id_for
from streams.llm import LlmError
from streams.prompt import Prompt

logger = logging.getLogger(__name__)

# How each speculation ended: claimed by its turn, or why not.
SpeculationOutcome = Literal[
    "confirmed",  # a turn with the same prompt claimed it: it is that turn's suggestion
    "mismatch",  # the turn's prompt differed (a rep line, a summary, other words)
    "speech",  # the customer went on speaking before the turn was made
    "expired",  # no turn claimed it in time
    "preempted",  # a turn needed its LLM slot
    "no_slot",  # no slot was free: it never started
    "failed",  # the LLM failed it before any turn claimed it
    "ended",  # the conversation ended
    "lost",  # the worker stopped or lost the conversation's partition
]
_State = Literal["streaming", "complete", "failed", "cancelled"]

StreamPrompt = Callable[[Prompt, str], AsyncIterator[str]]
PromptFor = Callable[[str], Prompt]
WaitingSegments = Callable[[str], "tuple[str, ...] | None"]
OnEnd = Callable[[SpeculationOutcome], None]

DEFAULT_PAUSE_MS: Final = 200.0
# A turn claims its speculation within the turn pause and a Kafka round trip; far beyond that,
# nothing will, and the stream is only costing the LLM.
UNCLAIMED_S: Final = 5.0

_APOSTROPHES: Final = re.compile(r"['\u2019]")
_NOT_WORDS: Final = re.compile(r"[\W_]+")


def prompt_key(prompt: Prompt) -> str:
    """What must match for a speculation to answer a turn: the prompt's words in order, case,
    punctuation and spacing aside ("i was charged twice" = "I was charged twice.")."""
    return prompt_words("\n".join(f"{m.role}: {m.content}" for m in prompt.messages))


class Speculation:
    """One speculative LLM stream, held back until a turn claims it.

    `adopt` hands the stream to the turn that claimed it: what is held comes out at once as one
    fragment, the rest as it streams. Errors the LLM raises after that are the turn's.
    """

    def __init__(
        self,
        *,
        conversation_id: str,
        request_id: str,
        prompt: Prompt,
        key: str,
        stream: StreamPrompt,
        on_end: Callable[[Speculation, SpeculationOutcome], None],
    ) -> None:
        self.conversation_id = conversation_id
        self.request_id = request_id
        self.key = key
        self.requested_ms = 0.0
        self.first_token_ms: float | None = None
        self.outcome: SpeculationOutcome | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self._prompt = prompt
        self._slot: LentSlot | None = None
        self._stream = stream
        self._on_end = on_end
        self._state: _State = "streaming"
        self._fragments: list[str] = []
        self._arrived = asyncio.Event()
        self._error: LlmError | None = None
        self._task: asyncio.Task[None] | None = None

    def begin(self, gate: AdmissionGate) -> bool:
        """Ask the LLM, if the gate lends a slot; False (and nothing asked) if it has none."""
        slot = gate.lend(on_needed=lambda: self.drop("preempted"))
        if slot is None:
            return False
        self._slot = slot
        self.requested_ms = now_ms()
        self._task = asyncio.get_running_loop().create_task(
            self._read(), name=f"speculate-{self.conversation_id}"
        )
        # A task cancelled before it ever ran skips its own `finally`: release here instead.
        self._task.add_done_callback(lambda _: self._closed(slot))
        return True

    @property
    def held(self) -> str:
        """The text streamed so far (held back from the client until a turn claims it)."""
        return "".join(self._fragments)

    def confirm(self) -> None:
        """A turn claimed it: its slot is that turn's now, and it is no longer speculative."""
        if self._slot is not None:
            self._slot.keep()
        self._end("confirmed")

    def drop(self, outcome: SpeculationOutcome) -> None:
        """Cancel it (closing its HTTP stream) unless a turn has claimed it."""
        if self.outcome is None:
            self.close()
            self._end(outcome)

    def close(self) -> None:
        """Stop reading the LLM (the suggestion that adopted it is over, or it was dropped)."""
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def adopt(self, turn: Turn) -> AsyncIterator[str]:
        """The stream as `turn`'s: the held text at once, then the rest as it comes.

        Stamps the turn with when the LLM was really asked and first answered (before the
        turn existed: its `suggest_in->llm_request` gap is negative).
        """
        turn.trace["llm_request"] = self.requested_ms
        if self.first_token_ms is not None:
            turn.trace["llm_first_token"] = self.first_token_ms
        sent = 0
        while True:
            if sent < len(self._fragments):
                # Everything that arrived since the last one goes as one fragment.
                text, sent = "".join(self._fragments[sent:]), len(self._fragments)
                yield text
            elif self._state == "streaming":
                self._arrived.clear()
                await self._arrived.wait()
            else:
                break
        if self._error is not None:
            raise self._error
        if self._state != "complete":
            raise RuntimeError(f"the speculative stream of {self.conversation_id} {self._state}")

    async def _read(self) -> None:
        try:
            async for fragment in self._stream(self._prompt, self.request_id):
                if not fragment:
                    continue
                if self.first_token_ms is None:
                    self.first_token_ms = now_ms()
                self._fragments.append(fragment)
                self._arrived.set()
            self._state = "complete"
        except LlmError as exc:
            self._state, self._error = "failed", exc
            logger.info("speculation for %s failed: %s", self.conversation_id, exc)
            self._end("failed")
        except Exception:
            self._state = "failed"
            logger.exception("speculation for %s failed", self.conversation_id)
            self._end("failed")

    def _closed(self, slot: LentSlot) -> None:
        """The LLM stream is over, however it ended: its slot goes back, a reader wakes."""
        if self._state == "streaming":
            self._state = "cancelled"
        slot.release()
        self._arrived.set()

    def _end(self, outcome: SpeculationOutcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._on_end(self, outcome)


class Speculator:
    """Starts speculations on customer words waiting for the turn pause; hands them to turns.

    The worker tells it every transcript segment (`heard`, after the coalescer took it) and
    every turn about to be answered asks it (`claim`). At most one speculation per conversation;
    its request id is the id the waiting words' turn will have, so the LLM endpoint's
    timings for that request are the turn's. Nothing here is durable: see the module docstring.
    """

    def __init__(
        self,
        *,
        gate: AdmissionGate,
        prompt_for: PromptFor,
        stream: StreamPrompt,
        waiting: WaitingSegments,
        pause_ms: float = DEFAULT_PAUSE_MS,
        unclaimed_s: float = UNCLAIMED_S,
        on_end: OnEnd | None = None,
    ) -> None:
        self._gate = gate
        self._prompt_for = prompt_for
        self._stream = stream
        self._waiting = waiting
        self._pause_s = pause_ms / 1000.0
        self._unclaimed_s = unclaimed_s
        self._on_end = on_end
        self._running: dict[str, Speculation] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        """Speculations undecided now."""
        return len(self._running)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._running

    def heard(self, segment: TranscriptSegment) -> None:
        """A transcript segment the coalescer has taken (its text is in the context)."""
        cid = segment.conversation_id
        if segment.end_of_conversation:
            self.drop(cid, outcome="ended")
            return
        if segment.speaker != "customer" or not prompt_words(segment.text):
            return
        if not segment.final:
            self.drop(cid, outcome="speech")  # more words are coming: the turn will differ
            return
        current = self._running.get(cid)
        if current is not None and current.key != prompt_key(self._prompt_for(cid)):
            self.drop(cid, outcome="speech")
        self._cancel_timer(cid)
        waiting = self._waiting(cid)
        if waiting is not None:
            loop = asyncio.get_running_loop()
            self._timers[cid] = loop.call_later(self._pause_s, self._start, cid, waiting)

    def claim(self, turn: Turn) -> Speculation | None:
        """The conversation's speculation, confirmed, if it answers `turn`'s prompt as it is now;
        otherwise None (and a speculation that does not is cancelled)."""
        cid = turn.conversation_id
        speculation = self._running.get(cid)
        if speculation is None:
            return None
        if speculation.key != prompt_key(self._prompt_for(cid)):
            speculation.drop("mismatch")
            return None
        speculation.confirm()
        logger.debug(
            "turn %s of %s takes its speculation (%d characters held)",
            turn.turn_id,
            cid,
            len(speculation.held),
        )
        return speculation

    def drop(self, conversation_id: str, *, outcome: SpeculationOutcome) -> None:
        """Cancel the conversation's speculation and any about to start."""
        self._cancel_timer(conversation_id)
        speculation = self._running.get(conversation_id)
        if speculation is not None:
            speculation.drop(outcome)

    def forget(self, conversation_ids: list[str]) -> None:
        """This worker no longer serves these conversations."""
        for cid in conversation_ids:
            self.drop(cid, outcome="lost")

    async def close(self) -> None:
        """Cancel every speculation not claimed yet and wait until their streams are closed."""
        running = list(self._running.values())
        for cid in list(self._timers):
            self._cancel_timer(cid)
        for speculation in running:
            speculation.drop("lost")
        await asyncio.gather(*(speculation.wait_closed() for speculation in running))

    def _start(self, conversation_id: str, segment_ids: tuple[str, ...]) -> None:
        """The pause has lasted `pause_ms`: speculate on the words waiting, unless they changed."""
        self._timers.pop(conversation_id, None)
        try:
            self._speculate(conversation_id, segment_ids)
        except Exception:
            # A timer callback: nobody above would see the error, and the turn is answered anyway.
            logger.exception("speculation for %s not started", conversation_id)

    def _speculate(self, conversation_id: str, segment_ids: tuple[str, ...]) -> None:
        if self._waiting(conversation_id) != segment_ids:
            return  # they became a turn, or more words came
        prompt = self._prompt_for(conversation_id)
        key = prompt_key(prompt)
        current = self._running.get(conversation_id)
        if current is not None:
            if current.key == key:
                return
            current.drop("speech")
        speculation = Speculation(
            conversation_id=conversation_id,
            request_id=turn_id_for(conversation_id, list(segment_ids)),
            prompt=prompt,
            key=key,
            stream=self._stream,
            on_end=self._ended,
        )
        if not speculation.begin(self._gate):
            self._count("no_slot")
            return
        self._running[conversation_id] = speculation
        speculation.expiry = asyncio.get_running_loop().call_later(
            self._unclaimed_s, speculation.drop, "expired"
        )

    def _ended(self, speculation: Speculation, outcome: SpeculationOutcome) -> None:
        if self._running.get(speculation.conversation_id) is speculation:
            del self._running[speculation.conversation_id]
        if speculation.expiry is not None:
            speculation.expiry.cancel()
        logger.debug("speculation for %s: %s", speculation.conversation_id, outcome)
        self._count(outcome)

    def _count(self, outcome: SpeculationOutcome) -> None:
        if self._on_end is not None:
            self._on_end(outcome)

    def _cancel_timer(self, conversation_id: str) -> None:
        timer = self._timers.pop(conversation_id, None)
        if timer is not None:
            timer.cancel()


def prompt_words(text: str) -> str:
    """`text` as `prompt_key` compares it."""
    return _NOT_WORDS.sub(" ", _APOSTROPHES.sub("", text.casefold())).strip()
