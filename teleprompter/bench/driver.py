"""The load: one WebSocket per conversation, playing its script on time and reading suggestions.

Each `RepScreen` is a rep's screen: it sends the customer's interim and final transcripts (or
real-time audio frames) and the rep's lines when the script says, whatever the system is
doing, and reads what comes back. A turn is attributed the way a rep would see it: after the
customer's final chunk (or end of speech) the first `suggestion_delta` with a turn id not seen
before answers the oldest unanswered turn; a `throttled` or a `suggestion_cancelled` of an
unseen turn id settles it likewise. A turn with no answer of any kind within `deadline_s` is
lost. Messages go through a `ResendingSocket`: kept until the gateway acks them, resent after
a reconnect, and counted "sent, never acked" if neither happens by the end of the run (the
bench's count of lost messages). In audio mode speech recognition may cut one sentence into
several turns, so a turn is only answered by a suggestion arriving after a final transcript
that came after its end of speech; earlier ones answered a fragment and are counted as such.
The system answers a conversation's turns in order, so this is exact as long as it drops none
silently; one it does drop is still counted lost, though a later answer may then be timed
against the dropped turn. All times are this process's monotonic clock (the event loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import aiohttp

from teleprompter.bench.resending_socket import DeliveryCounts, ResendingSocket
from teleprompter.bench.schedule import ConversationScript, Line, Schedule

logger = logging.getLogger(__name__)

Outcome = Literal["pending", "answered", "throttled", "cancelled", "lost", "not_sent"]
TokenFor = Callable[[str], str]

CONNECT_TIMEOUT_S: Final = 30.0
CONNECT_CONCURRENCY: Final = 64
START_DELAY_S: Final = 0.5
FRAME_S: Final = 0.1  # real-time audio: one 100 ms frame every 100 ms
# After the last answer, how long the run waits for acks of what is still unanswered.
ACK_WAIT_S: Final = 10.0


class AudioClips(Protocol):
    """Speech for audio mode: each customer line as 16 kHz s16le PCM, and where speech ends."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def texts(self) -> tuple[str, ...]: ...

    def pcm(self, text: str) -> bytes: ...

    def speech_end_s(self, text: str) -> float: ...


@dataclass(kw_only=True)
class TurnResult:
    """One customer sentence that should make a turn, and what became of it."""

    key: str
    conversation: int
    planned_s: float  # when the script says the final chunk / end of speech happens
    sent_at: float | None = None  # loop time it was actually sent
    outcome: Outcome = "pending"
    answered_at: float | None = None  # loop time the first suggestion_delta arrived
    turn_id: str | None = None
    timings: Mapping[str, float] | None = None

    @property
    def end_to_end_ms(self) -> float | None:
        if self.sent_at is None or self.answered_at is None:
            return None
        return (self.answered_at - self.sent_at) * 1000.0


@dataclass(kw_only=True)
class DriverResult:
    turns: list[TurnResult]
    send_lags_ms: list[float]
    errors: Counter[str]
    deltas: int
    superseded_mid_stream: int  # suggestions cancelled after their first token (normal)
    fragment_suggestions: int  # audio: suggestions for part of a sentence, before its end
    measured_s: float  # from the first planned line to the last answer (or deadline)
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)
    unacked_messages: int = 0  # sent and never acked (nor refused): lost
    unacked_audio_bytes: int = 0


@dataclass(kw_only=True)
class _Shared:
    """What every screen writes to: counters of the whole run."""

    errors: Counter[str] = field(default_factory=Counter)
    send_lags_ms: list[float] = field(default_factory=list)
    deltas: int = 0
    superseded: int = 0
    fragments: int = 0
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)
    unacked_messages: int = 0
    unacked_audio_bytes: int = 0


class RepScreen:
    """One conversation's WebSocket: plays the script, attributes suggestions to turns."""

    def __init__(
        self,
        *,
        script: ConversationScript,
        conversation_id: str,
        ws_url: str,
        token: str,
        http: aiohttp.ClientSession,
        shared: _Shared,
        audio: AudioClips | None = None,
        deadline_s: float = 10.0,
        ack_wait_s: float = ACK_WAIT_S,
    ) -> None:
        self.script = script
        self.conversation_id = conversation_id
        self.turns = [
            TurnResult(key=line.turn_key, conversation=script.index, planned_s=line.end_s)
            for line in script.lines
            if line.turn_key is not None
        ]
        self._by_key = {turn.key: turn for turn in self.turns}
        self._link = ResendingSocket(
            http=http,
            urls=[f"{ws_url}?conversation_id={conversation_id}&token={token}"],
            on_message=self._on_message,
            on_close=self._on_close,
            connect_timeout_s=CONNECT_TIMEOUT_S,
        )
        self._connected = False
        self._shared = shared
        self._audio = audio
        self._deadline_s = deadline_s
        self._ack_wait_s = ack_wait_s
        self._pending: deque[TurnResult] = deque()
        self._seen: set[str] = set()
        self._by_turn_id: dict[str, TurnResult] = {}
        self._incomplete: dict[str, TurnResult] = {}  # answered, suggestion_complete not yet
        self._settled = asyncio.Event()
        self._heard_at: float | None = None  # the last final customer transcript (audio mode)

    # --- lifecycle ------------------------------------------------------------------------
    async def connect(self) -> bool:
        """Open the socket and wait for `ready`; False (counted as an error) if it fails."""
        self._connected = await self._link.connect()
        if not self._connected:
            self._shared.errors["connect: no ready message"] += 1
            logger.warning("%s: cannot connect", self.conversation_id)
        return self._connected

    async def play(self, t0: float) -> None:
        """Send every line of the script at its time after `t0` (loop time)."""
        if not self._connected:
            return
        if self._audio is None:
            await self._play_transcript(t0)
        else:
            await asyncio.gather(
                self._play_audio(t0, self._audio),
                self._play_rep_lines(t0),
            )

    async def settle(self) -> None:
        """Wait until every sent turn has an outcome and every answer its `suggestion_complete`
        (for the stage timings), each within the deadline; then hang up."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            gone = not self._connected or self._link.finished
            while self._pending and (gone or _since(self._pending[0].sent_at) >= self._deadline_s):
                self._pending.popleft().outcome = "lost"
            for turn_id, turn in list(self._incomplete.items()):
                if gone or _since(turn.answered_at) >= self._deadline_s:
                    del self._incomplete[turn_id]  # its timings are missing from the stages
            due = [t.sent_at for t in self._pending] + [
                t.answered_at for t in self._incomplete.values()
            ]
            if not due:
                break
            remaining = min(at or now for at in due) + self._deadline_s - now
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), max(remaining, 0.001))
        for turn in self.turns:
            if turn.outcome == "pending":
                turn.outcome = "not_sent"
        await self.close()

    async def close(self) -> None:
        if self._connected and not self._link.finished:
            await self._link.send_json({"type": "end"})
            await self._link.wait_settled(self._ack_wait_s)
        await self._link.close()
        if not self._connected:
            return
        self._connected = False  # counted once, however often close() is called
        self._shared.delivery.add(self._link.counts)
        self._shared.unacked_messages += self._link.unacked_messages
        self._shared.unacked_audio_bytes += self._link.unacked_audio_bytes

    # --- sending --------------------------------------------------------------------------
    async def _play_transcript(self, t0: float) -> None:
        # (when, line, text, final, whether it ends the line)
        sends: list[tuple[float, Line, str, bool, bool]] = []
        for line in self.script.lines:
            sends += [(at, line, text, False, False) for at, text in line.partials]
            finals = line.final_chunks
            sends += [
                (at, line, text, True, n == len(finals) - 1) for n, (at, text) in enumerate(finals)
            ]
        sends.sort(key=lambda item: item[0])
        for at, line, text, final, ends_line in sends:
            if not await self._wait_until(t0 + at):
                return
            message = {
                "type": "transcript_chunk",
                "text": text,
                "speaker": line.speaker,
                "final": final,
            }
            turn = self._by_key.get(line.turn_key or "") if ends_line else None
            await self._send(message, turn=turn, planned=t0 + at)

    async def _play_rep_lines(self, t0: float) -> None:
        for line in self.script.lines:
            if line.speaker != "rep":
                continue
            if not await self._wait_until(t0 + line.end_s):
                return
            message = {"type": "transcript_chunk", "text": line.text, "speaker": "rep"}
            await self._send(message, turn=None, planned=t0 + line.end_s)

    async def _play_audio(self, t0: float, clips: AudioClips) -> None:
        """A continuous real-time stream: speech during customer lines, silence between."""
        rate = clips.sample_rate
        frame_bytes = int(rate * FRAME_S) * 2
        silence = bytes(frame_bytes)
        await self._send({"type": "audio_config", "sample_rate": rate}, turn=None, planned=t0)
        customer = [line for line in self.script.lines if line.speaker == "customer"]
        end_s = max(
            (line.start_s + len(clips.pcm(line.text)) / (2 * rate) for line in customer),
            default=0.0,
        )
        frame = 0
        line_index = 0
        while frame * FRAME_S < end_s:
            at = frame * FRAME_S
            while line_index < len(customer) and _clip_end(customer[line_index], clips) <= at:
                line_index += 1
            data, turn = silence, None
            if line_index < len(customer) and customer[line_index].start_s <= at:
                line = customer[line_index]
                data, turn = self._speech_frame(line, at, frame_bytes, clips)
            if not await self._wait_until(t0 + at):
                return
            await self._send(data, turn=turn, planned=t0 + at, record_lag=frame % 10 == 0)
            frame += 1

    def _speech_frame(
        self, line: Line, at: float, frame_bytes: int, clips: AudioClips
    ) -> tuple[bytes, TurnResult | None]:
        pcm = clips.pcm(line.text)
        offset = round((at - line.start_s) * clips.sample_rate) * 2
        data = pcm[offset : offset + frame_bytes]
        data += bytes(frame_bytes - len(data))
        # End of speech: this frame holds the last non-silent sample of the line.
        speech_end = line.start_s + clips.speech_end_s(line.text)
        is_last = at < speech_end <= at + FRAME_S
        return data, (self._by_key.get(line.turn_key or "") if is_last else None)

    async def _wait_until(self, when: float) -> bool:
        """Sleep until `when` (the script's clock); False once the link is gone for good."""
        delay = when - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        return not self._link.finished

    async def _send(
        self,
        data: Mapping[str, object] | bytes,
        turn: TurnResult | None,
        planned: float,
        *,
        record_lag: bool = True,
    ) -> None:
        now = asyncio.get_running_loop().time()
        if record_lag:
            self._shared.send_lags_ms.append(max(0.0, (now - planned) * 1000.0))
        if turn is not None:
            turn.sent_at = now
            self._pending.append(turn)
        # While reconnecting the link keeps it and resends it on the next session.
        if isinstance(data, bytes):
            await self._link.send_audio(data)
        else:
            await self._link.send_json(dict(data))

    # --- receiving ------------------------------------------------------------------------
    def _on_close(self, code: int | None) -> None:
        self._shared.errors[f"closed by server: {code}"] += 1
        self._settled.set()

    def _on_message(self, message: dict[str, object], at: float) -> None:
        kind = message.get("type")
        turn_id = str(message.get("turn_id") or "")
        if kind == "suggestion_delta":
            self._shared.deltas += 1
            if turn_id not in self._seen:
                self._answer(turn_id, at)
        elif kind == "suggestion_complete":
            if turn_id not in self._seen:  # a suggestion with no text: shown empty, at once
                self._answer(turn_id, at)
            turn = self._by_turn_id.get(turn_id)
            self._incomplete.pop(turn_id, None)
            self._settled.set()
            timings = message.get("timings")
            if turn is not None and isinstance(timings, dict):
                turn.timings = {str(k): float(v) for k, v in timings.items()}
        elif kind == "suggestion_cancelled":
            if turn_id in self._seen:
                self._shared.superseded += 1
                self._incomplete.pop(turn_id, None)
                self._settled.set()
            else:
                self._settle_oldest(turn_id, "cancelled")
        elif kind == "throttled":
            self._settle_oldest(turn_id, "throttled")
        elif kind == "transcript":
            if message.get("final", True) and message.get("speaker", "customer") == "customer":
                self._heard_at = at
        elif kind == "error":
            self._shared.errors[f"server error: {message.get('code')}"] += 1
            self._settled.set()

    def _answer(self, turn_id: str, at: float) -> None:
        turn = self._settle_oldest(turn_id, "answered")
        if turn is not None:
            turn.answered_at = at
            self._by_turn_id[turn_id] = turn
            self._incomplete[turn_id] = turn

    def _settle_oldest(self, turn_id: str, outcome: Outcome) -> TurnResult | None:
        if turn_id:
            self._seen.add(turn_id)
        if self._audio is not None and not self._sentence_heard():
            # Speech recognition may cut a sentence into several turns; a suggestion that comes
            # before the sentence's final transcript answers a fragment of it, not the turn.
            self._shared.fragments += 1
            return None
        if not self._pending:
            self._shared.errors[f"{outcome} with no turn waiting"] += 1
            return None
        turn = self._pending.popleft()
        turn.outcome = outcome
        turn.turn_id = turn_id or None
        self._settled.set()
        return turn

    def _sentence_heard(self) -> bool:
        """Whether a final transcript came after the oldest waiting turn's end of speech."""
        if not self._pending:
            return False
        sent_at = self._pending[0].sent_at
        return sent_at is not None and self._heard_at is not None and self._heard_at >= sent_at


def _since(at: float | None) -> float:
    return asyncio.get_running_loop().time() - at if at is not None else 0.0


def _clip_end(line: Line, clips: AudioClips) -> float:
    return line.start_s + len(clips.pcm(line.text)) / (2 * clips.sample_rate)


async def drive(
    schedule: Schedule,
    *,
    ws_url: str,
    token_for: TokenFor,
    run_tag: str,
    audio: AudioClips | None = None,
    deadline_s: float = 10.0,
    ack_wait_s: float = ACK_WAIT_S,
    on_start: Callable[[], None] | None = None,
) -> DriverResult:
    """Connect every conversation, play the schedule open-loop, wait for the answers."""
    shared = _Shared()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        screens = []
        for script in schedule.conversations:
            cid = f"bench-{run_tag}-{script.index}"
            screens.append(
                RepScreen(
                    script=script,
                    conversation_id=cid,
                    ws_url=ws_url,
                    token=token_for(cid),
                    http=http,
                    shared=shared,
                    audio=audio,
                    deadline_s=deadline_s,
                    ack_wait_s=ack_wait_s,
                )
            )
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(screen: RepScreen) -> bool:
            async with gate:
                return await screen.connect()

        connected = await asyncio.gather(*(connect(s) for s in screens))
        logger.info("%d of %d conversations connected", sum(connected), len(screens))
        t0 = loop.time() + START_DELAY_S
        if on_start is not None:
            on_start()
        try:
            await asyncio.gather(*(s.play(t0) for s in screens))
            await asyncio.gather(*(s.settle() for s in screens))
        finally:
            await asyncio.gather(*(s.close() for s in screens), return_exceptions=True)
        measured_s = loop.time() - t0
    turns = [turn for screen in screens for turn in screen.turns]
    if shared.unacked_messages:
        shared.errors["sent, never acked"] += shared.unacked_messages
    return DriverResult(
        turns=turns,
        send_lags_ms=shared.send_lags_ms,
        errors=shared.errors,
        deltas=shared.deltas,
        superseded_mid_stream=shared.superseded,
        fragment_suggestions=shared.fragments,
        measured_s=measured_s,
        delivery=shared.delivery,
        unacked_messages=shared.unacked_messages,
        unacked_audio_bytes=shared.unacked_audio_bytes,
    )
