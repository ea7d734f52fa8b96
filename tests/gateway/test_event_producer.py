"""The gateway's producer: events to Kafka, and failures named by what went wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.event_producer import EventProducer, ProduceError
from schemas.codec import default_codec
from schemas.events import TranscriptSegment


@pytest.fixture
async def producer(bootstrap_servers: str) -> AsyncIterator[EventProducer]:
    running = EventProducer(bootstrap_servers=bootstrap_servers, codec=default_codec())
    await running.start()
    try:
        yield running
    finally:
        await running.close(timeout_s=5.0)


def segment(text: str) -> TranscriptSegment:
    return TranscriptSegment(conversation_id="c", session_id="s", segment_id="s:0", text=text)


async def test_an_event_bigger_than_kafka_takes_is_refused_as_too_large(
    producer: EventProducer, unique_name: str
) -> None:
    with pytest.raises(ProduceError) as caught:
        producer.produce(unique_name, segment("x" * 1_100_000))
    assert (caught.value.failure, caught.value.retriable) == ("too_large", False)


async def test_an_event_the_codec_refuses_is_an_encode_failure(
    producer: EventProducer, unique_name: str
) -> None:
    with pytest.raises(ProduceError) as caught:
        producer.produce(unique_name, segment("caf\ud800"))
    assert caught.value.failure == "encode"
