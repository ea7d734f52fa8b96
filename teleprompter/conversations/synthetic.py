"""A recorded call made up with realistic timing: every event the system would write, on its topics.

What a web call leaves in Kafka: a route and a profile, each speaker's audio in 100 ms chunks
while they talk, what speech recognition heard, a turn per customer utterance, the suggestion
streamed to the gateway's reply topic a token at a time and its outcome (complete, or
cancelled when the customer spoke again first), a rolling summary every few turns, and the end.
Timestamps follow a script clock from `start_ms`, so a 30-minute call is made in a second and
replayed as if it had been recorded. `produce` writes the events with the real codec, keyed and
partitioned as the system's producers do, each record stamped with its event time.
"""

from __future__ import annotations

import itertools
import logging
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import confluent_kafka

from core.kafka.catalog import TopicCatalog, TopicSpec
from schemas.codec import EventCodec
from schemas.events import (
    AudioChunk,
    ConversationSummary,
    CustomerProfile,
    Event,
    SessionRoute,
    Speaker,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)

logger = logging.getLogger(__name__)

CHUNK_MS: Final = 100
SAMPLE_RATE: Final = 16000
CHUNK_BYTES: Final = SAMPLE_RATE * 2 * CHUNK_MS // 1000
TTFT_MS: Final = 300
TOKENS_PER_S: Final = 40.0
SUMMARY_EVERY_TURNS: Final = 4

CUSTOMER_LINES: Final = (
    "Hi, I'm calling about the invoice I got this morning.",
    "We were charged for twelve seats but we only use eight.",
    "Can you tell me what the premium plan costs per month?",
    "Is there a discount if we pay for the whole year up front?",
    "Our contract renews in March, what happens to our data then?",
    "The export to spreadsheets has been failing since Tuesday.",
    "I need to talk to someone about cancelling our subscription.",
    "Does the API have a rate limit we should know about?",
)
REP_LINES: Final = (
    "Thanks for calling, let me pull up your account.",
    "I can see the twelve seats here, let me check the usage.",
    "Sure, I'll walk you through the options.",
    "That's a fair question, give me a second.",
)
SUGGESTIONS: Final = (
    "I'm sorry about the confusion with the invoice. Let me adjust your seats to eight and "
    "credit the difference on your next bill.",
    "Premium is billed per seat each month, and paying annually brings the price down. "
    "Would you like me to send you a quote?",
    "Your data stays exactly where it is when the contract renews, nothing changes on your side.",
    "I understand. Before you decide, can I ask what isn't working for your team right now?",
)


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    """An event and the topic it goes to."""

    topic: str
    event: Event


def recorded_call(
    catalog: TopicCatalog,
    *,
    conversation_id: str,
    gateway_id: str,
    start_ms: int,
    duration_s: float,
    seed: int = 0,
    audio: bool = True,
    superseded_every: int = 7,
) -> Iterator[ScriptedEvent]:
    """A call's events in event-time order, from `start_ms` for about `duration_s` seconds.

    Every `superseded_every`-th customer turn is interrupted by more customer speech, so its
    suggestion is cancelled as superseded (0: never).
    """
    script = _CallScript(
        catalog,
        conversation_id=conversation_id,
        gateway_id=gateway_id,
        rng=random.Random(seed),
        audio=audio,
    )
    script.play(start_ms, start_ms + int(duration_s * 1000), superseded_every=superseded_every)
    script.events.sort(key=lambda scripted: scripted.event.event_time_ms)
    yield from script.events


class _CallScript:
    """Writes down the events of one call as the script clock advances."""

    def __init__(
        self,
        catalog: TopicCatalog,
        *,
        conversation_id: str,
        gateway_id: str,
        rng: random.Random,
        audio: bool,
    ) -> None:
        self.catalog = catalog
        self.conversation_id = conversation_id
        self.gateway_id = gateway_id
        self.reply_topic = catalog.reply_topic(gateway_id).name
        self.rng = rng
        self.audio = audio
        self.session = f"s-{self._id()[:12]}"
        self.events: list[ScriptedEvent] = []

    def play(self, start_ms: int, end_ms: int, *, superseded_every: int) -> None:
        self.route(True, start_ms)
        self.emit(
            self.catalog.profiles,
            CustomerProfile(
                conversation_id=self.conversation_id,
                event_time_ms=start_ms + 5,
                profile_json='{"name": "Dana Reyes", "company": "Acme Ltd", '
                '"plan": "Team, 12 seats"}',
            ),
        )
        clock = start_ms + 1500
        turns = 0
        while clock < end_ms - 10_000:
            said = self.rng.choice(CUSTOMER_LINES)
            heard = self.speak("customer", said, clock)
            turns += 1
            turn = Turn(
                conversation_id=self.conversation_id,
                event_time_ms=heard + 3,
                turn_id=self._id()[:16],
                text=said,
                trace={"asr_out": float(heard), "turn_out": float(heard + 3)},
            )
            self.emit(self.catalog.turns, turn)
            superseded = superseded_every > 0 and turns % superseded_every == 0
            cut_at = heard + 3 + TTFT_MS + 250 if superseded else None
            done = self.suggest(turn, heard + 4, cut_at=cut_at)
            if turns % SUMMARY_EVERY_TURNS == 0:
                self.summarize(turns, covers_until_ms=heard, at=done + 800)
            if superseded:
                clock = done + 200  # the customer goes on talking
                continue
            clock = self.speak(
                "rep", self.rng.choice(REP_LINES), done + self.rng.randint(500, 1500)
            )
            clock += self.rng.randint(1500, 4000)
        self.emit(
            self.catalog.transcripts,
            TranscriptSegment(
                conversation_id=self.conversation_id,
                event_time_ms=clock,
                session_id=self.session,
                segment_id="end",
                text="",
                end_of_conversation=True,
            ),
        )
        self.route(False, clock + 10)

    def emit(self, topic: TopicSpec | str, event: Event) -> None:
        name = topic if isinstance(topic, str) else topic.name
        self.events.append(ScriptedEvent(topic=name, event=event))

    def route(self, connected: bool, at: int) -> None:
        self.emit(
            self.catalog.routes,
            SessionRoute(
                conversation_id=self.conversation_id,
                event_time_ms=at,
                gateway_id=self.gateway_id,
                reply_topic=self.reply_topic,
                session_id=self.session,
                connected=connected,
            ),
        )

    def speak(self, speaker: Speaker, text: str, at: int) -> int:
        """Audio while `speaker` talks, then what recognition heard; returns when it is heard."""
        talk_ms = max(1200, len(text.split()) * 320)
        if self.audio:
            for seq in range(talk_ms // CHUNK_MS):
                self.emit(
                    self.catalog.audio,
                    AudioChunk(
                        conversation_id=self.conversation_id,
                        event_time_ms=at + seq * CHUNK_MS,
                        session_id=self.session,
                        speaker=speaker,
                        seq=seq,
                        audio=self.rng.randbytes(CHUNK_BYTES),
                    ),
                )
        heard = at + talk_ms + self.rng.randint(150, 350)
        self.emit(
            self.catalog.transcripts,
            TranscriptSegment(
                conversation_id=self.conversation_id,
                event_time_ms=heard,
                session_id=self.session,
                segment_id=self._id()[:16],
                speaker=speaker,
                text=text,
                source="asr" if self.audio else "text",
                trace={"speech_end": float(at + talk_ms), "asr_out": float(heard)},
            ),
        )
        return heard

    def suggest(self, turn: Turn, at: int, *, cut_at: int | None) -> int:
        """Deltas on the reply topic from `at`, then the outcome; returns when it ended."""
        pieces = [word + " " for word in self.rng.choice(SUGGESTIONS).split()]
        trace = {**turn.trace, "suggest_in": float(at), "llm_request": float(at + 2)}
        first = at + 2 + TTFT_MS + self.rng.randint(-40, 60)
        streamed = ""
        when = first
        for seq, piece in enumerate(pieces, start=1):
            when = first + int((seq - 1) * 1000 / TOKENS_PER_S)
            if cut_at is not None and when >= cut_at:
                self.emit(
                    self.catalog.suggestions, _outcome(turn, "cancelled", cut_at, trace, streamed)
                )
                return cut_at
            streamed += piece
            self.emit(
                self.reply_topic,
                SuggestionEvent(
                    conversation_id=self.conversation_id,
                    event_time_ms=when,
                    turn_id=turn.turn_id,
                    kind="delta",
                    seq=seq,
                    text=piece,
                    full_text=streamed,
                    trace={**trace, "llm_first_token": float(first)} if seq == 1 else {},
                ),
            )
        done = when + 5
        final = {**trace, "llm_first_token": float(first), "llm_done": float(done)}
        self.emit(
            self.catalog.suggestions, _outcome(turn, "complete", done, final, streamed.strip())
        )
        return done

    def summarize(self, turns: int, *, covers_until_ms: int, at: int) -> None:
        self.emit(
            self.catalog.summaries,
            ConversationSummary(
                conversation_id=self.conversation_id,
                event_time_ms=at,
                summary=f"Dana from Acme called about billing; {turns} turns so far.",
                covers_until_ms=covers_until_ms,
                turn_count=turns,
            ),
        )

    def _id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128)).hex


def _outcome(turn: Turn, kind: str, at: int, trace: dict[str, float], text: str) -> SuggestionEvent:
    complete = kind == "complete"
    return SuggestionEvent(
        conversation_id=turn.conversation_id,
        event_time_ms=at,
        turn_id=turn.turn_id,
        kind="complete" if complete else "cancelled",
        text=text if complete else "",
        full_text=text,
        reason="" if complete else "superseded",
        timings=_timings(trace) if complete else {},
        trace=trace,
    )


def _timings(trace: dict[str, float]) -> dict[str, float]:
    stages = sorted(trace.items(), key=lambda item: item[1])
    timings = {f"{a}->{b}": round(tb - ta, 3) for (a, ta), (b, tb) in itertools.pairwise(stages)}
    timings["total"] = round(stages[-1][1] - stages[0][1], 3)
    return timings


def produce(
    bootstrap_servers: str,
    events: Iterable[ScriptedEvent],
    *,
    codec: EventCodec,
    flush_timeout_s: float = 60.0,
) -> int:
    """Write the events with the real codec, keyed by conversation and stamped with event time.

    Returns how many were written. Partitioned as the gateway's producer partitions
    (murmur2, the Java client's and Faust's partitioner too).
    """
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "none",
            "queue.buffering.max.kbytes": 256 * 1024,
        }
    )
    failures: list[str] = []

    def delivered(error: confluent_kafka.KafkaError | None, _: confluent_kafka.Message) -> None:
        if error is not None:
            failures.append(error.str())

    count = 0
    for scripted in events:
        event = scripted.event
        while True:
            try:
                producer.produce(
                    scripted.topic,
                    value=codec.encode(event),
                    key=event.key,
                    timestamp=event.event_time_ms,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain it
        count += 1
        producer.poll(0)
    pending = producer.flush(flush_timeout_s)
    if pending or failures:
        raise RuntimeError(
            f"{pending} events not acknowledged, {len(failures)} failed: {failures[:1]}"
        )
    return count
