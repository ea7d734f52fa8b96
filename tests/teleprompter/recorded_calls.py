"""Recorded calls for the analysts' tools: made-up calls written with the real codec, on topics
of their own, and the environment that points the CLI at them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import confluent_kafka
from click.testing import CliRunner, Result
from confluent_kafka.admin import AdminClient

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicCatalog
from core.settings import Settings, load_settings
from schemas.codec import default_codec
from schemas.events import AudioChunk, Event, SuggestionEvent
from teleprompter.cli import main
from teleprompter.conversations.synthetic import ScriptedEvent, produce, recorded_call

PARTITIONS = 4
GATEWAY_ID = "gw-a"


@dataclass(kw_only=True)
class RecordedCalls:
    """Calls written to topics under `settings.topic_prefix`; `calls` holds their events."""

    settings: Settings
    calls: dict[str, list[ScriptedEvent]] = field(default_factory=dict)

    @property
    def catalog(self) -> TopicCatalog:
        return TopicCatalog.from_settings(self.settings)

    @property
    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "TELEPROMPTER_TOPIC_PREFIX": self.settings.topic_prefix,
            "TELEPROMPTER_PARTITIONS": str(self.settings.partitions),
        }

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Run `teleprompter ARGS` in this process against these topics."""
        return CliRunner().invoke(main, list(args), env={**self.env, **(env or {})})

    def record(
        self,
        conversation_id: str,
        *,
        minutes: float,
        ended_ago_s: float = 60.0,
        audio: bool = True,
        seed: int = 0,
    ) -> list[ScriptedEvent]:
        """Write a call of `minutes` that ended `ended_ago_s` ago."""
        end_ms = int(time.time() * 1000 - ended_ago_s * 1000)
        events = list(
            recorded_call(
                self.catalog,
                conversation_id=conversation_id,
                gateway_id=GATEWAY_ID,
                start_ms=end_ms - int(minutes * 60_000),
                duration_s=minutes * 60,
                audio=audio,
                seed=seed,
            )
        )
        produce(self.settings.bootstrap_servers, events, codec=default_codec())
        self.calls[conversation_id] = events
        return events

    def produce_raw(
        self, topic: str, value: bytes, *, key: bytes, partition: int, timestamp_ms: int
    ) -> None:
        """A record as bytes, on a partition of our choosing (for records a reader must skip)."""
        producer = confluent_kafka.Producer({"bootstrap.servers": self.settings.bootstrap_servers})
        producer.produce(topic, value=value, key=key, partition=partition, timestamp=timestamp_ms)
        assert producer.flush(30) == 0


def new_recorded_calls(bootstrap_servers: str) -> RecordedCalls:
    """Topics of their own (catalog and one reply topic) on the session's Kafka."""
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap_servers,
        topic_prefix=f"an{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
    )
    catalog = TopicCatalog.from_settings(settings)
    admin = TopicAdmin(bootstrap_servers=bootstrap_servers)
    report = asyncio.run(
        admin.ensure_topics([*catalog.shared_topics, catalog.reply_topic(GATEWAY_ID)])
    )
    assert report.ok, report.summary()
    return RecordedCalls(settings=settings)


def delete_topics(bootstrap_servers: str, *, prefix: str) -> None:
    """Delete the topics under `prefix` (a shared Kafka keeps what tests leave)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    names = [name for name in admin.list_topics(timeout=30).topics if name.startswith(prefix)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.result()


def shown_events(events: Sequence[ScriptedEvent]) -> list[Event]:
    """The events a timeline shows one by one: not audio chunks nor token deltas."""
    return [
        s.event
        for s in events
        if not isinstance(s.event, AudioChunk)
        and not (isinstance(s.event, SuggestionEvent) and s.event.kind == "delta")
    ]
