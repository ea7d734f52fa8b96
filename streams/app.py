"""The Faust application: agents from transcript to turn to streamed suggestion, and their state.

    audio --transcribe--> transcripts (+ echo to the gateway's reply topic)
    transcripts --coalesce--> turns --suggest--> <gateway's reply topic> + suggestions (outcomes)
    routes / profiles / summaries --> tables the agents read

Every topic is keyed by conversation id and has the same partition count, so one worker owns a
conversation's transcript, turns, route, profile and summary together (co-partitioning).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final, TypeVar

import faust

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from schemas.codec import EventCodec, default_codec
from schemas.errors import SchemaError
from schemas.events import (
    AudioChunk,
    ConversationSummary,
    CustomerProfile,
    Event,
    SessionRoute,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)
from streams.admission import AdmissionGate
from streams.asr.audio import AudioFormatError
from streams.asr.model import AsrModelError
from streams.asr.transcriber import AsrCapacityError, RecognizedText, SpeechRecognitionEngine
from streams.coalescer import TurnCoalescer
from streams.contexts import ContextStore
from streams.llm import LlmError, SuggestionModel
from streams.observability.metrics import WorkerMetrics
from streams.prompt import PromptBuilder
from streams.routes import RouteBook
from streams.suggester import SuggestionStreamer
from streams.summarizer import RollingSummarizer

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

IDLE_SWEEP_INTERVAL_S: Final = 30.0
ROUTE_WAIT_S: Final = 2.0


class SuggestionPipeline:
    """Builds the Faust app for one worker process and holds its agents' shared state."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: EventCodec | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        self.metrics = metrics or WorkerMetrics()
        self.catalog = TopicCatalog.from_settings(settings)
        self.app = faust.App(**faust_settings(settings))
        self.model = SuggestionModel.from_settings(settings)
        self.builder = PromptBuilder()

        self._topics = {
            spec.name: self.app.topic(
                spec.name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=spec.partitions,
                internal=False,
            )
            for spec in self.catalog.shared_topics
        }
        table_args: dict[str, Any] = {
            "default": None,
            "partitions": settings.partitions,
            # Keys are conversation ids; values are JSON objects (Faust's default codec).
            "key_type": str,
        }
        self.routes = RouteBook(self.app.Table("routes", **table_args))
        self.contexts = ContextStore(
            self.app.Table("contexts", **table_args), window_s=settings.context_window_s
        )
        self.coalescer = TurnCoalescer(pause_ms=settings.turn_pause_ms)
        self.streamer = SuggestionStreamer(
            gate=AdmissionGate(
                max_active=settings.llm_max_streams, max_waiting=settings.llm_max_waiting
            ),
            compose=self._compose,
            publish=self._publish_suggestion,
        )
        self.summarizer = RollingSummarizer(
            builder=self.builder,
            complete=self.model.complete,
            publish=self._publish_summary,
        )
        self._pause_changed = asyncio.Event()
        self._speech: SpeechRecognitionEngine | None = None
        self._speech_loaded = asyncio.Event()

        self._agent(self.catalog.audio.name, "transcribe", self._transcribe)
        self._agent(self.catalog.transcripts.name, "coalesce", self._coalesce)
        self._agent(self.catalog.turns.name, "suggest", self._suggest)
        self._agent(self.catalog.routes.name, "track-routes", self._track_routes)
        self._agent(self.catalog.profiles.name, "track-profiles", self._track_profiles)
        self._agent(self.catalog.summaries.name, "track-summaries", self._track_summaries)
        self.app.task(self._pause_clock)
        self.app.task(self._run_speech_recognition)
        self.app.timer(IDLE_SWEEP_INTERVAL_S)(self._sweep_idle)
        # mode's Signal stubs reject any async receiver, though it awaits them at runtime.
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    # --- agents ---------------------------------------------------------------------------
    async def _transcribe(self, stream: Any) -> None:
        async for chunk in self._decoded(stream, AudioChunk):
            await self._speech_loaded.wait()
            if self._speech is None:
                continue  # the model failed to load; that was reported loudly at start
            try:
                await self._speech.accept(chunk)
            except (AudioFormatError, AsrCapacityError) as exc:
                logger.warning("audio of %s not recognised: %s", chunk.conversation_id, exc)

    async def _coalesce(self, stream: Any) -> None:
        async for segment in self._decoded(stream, TranscriptSegment):
            segment.stamp("worker_in")
            cid = segment.conversation_id
            if segment.end_of_conversation:
                self.coalescer.accept(segment, now_ms=_now_ms())
                self._end(cid)
                continue
            if segment.final and segment.text.strip():
                context = self.contexts.get(cid)
                context.add_segment(segment)
                self.contexts.save(cid)
                self.summarizer.consider(context)
            turn = self.coalescer.accept(segment, now_ms=_now_ms())
            if turn is not None:
                await self._send_turn(turn)
            else:
                self._pause_changed.set()

    async def _suggest(self, stream: Any) -> None:
        async for turn in self._decoded(stream, Turn):
            self.streamer.submit(turn)

    async def _track_routes(self, stream: Any) -> None:
        async for route in self._decoded(stream, SessionRoute):
            if self.routes.update(route):
                await self.streamer.resume(route.conversation_id)

    async def _track_profiles(self, stream: Any) -> None:
        async for profile in self._decoded(stream, CustomerProfile):
            self.contexts.set_profile(profile.conversation_id, profile.profile_json)
            self.contexts.save(profile.conversation_id)

    async def _track_summaries(self, stream: Any) -> None:
        async for summary in self._decoded(stream, ConversationSummary):
            self.contexts.get(summary.conversation_id).apply_summary(summary)
            self.contexts.save(summary.conversation_id)

    # --- timers ---------------------------------------------------------------------------
    async def _pause_clock(self) -> None:
        """Emits the turns whose pause ran out, waking exactly when the next one is due."""
        while True:
            # Clear before reading the deadline, so a turn started meanwhile still wakes us.
            self._pause_changed.clear()
            deadline = self.coalescer.next_deadline_ms()
            timeout = None if deadline is None else max(0.0, (deadline - _now_ms()) / 1000.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._pause_changed.wait()
            for turn in self.coalescer.due(now_ms=_now_ms()):
                await self._send_turn(turn)

    async def _run_speech_recognition(self) -> None:
        """Loads the speech model once per process, then publishes what it recognises."""
        try:
            self._speech = await SpeechRecognitionEngine.start(self.settings)
        except AsrModelError as exc:
            logger.error("speech recognition is off in this worker: %s", exc)
        finally:
            self._speech_loaded.set()
        if self._speech is None:
            return
        async for recognized in self._speech.results():
            await self._publish_transcript(recognized)

    async def _publish_transcript(self, recognized: RecognizedText) -> None:
        segment = TranscriptSegment(
            conversation_id=recognized.conversation_id,
            session_id=recognized.session_id,
            segment_id=recognized.utterance_id,
            speaker=recognized.speaker,
            text=recognized.text,
            final=recognized.final,
            source="asr",
        )
        if recognized.speech_end_wall_ms is not None:
            segment.trace["speech_end"] = recognized.speech_end_wall_ms
        segment.trace["asr_out"] = recognized.produced_wall_ms
        await self._send(self.catalog.transcripts.name, segment)
        route = self.routes.get(segment.conversation_id)
        if route is not None:
            await self._send(route.reply_topic, segment)

    async def _sweep_idle(self) -> None:
        """Ends conversations that went quiet without saying goodbye, through their own stream."""
        for cid in self.contexts.idle(idle_s=self.settings.conversation_idle_s):
            logger.info(
                "conversation %s idle for %.0f s: ending it", cid, self.settings.conversation_idle_s
            )
            await self._send(
                self.catalog.transcripts.name,
                TranscriptSegment(
                    conversation_id=cid,
                    session_id="worker",
                    segment_id="idle",
                    text="",
                    end_of_conversation=True,
                ),
            )

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        """The consumer has stopped: end in-flight streams before the producer's last flush."""
        await self.streamer.close()
        await self.summarizer.close()
        await self.model.close()
        if self._speech is not None:
            # Speech in progress is finished and published before the producer's last flush.
            await self._speech.close(flush_timeout_s=2.0)

    # --- helpers --------------------------------------------------------------------------
    def _agent(self, topic: str, name: str, fun: Any) -> None:
        self.app.agent(self._topics[topic], name=name)(fun)

    async def _decoded(self, stream: Any, event_type: type[E]) -> AsyncIterator[E]:
        async for message in stream.events():
            try:
                yield self.codec.decode_as(
                    message.value,
                    event_type,
                    topic=message.message.topic,
                    offset=message.message.offset,
                )
            except SchemaError as exc:
                # Poison records are reported, never silently dropped, and never stop the agent.
                logger.error("skipping an undecodable record: %s", exc)

    def _end(self, conversation_id: str) -> None:
        self.streamer.forget(conversation_id)
        self.summarizer.forget(conversation_id)
        self.contexts.drop(conversation_id)
        self.routes.forget(conversation_id)

    async def _compose(self, turn: Turn) -> AsyncIterator[str]:
        prompt = self.builder.suggestion(self.contexts.get(turn.conversation_id))
        try:
            async for fragment in self.model.stream(prompt, request_id=turn.turn_id):
                yield fragment
        except LlmError as exc:
            self.metrics.llm_error(exc.kind)
            raise

    async def _send_turn(self, turn: Turn) -> None:
        turn.stamp("turn_out")
        await self._send(self.catalog.turns.name, turn)
        self.metrics.turn_emitted()

    async def _publish_suggestion(self, event: SuggestionEvent) -> None:
        self.metrics.suggestion_published(event)
        route = await self.routes.wait_for(event.conversation_id, timeout_s=ROUTE_WAIT_S)
        if route is None:
            logger.warning(
                "no gateway holds %s: suggestion %s %s not delivered",
                event.conversation_id,
                event.turn_id,
                event.kind,
            )
        else:
            await self._send(route.reply_topic, event)
        if event.kind != "delta":
            await self._send(self.catalog.suggestions.name, event)

    async def _publish_summary(self, summary: ConversationSummary) -> None:
        await self._send(self.catalog.summaries.name, summary)

    async def _send(self, topic: str, event: Event) -> None:
        await self.app.producer.send(topic, event.key, self.codec.encode(event), None, None, None)


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust configured for latency: nothing waits for a batch, a commit or a timer."""
    return {
        "id": f"{settings.topic_prefix}-worker",
        # Faust's aiokafka driver with its consumer waits fixed: see streams/transport.py.
        "broker": f"tpkafka://{settings.bootstrap_servers}",
        "store": "memory://",
        # Faust's own files go under our data dir, not `<id>-data` in whatever the cwd is.
        "datadir": str(settings.data_dir / "worker"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        # Sends leave at once instead of waiting for the consumed offset to commit.
        "stream_publish_on_commit": False,
        "producer_linger": 0.0,
        "producer_acks": 1,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 1.0,
        # After a rebalance, streams resume at once; the default waits 3 s for more members.
        "stream_recovery_delay": 0.0,
        "stream_wait_empty": False,
        # A dead worker's conversations move to another within seconds, not a minute.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 20.0,
        "web_enabled": False,
        "table_cleanup_interval": 60.0,
    }


def _now_ms() -> float:
    return time.time() * 1000.0
