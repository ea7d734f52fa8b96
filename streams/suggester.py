"""Streams one suggestion per turn, superseding, throttling and resuming them per conversation."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Final

from schemas.events import SuggestionEvent, SuggestionKind, Turn, now_ms
from streams.admission import AdmissionGate, AdmissionRefusedError

logger = logging.getLogger(__name__)

Compose = Callable[[Turn], AsyncIterator[str]]
Publish = Callable[[SuggestionEvent], Coroutine[Any, Any, None]]

# Trace stages in pipeline order; timings are the gaps between consecutive stages present.
STAGES: Final = (
    "speech_end",
    "asr_out",
    "gateway_in",
    "worker_in",
    "turn_out",
    "suggest_in",
    "llm_request",
    "llm_first_token",
    "llm_done",
)


def stage_timings(trace: dict[str, float]) -> dict[str, float]:
    """Milliseconds spent between consecutive trace stages, plus the total."""
    present = [(stage, trace[stage]) for stage in STAGES if stage in trace]
    timings = {f"{a}->{b}": round(tb - ta, 3) for (a, ta), (b, tb) in itertools.pairwise(present)}
    if len(present) > 1:
        timings["total"] = round(present[-1][1] - present[0][1], 3)
    return timings


@dataclass(kw_only=True)
class _InFlight:
    turn: Turn
    task: asyncio.Task[None]
    text: str = ""
    seq: int = 0


class SuggestionStreamer:
    """Owns every in-flight suggestion of this worker.

    `submit` never waits for the LLM: each suggestion streams in its own task, so one slow
    stream never delays another conversation. New customer speech for a conversation cancels its
    in-flight suggestion (`cancelled`) and starts a new one with the combined text.

    `resume` (the conversation moved to a new session) re-sends what that session may have missed
    through `redeliver` (to the client only; `publish` by default): the in-flight suggestion's
    text so far, or, when none is in flight, how the last one ended, since a suggestion can end
    in the gap between the old socket closing and the new one opening.
    """

    def __init__(
        self,
        *,
        gate: AdmissionGate,
        compose: Compose,
        publish: Publish,
        redeliver: Publish | None = None,
    ) -> None:
        self._gate = gate
        self._compose = compose
        self._publish = publish
        self._redeliver = redeliver or publish
        self._in_flight: dict[str, _InFlight] = {}
        # conversation -> how its last suggestion ended, as a reconnecting client is told it
        self._outcomes: dict[str, tuple[SuggestionEvent, ...]] = {}

    def __len__(self) -> int:
        return len(self._in_flight)

    def submit(self, turn: Turn) -> None:
        """Start streaming a suggestion for `turn`, superseding the conversation's current one."""
        turn.stamp("suggest_in")
        self._outcomes.pop(turn.conversation_id, None)
        previous = self._in_flight.pop(turn.conversation_id, None)
        if previous is not None:
            previous.task.cancel()
            self._spawn_publish(self._event(previous, kind="cancelled", reason="superseded"))
            turn = replace(turn, text=f"{previous.turn.text} {turn.text}".strip())
        task = asyncio.get_running_loop().create_task(
            self._stream(turn), name=f"suggest-{turn.conversation_id}"
        )
        self._in_flight[turn.conversation_id] = _InFlight(turn=turn, task=task)

    async def resume(self, conversation_id: str) -> None:
        """Re-send the in-flight suggestion's text so far, or the last one's outcome."""
        flight = self._in_flight.get(conversation_id)
        if flight is not None:
            if flight.seq > 0:
                await self._redeliver(self._event(flight, kind="delta", text=flight.text))
        else:
            for event in self._outcomes.get(conversation_id, ()):
                await self._redeliver(event)

    def forget(self, conversation_id: str) -> None:
        """The conversation ended: stop its suggestion without a word to anyone."""
        self._outcomes.pop(conversation_id, None)
        flight = self._in_flight.pop(conversation_id, None)
        if flight is not None:
            flight.task.cancel()

    async def close(self) -> None:
        tasks = [flight.task for flight in self._in_flight.values()]
        self._in_flight.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, turn: Turn) -> None:
        cid = turn.conversation_id
        try:
            async with self._gate.slot():
                flight = self._in_flight.get(cid)
                if flight is None or flight.turn.turn_id != turn.turn_id:
                    return
                turn.stamp("llm_request")
                async for fragment in self._compose(turn):
                    if not fragment:
                        continue
                    if flight.seq == 0:
                        turn.stamp("llm_first_token")
                    flight.seq += 1
                    flight.text += fragment
                    await self._publish(self._event(flight, kind="delta", text=fragment))
                turn.stamp("llm_done")
                await self._conclude(
                    self._event(flight, kind="complete", text=flight.text.strip()),
                    # A client that missed the end hears the whole text, then that it is done.
                    replay_after=self._event(flight, kind="delta", text=flight.text),
                )
        except AdmissionRefusedError as exc:
            logger.info("throttled turn %s of %s: %s", turn.turn_id, cid, exc)
            # Not kept for a reconnect: on screen, `throttled` is a passing "thinking" sign.
            await self._publish(self._event(turn, kind="throttled", reason=str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("suggestion for turn %s of %s failed: %s", turn.turn_id, cid, exc)
            failed = self._in_flight.get(cid)
            if failed is not None and failed.turn.turn_id == turn.turn_id:
                await self._conclude(self._event(failed, kind="cancelled", reason=f"error: {exc}"))
        finally:
            current = self._in_flight.get(cid)
            if current is not None and current.turn.turn_id == turn.turn_id:
                del self._in_flight[cid]

    async def _conclude(
        self, outcome: SuggestionEvent, *, replay_after: SuggestionEvent | None = None
    ) -> None:
        # Kept until the next turn, for a client that reconnects after the suggestion ended.
        replay = (outcome,) if replay_after is None else (replay_after, outcome)
        self._outcomes[outcome.conversation_id] = replay
        await self._publish(outcome)

    def _event(
        self,
        flight: _InFlight | Turn,
        *,
        kind: SuggestionKind,
        text: str = "",
        reason: str = "",
    ) -> SuggestionEvent:
        turn, seq, so_far = (
            (flight.turn, flight.seq, flight.text)
            if isinstance(flight, _InFlight)
            else (flight, 0, "")
        )
        # Only the first delta and the outcome carry the trace: enough to time every stage.
        carries_trace = kind != "delta" or seq <= 1
        return SuggestionEvent(
            conversation_id=turn.conversation_id,
            turn_id=turn.turn_id,
            kind=kind,
            seq=seq,
            text=text,
            full_text=so_far,
            reason=reason,
            timings=stage_timings(turn.trace) if kind == "complete" else {},
            trace=dict(turn.trace) if carries_trace else {},
            event_time_ms=int(now_ms()),
        )

    def _spawn_publish(self, event: SuggestionEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(event))
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (exc := task.exception()) is not None:
            logger.warning("publishing a suggestion event failed: %s", exc)
