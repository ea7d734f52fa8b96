"""The reader: offsets by time, key filtering, undecodable records reported, following a
partition, and no consumer group or commit left behind, on either broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from core.kafka.admin import TopicAdmin
from core.kafka.catalog import TopicSpec
from schemas.codec import default_codec
from schemas.events import Turn
from teleprompter.event_log.reader import (
    EventLogError,
    EventLogReader,
    Recorded,
    RecordedEvent,
    UndecodableRecord,
    UnknownTopicError,
)

MINUTE_MS = 60_000


@pytest.fixture
def topic(bootstrap_servers: str, unique_name: str) -> str:
    asyncio.run(
        TopicAdmin(bootstrap_servers=bootstrap_servers).ensure_topics(
            [TopicSpec(name=unique_name, event_type=Turn, partitions=2)]
        )
    )
    return unique_name


@pytest.fixture
def reader(bootstrap_servers: str) -> Iterator[EventLogReader]:
    with EventLogReader(bootstrap_servers=bootstrap_servers, codec=default_codec()) as opened:
        yield opened


def produce_turns(
    bootstrap_servers: str, topic: str, stamps: list[int], *, key: str = "c1", partition: int = 0
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap_servers})
    for i, stamp in enumerate(stamps):
        turn = Turn(conversation_id=key, event_time_ms=stamp, turn_id=f"t{i}", text=f"turn {i}")
        producer.produce(
            topic,
            value=default_codec().encode(turn),
            key=turn.key,
            partition=partition,
            timestamp=stamp,
        )
    assert producer.flush(30) == 0


def read_all(reader: EventLogReader) -> list[Recorded]:
    records: list[Recorded] = []
    deadline = time.monotonic() + 30
    while not reader.finished:
        assert time.monotonic() < deadline, "the bounded read did not finish"
        records += reader.poll()
    return records


def turn_ids(records: list[Recorded]) -> list[str]:
    return [
        r.event.turn_id
        for r in records
        if isinstance(r, RecordedEvent) and isinstance(r.event, Turn)
    ]


def test_a_time_range_reads_only_the_offsets_stamped_in_it(
    bootstrap_servers: str, topic: str, reader: EventLogReader
) -> None:
    base = int(time.time() * 1000) - 20 * MINUTE_MS
    produce_turns(bootstrap_servers, topic, [base + i * MINUTE_MS for i in range(10)])

    ranges = reader.ranges(
        [(topic, 0)], from_ms=base + 3 * MINUTE_MS, to_ms=base + 6 * MINUTE_MS, slack_ms=0
    )

    assert [(r.start, r.end) for r in ranges] == [(3, 6)]
    reader.assign(ranges)
    records = read_all(reader)
    assert turn_ids(records) == ["t3", "t4", "t5"]
    assert [(r.topic, r.partition, r.offset) for r in records] == [(topic, 0, o) for o in (3, 4, 5)]
    assert all(r.timestamp_ms == base + r.offset * MINUTE_MS for r in records)


def test_without_a_range_it_reads_everything_there_is_now(
    bootstrap_servers: str, topic: str, reader: EventLogReader
) -> None:
    base = int(time.time() * 1000)
    produce_turns(bootstrap_servers, topic, [base, base + 1, base + 2])

    ranges = reader.ranges([(topic, 0), (topic, 1)])

    assert [(r.partition, r.start, r.end) for r in ranges] == [(0, 0, 3), (1, 0, 0)]
    reader.assign(ranges)
    assert turn_ids(read_all(reader)) == ["t0", "t1", "t2"]
    assert reader.offsets_read == 3


def test_keeps_only_the_keys_asked_for(bootstrap_servers: str, topic: str) -> None:
    now = int(time.time() * 1000)
    produce_turns(bootstrap_servers, topic, [now, now + 1], key="wanted")
    produce_turns(bootstrap_servers, topic, [now + 2, now + 3], key="other")

    with EventLogReader(
        bootstrap_servers=bootstrap_servers, codec=default_codec(), keys=[b"wanted"]
    ) as reader:
        reader.assign(reader.ranges([(topic, 0)]))
        records = read_all(reader)

    assert [r.event.conversation_id for r in records if isinstance(r, RecordedEvent)] == [
        "wanted",
        "wanted",
    ]
    assert reader.offsets_read == 4  # the others were read past, not returned


def test_an_undecodable_record_is_reported_not_raised(
    bootstrap_servers: str, topic: str, reader: EventLogReader
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(topic, value=b"not avro", key=b"c1", partition=0)
    assert producer.flush(30) == 0
    produce_turns(bootstrap_servers, topic, [int(time.time() * 1000)])

    reader.assign(reader.ranges([(topic, 0)]))
    records = read_all(reader)

    assert isinstance(records[0], UndecodableRecord)
    assert records[0].key == b"c1" and records[0].offset == 0
    assert "not an Avro single-object record" in records[0].reason
    assert turn_ids(records) == ["t0"]


def test_following_reads_new_records_until_bound_at_the_end(
    bootstrap_servers: str, topic: str, reader: EventLogReader
) -> None:
    now = int(time.time() * 1000)
    produce_turns(bootstrap_servers, topic, [now])
    reader.assign(reader.ranges([(topic, 0)], follow=True))
    seen: list[Recorded] = []
    deadline = time.monotonic() + 30
    while not seen:
        assert time.monotonic() < deadline
        seen += reader.poll(timeout_s=0.2)

    produce_turns(bootstrap_servers, topic, [now + 1, now + 2])
    assert not reader.finished  # open-ended: a live partition is never done by itself
    reader.bound_at_end()
    seen += read_all(reader)

    assert turn_ids(seen) == ["t0", "t0", "t1"]


def test_an_unknown_topic_is_named(reader: EventLogReader, unique_name: str) -> None:
    with pytest.raises(UnknownTopicError, match=f"no topic {unique_name}-missing"):
        reader.partition_counts([f"{unique_name}-missing"])


def test_reading_forms_no_consumer_group_and_commits_nothing(
    bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    produce_turns(bootstrap_servers, topic, [int(time.time() * 1000)])
    group = f"{unique_name}-group"
    with EventLogReader(
        bootstrap_servers=bootstrap_servers,
        codec=default_codec(),
        client_config={"group.id": group},
    ) as reader:
        reader.assign(reader.ranges([(topic, 0)]))
        assert turn_ids(read_all(reader)) == ["t0"]

    listed = AdminClient({"bootstrap.servers": bootstrap_servers}).list_consumer_groups()
    groups = {g.group_id for g in listed.result(timeout=30).valid}
    assert group not in groups


def test_an_unreachable_kafka_is_an_error_naming_it() -> None:
    with (
        EventLogReader(
            bootstrap_servers="127.0.0.1:1", codec=default_codec(), timeout_s=1.0
        ) as reader,
        pytest.raises(EventLogError, match=r"Kafka at 127\.0\.0\.1:1 did not answer within 1 s"),
    ):
        reader.topics()
