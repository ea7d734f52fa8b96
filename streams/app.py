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
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Final, TypeVar, cast

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
    LlmState,
    LlmStatus,
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
from streams.ledger import TurnLedger
from streams.llm import LlmError, SuggestionModel
from streams.llm_health import LlmHealth
from streams.observability.metrics import WorkerMetrics
from streams.prompt import Prompt, PromptBuilder
from streams.routes import RouteBook
from streams.speculation import Speculator
from streams.state import ConversationTable
from streams.suggester import SuggestionStreamer
from streams.summarizer import RollingSummarizer

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

IDLE_SWEEP_INTERVAL_S: Final = 30.0
ROUTE_WAIT_S: Final = 2.0
# An ended conversation's dedupe state outlives it by this long: far beyond any redelivery.
ENDED_STATE_TTL_S: Final = 600.0
# A turn the broker did not take is sent again after this long, while this worker owns it.
TURN_RESEND_BACKOFF_S: Final = 1.0
# Table writes queued for the producer before Faust stops every agent until they are sent.
# Faust's 100 is reached under load (hundreds of writes a second from many tasks), and its
# wait then lasts until 100 more sends, 0.1-0.8 s with no record processed (500 sessions,
# docs/benchmarks.md). Values are bounded (a few KiB each), so this bounds the bytes too.
PRODUCER_BUFFER_MESSAGES: Final = 2000
# Turns made and not yet taken by this worker's suggester; each holds at most a few KiB of
# text (MAX_PENDING_CHARS), so this bounds the queue to about a MiB.
MAX_HANDED_TURNS: Final = 256


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
        self.app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
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
            # Changelogs are as durable as the catalog's topics (replication: faust_settings).
            "extra_topic_configs": {"min.insync.replicas": str(settings.min_insync_replicas)},
        }
        self.routes = RouteBook(self.app.Table("routes", **table_args))
        self.contexts = ContextStore(
            self.app.Table("contexts", **table_args), window_s=settings.context_window_s
        )
        self.worker_id = worker_id(settings)
        # Turn-making and answering state, durable so that a crash neither repeats nor loses
        # a turn: see docs/reliability.md ("Workers").
        self.coalescer = TurnCoalescer(pause_ms=settings.turn_pause_ms)
        self.coalescer_table = ConversationTable(self.app.Table("coalescer", **table_args))
        self.ledger = TurnLedger(ConversationTable(self.app.Table("turns", **table_args)))
        self.health = LlmHealth(probe=self.model.probe, on_change=self._tell_llm_state)
        self.gate = AdmissionGate(
            max_active=settings.llm_max_streams, max_waiting=settings.llm_max_waiting
        )
        # The LLM starts on words waiting for the turn pause: streams/speculation.py.
        self.speculator = (
            Speculator(
                gate=self.gate,
                prompt_for=self._suggestion_prompt,
                stream=self._stream_prompt,
                waiting=self.coalescer.waiting_segments,
                pause_ms=settings.speculation_pause_ms,
                on_end=self.metrics.speculation_ended,
            )
            if settings.speculative_suggestions
            else None
        )
        self.streamer = SuggestionStreamer(
            gate=self.gate,
            compose=self._compose,
            publish=self._publish_suggestion,
            redeliver=self._redeliver_suggestion,
            ledger=self.ledger,
            health=self.health,
            answer_window_s=settings.turn_recovery_window_s,
            delta_batch_s=settings.suggestion_batch_ms / 1000.0,
            speculator=self.speculator,
        )
        self.summarizer = RollingSummarizer(
            builder=self.builder,
            complete=self._complete_summary,
            publish=self._publish_summary,
        )
        self._pause_changed = asyncio.Event()
        self._known_partitions: set[Any] = set()
        self._speech: SpeechRecognitionEngine | None = None
        self._speech_loaded = asyncio.Event()

        self._agent(self.catalog.audio.name, "transcribe", self._transcribe)
        self._agent(self.catalog.transcripts.name, "coalesce", self._coalesce)
        self._agent(self.catalog.turns.name, "suggest", self._suggest)
        self._agent(self.catalog.routes.name, "track-routes", self._track_routes)
        self._agent(self.catalog.profiles.name, "track-profiles", self._track_profiles)
        self._agent(self.catalog.summaries.name, "track-summaries", self._track_summaries)
        self.app.task(self._pause_clock)
        self.app.task(self._answer_made_turns)
        self.app.task(self._run_speech_recognition)
        self.app.timer(IDLE_SWEEP_INTERVAL_S)(self._sweep_idle)
        # mode's Signal stubs reject any async receiver, though it awaits them at runtime.
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self._recoveries: set[asyncio.Task[None]] = set()
        self._resends: dict[str, asyncio.Task[None]] = {}  # conversation id -> its re-send
        # Turns handed to the producer and not yet confirmed, so that none is sent twice.
        self._turns_sent: set[str] = set()
        # Turns made here, on their way to this worker's suggester (_hand_over).
        self._made_turns: asyncio.Queue[tuple[Turn, int]] = asyncio.Queue(MAX_HANDED_TURNS)

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
        async for segment, partition, offset in self._positioned(stream, TranscriptSegment):
            segment.stamp("worker_in")
            cid = segment.conversation_id
            self._restore_coalescer(cid)
            if not self.coalescer.admit(segment, partition=partition, offset=offset):
                logger.info("segment %s of %s was taken before: skipped", segment.segment_id, cid)
                continue
            if segment.end_of_conversation:
                self.coalescer.accept(segment, now_ms=_now_ms())
                self._save_coalescer(cid)
                await self._end(cid, partition=partition)
                continue
            if segment.final and segment.text.strip():
                context = self.contexts.record(segment)  # a revision replaces its segment's text
                self.contexts.save(cid)
                self.summarizer.consider(context)
            turn = self.coalescer.accept(segment, now_ms=_now_ms())
            if self.speculator is not None:
                self.speculator.heard(segment)
            if turn is not None:
                await self._send_turns(cid)
                continue
            if segment.final:
                # A partial is not written: it only moves the offset and the pause deadline,
                # and a partial taken again after a crash moves them again. The bench's
                # customer sends ~5 per sentence, each a write of the whole snapshot.
                self._save_coalescer(cid)
            self._pause_changed.set()

    async def _suggest(self, stream: Any) -> None:
        async for turn, partition, offset in self._positioned(stream, Turn):
            if not await self.streamer.submit(turn, partition=partition, offset=offset):
                self.metrics.turn_skipped()

    async def _track_routes(self, stream: Any) -> None:
        async for route in self._decoded(stream, SessionRoute):
            if self.routes.update(route):
                await self.streamer.resume(route.conversation_id)
                if self.health.state == "degraded":
                    await self._send_llm_status(route.conversation_id)

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
                await self._send_turns(turn.conversation_id)

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
            revision=recognized.revision,
        )
        if recognized.speech_end_wall_ms is not None:
            segment.trace["speech_end"] = recognized.speech_end_wall_ms
        segment.trace["asr_out"] = recognized.produced_wall_ms
        await self._send(self.catalog.transcripts.name, segment)
        route = self.routes.get(segment.conversation_id)
        if route is not None:
            await self._send(route.reply_topic, segment)

    async def _sweep_idle(self) -> None:
        """Ends conversations that went quiet without saying goodbye, through their own stream;
        forgets the dedupe state of conversations that ended long ago."""
        for cid in self.contexts.idle(idle_s=self.settings.conversation_idle_s):
            logger.info(
                "conversation %s idle for %.0f s: ending it", cid, self.settings.conversation_idle_s
            )
            await self._send(
                self.catalog.transcripts.name,
                TranscriptSegment(
                    conversation_id=cid,
                    session_id="worker",
                    # Unique, or a second idle end would be taken for a resend of the first.
                    segment_id=f"idle-{int(_now_ms())}",
                    text="",
                    end_of_conversation=True,
                ),
            )
        owned = self._owned_partitions()
        for cid in self.ledger.sweep(owned, ended_before_ms=_now_ms() - ENDED_STATE_TTL_S * 1000):
            partition = self.coalescer.partition_of(cid)
            self.coalescer.forget([cid])
            if partition is not None:
                self.coalescer_table.delete(cid, partition=partition)

    # --- rebalances: what a new owner of a partition does -------------------------------------
    async def _on_assigned(self, sender: Any, assigned: Any = (), **_: Any) -> None:
        """Forget the in-memory state of conversations whose partitions went to another worker;
        their open turns stay open in the table, and the new owner ends them."""
        topic = self.catalog.transcripts.name
        kept = {tp.partition for tp in assigned if tp.topic == topic}
        lost = {tp.partition for tp in self._known_partitions if tp.topic == topic} - kept
        self._known_partitions = set(assigned)
        if not lost:
            return
        if self.speculator is not None:
            self.speculator.forget(self.coalescer.in_partitions(lost))
        self.coalescer.forget(self.coalescer.in_partitions(lost))
        for cid in list(self.streamer.conversations()):
            if self.ledger.partition_of(cid) in lost:
                self.streamer.forget(cid)

    async def _on_rebalance_complete(self, sender: Any, **_: Any) -> None:
        # Off the rebalance path: ending a turn may wait for its route.
        task = asyncio.get_running_loop().create_task(self._take_over(self._owned_partitions()))
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _take_over(self, owned: set[int]) -> None:
        """After recovery: finish what a lost owner of these partitions left undone."""
        try:
            for cid, snapshot in list(self.coalescer_table.owned(owned)):
                if cid not in self.coalescer:
                    self.coalescer.restore(cid, snapshot)
                # Kept partitions too: a send that failed while Kafka moved is still owed.
                await self._resend_outbox(cid)
            self._pause_changed.set()
            for orphan in self.ledger.open_turns(owned):
                await self.streamer.recover(orphan)
        except Exception:
            logger.exception("taking over partitions %s failed", sorted(owned))

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        """The consumer has stopped: stop in-flight streams before the producer's last flush.

        Their turns stay open in the table: whoever owns the partitions next ends them.
        """
        for resend in list(self._resends.values()):
            resend.cancel()  # the outbox is durable: the next owner sends it
        await self.streamer.close()
        if self.speculator is not None:
            await self.speculator.close()
        await self.summarizer.close()
        await self.health.close()
        await self.model.close()
        if self._speech is not None:
            # Speech in progress is finished and published before the producer's last flush.
            await self._speech.close(flush_timeout_s=2.0)

    # --- helpers --------------------------------------------------------------------------
    def _agent(self, topic: str, name: str, fun: Any) -> None:
        self.app.agent(self._topics[topic], name=name)(fun)

    async def _decoded(self, stream: Any, event_type: type[E]) -> AsyncIterator[E]:
        async for event, _partition, _offset in self._positioned(stream, event_type):
            yield event

    async def _positioned(
        self, stream: Any, event_type: type[E]
    ) -> AsyncIterator[tuple[E, int, int]]:
        """Each record decoded, with its partition and offset."""
        async for message in stream.events():
            record = message.message
            try:
                event = self.codec.decode_as(
                    message.value, event_type, topic=record.topic, offset=record.offset
                )
            except SchemaError as exc:
                # Poison records are reported, never silently dropped, and never stop the agent.
                logger.error("skipping an undecodable record: %s", exc)
                continue
            yield event, record.partition, record.offset

    async def _end(self, conversation_id: str, *, partition: int) -> None:
        if self.speculator is not None:
            self.speculator.drop(conversation_id, outcome="ended")
        await self.streamer.end(conversation_id)
        self.ledger.mark_ended(conversation_id, partition=partition, now_ms=_now_ms())
        self.summarizer.forget(conversation_id)
        self.contexts.drop(conversation_id)
        self.routes.forget(conversation_id)

    def _restore_coalescer(self, conversation_id: str) -> None:
        if conversation_id not in self.coalescer:
            snapshot = self.coalescer_table.get(conversation_id)
            if snapshot is not None:
                self.coalescer.restore(conversation_id, snapshot)

    def _save_coalescer(self, conversation_id: str) -> asyncio.Future[Any] | None:
        snapshot = self.coalescer.snapshot(conversation_id)
        partition = self.coalescer.partition_of(conversation_id)
        if snapshot is None or partition is None:
            return None
        return self.coalescer_table.put(conversation_id, snapshot, partition=partition)

    async def _send_turns(self, conversation_id: str) -> None:
        """The conversation's new turns to the turns topic, once the state naming them is durable.

        Durable first: a turn must never be on the topic while a crash could still make the
        coalescer re-make its segments into a different turn. Each turn leaves the outbox once
        the broker has it; until then a new owner re-sends it (the suggester skips repeats).
        The agent does not wait for the broker: it goes on with the next record while the state
        travels, and the turns follow it from the write's callback. One agent serves every
        conversation of this worker, so a wait here would put a broker round trip per turn in
        series (at 50 ms a round trip on a loaded machine, 20 turns a second were its ceiling).
        """
        saved = self._save_coalescer(conversation_id)
        if saved is None:
            self._emit_turns(conversation_id)
        else:
            saved.add_done_callback(functools.partial(self._on_state_stored, conversation_id))

    def _on_state_stored(self, conversation_id: str, saved: asyncio.Future[Any]) -> None:
        if not saved.cancelled() and saved.exception() is not None:
            logger.warning("turn state of %s not stored: %s", conversation_id, saved.exception())
        self._emit_turns(conversation_id)

    def _emit_turns(self, conversation_id: str) -> None:
        # Faust's send buffer keeps the order of these sends (and of the state writes).
        topic = self._topics[self.catalog.turns.name]
        for turn in self.coalescer.outbox(conversation_id):
            if turn.turn_id in self._turns_sent:
                continue  # on its way: sent by an earlier call, not yet confirmed
            self._turns_sent.add(turn.turn_id)
            turn.stamp("turn_out")
            stored = topic.send_soon(key=turn.key, value=self.codec.encode(turn))
            stored.add_done_callback(
                functools.partial(self._on_turn_stored, conversation_id, turn.turn_id)
            )
            self._hand_over(turn)

    def _hand_over(self, turn: Turn) -> None:
        """The turn to this worker's suggester at once, not through the turns topic.

        The topic still carries it (for a new owner after a crash), and when it comes back the
        suggester skips it as taken; a full queue only means the topic's copy is answered.
        """
        partition = self.coalescer.partition_of(turn.conversation_id)
        if partition is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._made_turns.put_nowait((replace(turn, trace=dict(turn.trace)), partition))

    async def _answer_made_turns(self) -> None:
        """Takes the turns this worker made, one at a time and in order, as the agent does."""
        while True:
            turn, partition = await self._made_turns.get()
            if partition not in self._owned_partitions():
                continue  # moved away meanwhile: its new owner answers the topic's copy
            try:
                taken = await self.streamer.submit(turn, partition=partition)
            except Exception:
                # This task serves every conversation: one failure must not stop it.
                logger.exception(
                    "taking turn %s of %s failed; the turns topic's copy will be answered",
                    turn.turn_id,
                    turn.conversation_id,
                )
                continue
            if not taken:
                self.metrics.turn_skipped()

    def _on_turn_stored(
        self, conversation_id: str, turn_id: str, done: asyncio.Future[Any]
    ) -> None:
        self._turns_sent.discard(turn_id)
        if done.cancelled() or done.exception() is not None:
            # It stays in the outbox: sent again by this worker while it owns the conversation,
            # else by the partition's next owner.
            if conversation_id not in self._resends:
                task = asyncio.get_running_loop().create_task(self._resend(conversation_id))
                self._resends[conversation_id] = task
                task.add_done_callback(lambda _: self._resends.pop(conversation_id, None))
            return
        self.coalescer.delivered(conversation_id, turn_id)
        self._save_coalescer(conversation_id)
        self.metrics.turn_emitted()

    async def _resend(self, conversation_id: str) -> None:
        await asyncio.sleep(TURN_RESEND_BACKOFF_S)
        partition = self.coalescer.partition_of(conversation_id)
        if partition is None or partition not in self._owned_partitions():
            return
        await self._resend_outbox(conversation_id)

    async def _resend_outbox(self, conversation_id: str) -> None:
        """The conversation's turns not yet confirmed by the broker, sent again."""
        if self.coalescer.outbox(conversation_id):
            logger.info("re-sending the unconfirmed turns of %s", conversation_id)
            await self._send_turns(conversation_id)

    def _owned_partitions(self) -> set[int]:
        topic = self.catalog.transcripts.name
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    def _compose(self, turn: Turn) -> AsyncIterator[str]:
        return self._stream_prompt(self._suggestion_prompt(turn.conversation_id), turn.turn_id)

    def _suggestion_prompt(self, conversation_id: str) -> Prompt:
        return self.builder.suggestion(self.contexts.get(conversation_id))

    async def _stream_prompt(self, prompt: Prompt, request_id: str) -> AsyncIterator[str]:
        try:
            async for fragment in self.model.stream(prompt, request_id=request_id):
                yield fragment
        except LlmError as exc:
            self.metrics.llm_error(exc.kind)
            raise

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

    async def _redeliver_suggestion(self, event: SuggestionEvent) -> None:
        """Again to the conversation's client only: not an outcome (the suggestions topic and
        the metrics have it already)."""
        route = self.routes.get(event.conversation_id)
        if route is not None:
            await self._send(route.reply_topic, event)

    async def _publish_summary(self, summary: ConversationSummary) -> None:
        await self._send(self.catalog.summaries.name, summary)

    async def _complete_summary(self, prompt: Prompt) -> str:
        try:
            summary = await self.model.complete(prompt)
        except LlmError as exc:
            self.health.failed(str(exc))
            raise
        self.health.succeeded()
        return summary

    # --- the LLM's state, told to the reps ----------------------------------------------------
    async def _tell_llm_state(self, state: LlmState, reason: str) -> None:
        for cid in self.coalescer.in_partitions(self._owned_partitions()):
            await self._send_llm_status(cid)

    async def _send_llm_status(self, conversation_id: str) -> None:
        route = self.routes.get(conversation_id)
        if route is None or not route.connected:
            return
        status = LlmStatus(
            conversation_id=conversation_id,
            worker_id=self.worker_id,
            llm=self.health.state,
            reason=self.health.reason,
        )
        await self._send(route.reply_topic, status)

    async def _send(self, topic: str, event: Event) -> asyncio.Future[Any]:
        """Hand `event` to the producer; the returned future resolves once the broker has it."""
        stored = await self.app.producer.send(
            topic, event.key, self.codec.encode(event), None, None, None
        )
        # Faust types it as an awaitable; aiokafka's driver returns its delivery future.
        return cast("asyncio.Future[Any]", stored)


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust configured for latency: nothing waits for a batch, a commit or a timer."""
    return {
        "id": f"{settings.topic_prefix}-worker",
        # Names this worker in the group's member list (`groups describe`).
        "broker_client_id": f"teleprompter-{worker_id(settings)}",
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
        # Acknowledged once every in-sync replica has it (idempotent: see streams/transport.py).
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        # At least once: a crash re-reads what was consumed since the last commit, and the
        # coalescer and suggester skip what they had taken (docs/reliability.md).
        "broker_commit_interval": settings.worker_commit_interval_s,
        # After a rebalance, streams resume at once; the default waits 3 s for more members.
        "stream_recovery_delay": 0.0,
        "stream_wait_empty": False,
        # A dead worker's conversations move to another within seconds, not a minute: the
        # session timeout is the failure detector (docs/reliability.md has the trade-off).
        "broker_session_timeout": settings.worker_session_timeout_s,
        "broker_heartbeat_interval": settings.worker_session_timeout_s / 4,
        "broker_rebalance_timeout": 20.0,
        # Static membership: a restarted worker takes its partitions back at once, no rebalance.
        "consumer_group_instance_id": settings.worker_instance_id,
        "stream_processing_timeout": settings.worker_stall_timeout_s,
        "web_enabled": False,
        "table_cleanup_interval": 60.0,
    }


def worker_id(settings: Settings) -> str:
    """This worker's name: its static member id, else host and process id."""
    return settings.worker_instance_id or f"{socket.gethostname()}-{os.getpid()}"


def _now_ms() -> float:
    return time.time() * 1000.0
