"""The topic catalog: one topic per event stream, named from settings, with the right policies."""

from __future__ import annotations

import re

import pytest

from core.kafka.catalog import DAY_MS, HOUR_MS, TopicCatalog, TopicSpec
from core.settings import Settings
from schemas.events import EVENT_TYPES, LlmStatus, SessionRoute, SuggestionEvent

# Kafka's rule for topic names (kafka.common.internals.Topic).
LEGAL_TOPIC: re.Pattern[str] = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@pytest.fixture
def catalog() -> TopicCatalog:
    return TopicCatalog.from_settings(
        Settings(topic_prefix="prod_tp", partitions=12, replication_factor=3)
    )


def test_every_event_type_has_its_topic(catalog: TopicCatalog) -> None:
    shared = {spec.event_type.__name__ for spec in catalog.shared_topics}
    # The LLM's health goes only to the reps' gateways, on their reply topics.
    reply_only = {LlmStatus.__name__}

    assert sorted(shared | reply_only) == sorted(t.__name__ for t in EVENT_TYPES)
    assert not shared & reply_only


def test_names_come_from_the_prefix_and_are_legal(catalog: TopicCatalog) -> None:
    names = [spec.name for spec in catalog.shared_topics]

    assert names == [
        "prod_tp.audio",
        "prod_tp.transcripts",
        "prod_tp.turns",
        "prod_tp.suggestions",
        "prod_tp.routes",
        "prod_tp.summaries",
        "prod_tp.profiles",
    ]
    assert all(LEGAL_TOPIC.fullmatch(name) for name in names)


def test_partitions_and_replication_come_from_settings(catalog: TopicCatalog) -> None:
    assert {spec.partitions for spec in catalog.shared_topics} == {12}
    assert {spec.replication_factor for spec in catalog.shared_topics} == {3}


def test_latest_state_topics_are_compacted(catalog: TopicCatalog) -> None:
    compacted = {spec.name for spec in catalog.shared_topics if spec.cleanup_policy == "compact"}
    assert compacted == {"prod_tp.routes", "prod_tp.summaries", "prod_tp.profiles"}
    for spec in (catalog.routes, catalog.summaries, catalog.profiles):
        # Compaction keeps the latest record per conversation forever: no time limit.
        assert spec.config == {"cleanup.policy": "compact"}


def test_streams_are_deleted_after_their_retention(catalog: TopicCatalog) -> None:
    assert catalog.audio.config == {"cleanup.policy": "delete", "retention.ms": str(HOUR_MS)}
    for spec in (catalog.transcripts, catalog.turns, catalog.suggestions):
        assert spec.config == {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}


def test_routes_carry_session_routes(catalog: TopicCatalog) -> None:
    assert catalog.routes.event_type is SessionRoute


def test_reply_topic_per_gateway(catalog: TopicCatalog) -> None:
    reply = catalog.reply_topic("gw-eu-1")

    assert reply.name == "prod_tp.replies.gw-eu-1"
    assert reply.event_type is SuggestionEvent
    assert reply.partitions == 1
    assert reply.replication_factor == 3
    assert reply.config == {"cleanup.policy": "delete", "retention.ms": str(HOUR_MS)}
    assert reply not in catalog.shared_topics


def test_default_gateway_id_makes_a_legal_reply_topic() -> None:
    settings = Settings()
    reply = TopicCatalog.from_settings(settings).reply_topic(settings.gateway_id)
    assert LEGAL_TOPIC.fullmatch(reply.name)


def test_extra_config_joins_the_topic_config() -> None:
    spec = TopicSpec(
        name="t",
        event_type=SuggestionEvent,
        partitions=1,
        cleanup_policy="compact",
        extra_config={"min.compaction.lag.ms": "1000"},
    )
    assert spec.config == {"cleanup.policy": "compact", "min.compaction.lag.ms": "1000"}
