"""Streams one suggestion per turn, superseding, throttling and resuming them per conversation."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Final

from schemas.events import SuggestionEvent, SuggestionKind, Turn, now_ms
from streams.admission import AdmissionGate, AdmissionRefusedError
from streams.ledger import OpenTurn, TurnLedger
from streams.llm import LlmError
from streams.llm_health import LlmHealth
from streams.speculation import Speculation, Speculator

logger = logging.getLogger(__name__)

Compose = Callable[[Turn], AsyncIterator[str]]
Publish = Callable[[SuggestionEvent], Coroutine[Any, Any, None]]

# An open turn a crashed worker left behind is answered again if it is younger than this;
# an older one is only cancelled: by then the customer has moved on, and a late answer distracts.
RECOVERY_ANSWER_WINDOW_S: Final = 10.0
# Suffix of the id under which a recovered turn is answered again (its old id has ended).
RETRY_SUFFIX: Final = "-r"
# After a suggestion's first delta, what the LLM sends within this long goes out as one delta.
DELTA_BATCH_S: Final = 0.03

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
class _TurnOrder:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding the lock or waiting for it


@dataclass(kw_only=True)
class _InFlight:
    turn: Turn
    task: asyncio.Task[None]
    reader: asyncio.Task[None] | None = None  # reads the LLM's answer into `text`
    text: str = ""  # everything the LLM has sent so far
    shown: int = 0  # how much of `text` the deltas published so far carry
    seq: int = 0  # deltas published so far

    def cancel(self) -> None:
        """Stop streaming now: neither task publishes anything after this returns."""
        self.task.cancel()
        if self.reader is not None:
            _stop(self.reader)


class SuggestionStreamer:
    """Owns every in-flight suggestion of this worker; every suggestion it starts ends.

    `submit` never waits for the LLM: each suggestion streams in its own task, so one slow
    stream never delays another conversation. New customer speech for a conversation cancels its
    in-flight suggestion (`cancelled`, reason `superseded`) and starts a new one with the
    combined text. An LLM error ends it as `failed` with the error's kind as `reason`.

    The first fragment goes out as a delta at once; after it, fragments arriving within
    `delta_batch_s` of each other go out together as one delta (`seq` counts deltas, `fullText`
    is always the whole text so far, and the outcome follows the last of them), so each
    suggestion costs a few Kafka records, not one per token. 0 sends whatever has arrived
    whenever the previous delta is out.

    With a `ledger`, a turn is answered at most once (one delivered again is skipped), and the
    open turn is durable, so that after a crash the partition's next owner ends it (`recover`).

    `resume` (the conversation moved to a new session) re-sends what that session may have
    missed through `redeliver` (to the client only; `publish` by default): the in-flight
    suggestion's text so far, or, when none is in flight, how the last one ended, since a
    suggestion can end in the gap between the old socket closing and the new one opening.
    Neither is a new outcome: the turn's one outcome was published (and recorded) already.

    With a `speculator`, a turn whose prompt a speculation was already answering takes that
    stream (and its LLM slot) instead of asking the LLM again: streams/speculation.py.
    """

    def __init__(
        self,
        *,
        gate: AdmissionGate,
        compose: Compose,
        publish: Publish,
        redeliver: Publish | None = None,
        ledger: TurnLedger | None = None,
        health: LlmHealth | None = None,
        answer_window_s: float = RECOVERY_ANSWER_WINDOW_S,
        delta_batch_s: float = DELTA_BATCH_S,
        speculator: Speculator | None = None,
    ) -> None:
        if delta_batch_s < 0:
            raise ValueError(f"delta_batch_s must not be negative (got {delta_batch_s})")
        self._gate = gate
        self._speculator = speculator
        self._compose = compose
        self._publish = publish
        self._redeliver = redeliver or publish
        self._ledger = ledger
        self._health = health
        self._answer_window_s = answer_window_s
        self._delta_batch_s = delta_batch_s
        self._in_flight: dict[str, _InFlight] = {}
        # conversation -> the lock its turns are taken under, while any is being taken.
        self._turn_orders: dict[str, _TurnOrder] = {}
        # conversation -> how its last suggestion ended, as a reconnecting client is told it;
        # in memory only: a reconnect is answered by the worker that saw the end.
        self._last_endings: dict[str, tuple[SuggestionEvent, ...]] = {}

    def __len__(self) -> int:
        return len(self._in_flight)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._in_flight

    def conversations(self) -> list[str]:
        """Conversations with a suggestion in flight here."""
        return list(self._in_flight)

    async def submit(self, turn: Turn, *, partition: int = 0, offset: int | None = None) -> bool:
        """Start streaming a suggestion for `turn`, superseding the conversation's current one.

        Returns False (and does nothing) for a turn the ledger has seen before. Never waits for
        the LLM; a superseded suggestion's `cancelled` is sent before the new turn is taken.
        """
        async with self._turn_order(turn.conversation_id):
            return await self._take(turn, partition=partition, offset=offset)

    @contextlib.asynccontextmanager
    async def _turn_order(self, conversation_id: str) -> AsyncIterator[None]:
        """One turn of a conversation taken at a time, in the order they came.

        Turns come from two places (the worker that made a turn hands it over at once, and the
        turns topic brings it again, or brings one another worker made), and taking one may wait
        to publish the cancellation of the one before: without this, the second of two turns
        could end the first's predecessor twice, or the same turn could be taken twice.
        """
        order = self._turn_orders.get(conversation_id)
        if order is None:
            order = self._turn_orders[conversation_id] = _TurnOrder()
        order.users += 1
        try:
            async with order.lock:
                yield
        finally:
            order.users -= 1
            if not order.users:
                del self._turn_orders[conversation_id]

    async def _take(self, turn: Turn, *, partition: int, offset: int | None) -> bool:
        """`submit` with the conversation's turn order held."""
        if self._ledger is not None and not self._ledger.is_new(turn, offset=offset):
            # Expected once per turn (the topic's copy of a turn handed over): counted, not logged.
            logger.debug(
                "turn %s of %s was taken before: skipped", turn.turn_id, turn.conversation_id
            )
            return False
        turn.stamp("suggest_in")
        turn = await self._end_current(turn)
        # The new suggestion is what a reconnecting client needs now.
        self._last_endings.pop(turn.conversation_id, None)
        if self._ledger is not None:
            self._ledger.open(turn, partition=partition, opened_ms=now_ms(), offset=offset)
        task = asyncio.get_running_loop().create_task(
            self._stream(turn), name=f"suggest-{turn.conversation_id}"
        )
        self._in_flight[turn.conversation_id] = _InFlight(turn=turn, task=task)
        return True

    async def _end_current(self, turn: Turn) -> Turn:
        """End the conversation's current turn, if any; returns `turn` with its text added."""
        previous = self._in_flight.pop(turn.conversation_id, None)
        if previous is not None:
            previous.cancel()
            await self._finish(previous, kind="cancelled", reason="superseded")
            return replace(turn, text=f"{previous.turn.text} {turn.text}".strip())
        if (orphan := self._orphan(turn.conversation_id)) is not None:
            # A lost worker's open turn, met before the take-over scan: it ends here, and its
            # unanswered text is answered with the new.
            await self._publish(self._event(orphan.turn, kind="cancelled", reason="worker_lost"))
            self._close(orphan.turn)
            return replace(turn, text=f"{orphan.turn.text} {turn.text}".strip())
        return turn

    async def recover(self, orphan: OpenTurn) -> None:
        """End a turn a lost worker left open: cancel it, and answer it again if it is recent."""
        turn = orphan.turn
        cid = turn.conversation_id
        async with self._turn_order(cid):
            still_open = self._orphan(cid)
            if (
                cid in self._in_flight
                or still_open is None
                or still_open.turn.turn_id != turn.turn_id
            ):
                return  # answered here already, or ended by a turn taken meanwhile
            await self._publish(self._event(turn, kind="cancelled", reason="worker_lost"))
            self._close(turn)
            age_s = (now_ms() - orphan.opened_ms) / 1000.0
            if age_s > self._answer_window_s:
                logger.info("turn %s of %s lost %.0f s ago: cancelled", turn.turn_id, cid, age_s)
                return
            logger.info(
                "turn %s of %s lost %.1f s ago: answering it again", turn.turn_id, cid, age_s
            )
            retry = replace(turn, turn_id=f"{turn.turn_id}{RETRY_SUFFIX}", trace=dict(turn.trace))
            await self._take(retry, partition=orphan.partition, offset=None)

    async def resume(self, conversation_id: str) -> None:
        """Re-send the in-flight suggestion's text so far, or how the last one ended (its
        route changed). The text so far is what its deltas carried, under the last delta's seq,
        so the deltas that follow continue it exactly."""
        flight = self._in_flight.get(conversation_id)
        if flight is not None:
            if flight.seq > 0:
                shown = flight.text[: flight.shown]
                await self._redeliver(self._event(flight, kind="delta", text=shown))
            return
        for event in self._last_endings.get(conversation_id, ()):
            await self._redeliver(event)

    async def end(self, conversation_id: str) -> None:
        """The conversation ended: its in-flight suggestion is cancelled (`conversation_ended`)."""
        self._last_endings.pop(conversation_id, None)
        flight = self._in_flight.pop(conversation_id, None)
        if flight is not None:
            flight.cancel()
            await self._publish(self._event(flight, kind="cancelled", reason="conversation_ended"))
            self._close(flight.turn)

    def forget(self, conversation_id: str) -> None:
        """Stop the conversation's suggestion without a word: another worker takes it over
        (its turn stays open in the ledger, and that worker ends it)."""
        self._last_endings.pop(conversation_id, None)
        flight = self._in_flight.pop(conversation_id, None)
        if flight is not None:
            flight.cancel()

    async def close(self) -> None:
        """Stop every stream; their turns stay open in the ledger for the next owner."""
        flights = list(self._in_flight.values())
        self._in_flight.clear()
        self._last_endings.clear()
        for flight in flights:
            flight.cancel()
        tasks = [t for flight in flights for t in (flight.task, flight.reader) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _orphan(self, conversation_id: str) -> OpenTurn | None:
        return None if self._ledger is None else self._ledger.open_turn(conversation_id)

    async def _stream(self, turn: Turn) -> None:
        cid = turn.conversation_id
        reader: asyncio.Task[None] | None = None
        speculation = self._speculator.claim(turn) if self._speculator is not None else None
        try:
            async with self._llm_slot(speculation):
                flight = self._in_flight.get(cid)
                if flight is None or flight.turn.turn_id != turn.turn_id:
                    return
                arrived, ended = asyncio.Event(), asyncio.Event()
                reader = flight.reader = asyncio.get_running_loop().create_task(
                    self._read(flight, self._fragments(turn, speculation), arrived, ended),
                    name=f"llm-{cid}",
                )
                await self._send_deltas(flight, arrived, ended)
                await reader  # done: raises the LLM's error, if it failed
                turn.stamp("llm_done")
                await self._finish(flight, kind="complete", text=flight.text.strip())
        except AdmissionRefusedError as exc:
            logger.info("throttled turn %s of %s: %s", turn.turn_id, cid, exc)
            await self._publish(self._event(turn, kind="throttled", reason=str(exc)))
            self._close(turn)
        except asyncio.CancelledError:
            raise
        except LlmError as exc:
            logger.warning("suggestion for turn %s of %s failed: %s", turn.turn_id, cid, exc)
            if self._health is not None:
                self._health.failed(str(exc))
            await self._fail(turn, reason=f"llm_{exc.kind}")
        except Exception:
            logger.exception("suggestion for turn %s of %s failed", turn.turn_id, cid)
            await self._fail(turn, reason="internal")
        finally:
            if reader is not None:
                _stop(reader)
            current = self._in_flight.get(cid)
            if current is not None and current.turn.turn_id == turn.turn_id:
                del self._in_flight[cid]

    async def _read(
        self,
        flight: _InFlight,
        fragments: AsyncIterator[str],
        arrived: asyncio.Event,
        ended: asyncio.Event,
    ) -> None:
        """The LLM's answer into `flight.text`; the first fragment is published at once, and
        `arrived` tells `_send_deltas` of every later one, `ended` of the end."""
        try:
            async for fragment in fragments:
                if not fragment:
                    continue
                flight.text += fragment
                if flight.seq == 0:
                    # An adopted speculation's first token may predate the turn: kept as is.
                    flight.turn.trace.setdefault("llm_first_token", now_ms())
                    if self._health is not None:
                        self._health.succeeded()
                    await self._publish_delta(flight)
                else:
                    arrived.set()
        finally:
            ended.set()
            arrived.set()

    async def _send_deltas(
        self, flight: _InFlight, arrived: asyncio.Event, ended: asyncio.Event
    ) -> None:
        """Publish what the reader adds after the first delta, gathered for `delta_batch_s`
        (the end of the answer ends the gathering: the outcome never waits for the window)."""
        while True:
            await arrived.wait()
            if self._delta_batch_s and not ended.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._delta_batch_s):
                        await ended.wait()
            arrived.clear()
            last = ended.is_set()  # before publishing: text may still come while it is sent
            if flight.seq > 0 and len(flight.text) > flight.shown:
                await self._publish_delta(flight)
            if last:
                return

    async def _publish_delta(self, flight: _InFlight) -> None:
        fragment = flight.text[flight.shown :]
        flight.shown = len(flight.text)
        flight.seq += 1
        await self._publish(self._event(flight, kind="delta", text=fragment))

    @contextlib.asynccontextmanager
    async def _llm_slot(self, speculation: Speculation | None) -> AsyncIterator[None]:
        """A stream slot for the body: a new one, or the one the adopted speculation holds
        (whose LLM stream is closed when the body ends, however it ends)."""
        if speculation is None:
            async with self._gate.slot():
                yield
            return
        try:
            yield
        finally:
            speculation.close()

    def _fragments(self, turn: Turn, speculation: Speculation | None) -> AsyncIterator[str]:
        if speculation is not None:
            return speculation.adopt(turn)
        turn.stamp("llm_request")
        return self._compose(turn)

    async def _fail(self, turn: Turn, *, reason: str) -> None:
        failed = self._in_flight.get(turn.conversation_id)
        if failed is not None and failed.turn.turn_id == turn.turn_id:
            await self._finish(failed, kind="failed", reason=reason)

    async def _finish(
        self, flight: _InFlight, *, kind: SuggestionKind, text: str = "", reason: str = ""
    ) -> None:
        outcome = self._event(flight, kind=kind, text=text, reason=reason)
        if kind != "cancelled":
            self._keep_ending(flight, outcome)
        # Published first, recorded second: a crash in between can only add a second outcome
        # (worker_lost) to an ended turn, never leave one without any.
        await self._publish(outcome)
        self._close(flight.turn)

    def _keep_ending(self, flight: _InFlight, outcome: SuggestionEvent) -> None:
        """Keep how `flight` ended until the next turn, for a client that reconnects after it:
        the whole text first (the delta a reconnecting client gets), then the outcome.

        A superseded suggestion is not kept: the next one is already on its way. The copies
        carry no trace or timings: they are not a second outcome, and nothing times them again.
        """
        replay = [outcome]
        if flight.seq:
            replay.insert(0, self._event(flight, kind="delta", text=flight.text[: flight.shown]))
        self._last_endings[flight.turn.conversation_id] = tuple(
            replace(event, trace={}, timings={}) for event in replay
        )

    def _close(self, turn: Turn) -> None:
        if self._ledger is not None:
            self._ledger.close(turn.conversation_id, turn.turn_id)

    def _event(
        self,
        flight: _InFlight | Turn,
        *,
        kind: SuggestionKind,
        text: str = "",
        reason: str = "",
    ) -> SuggestionEvent:
        turn, seq, so_far = (
            (flight.turn, flight.seq, flight.text[: flight.shown])
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


def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` if it runs; retrieve its outcome if it ended (so none goes unreported)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()
