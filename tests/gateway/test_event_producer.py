"""The gateway's producer: events to Kafka, and failures named by what went wrong."""

from __future__ import annotations

import pytest

from gateway.event_producer import EventProducer, ProduceError
from schemas.codec import default_codec
from schemas.events import TranscriptSegment


async def test_an_event_bigger_than_kafka_takes_is_refused_as_too_large(
    bootstrap_servers: str, unique_name: str
) -> None:
    producer = EventProducer(bootstrap_servers=bootstrap_servers, codec=default_codec())
    await producer.start()
    try:
        event = TranscriptSegment(
            conversation_id="c", session_id="s", segment_id="s:0", text="x" * 1_100_000
        )
        with pytest.raises(ProduceError) as caught:
            producer.produce(unique_name, event)
        assert (caught.value.failure, caught.value.retriable) == ("too_large", False)
    finally:
        await producer.close(timeout_s=5.0)


async def test_an_event_the_codec_refuses_is_an_encode_failure(
    bootstrap_servers: str, unique_name: str
) -> None:
    producer = EventProducer(bootstrap_servers=bootstrap_servers, codec=default_codec())
    await producer.start()
    try:
        event = TranscriptSegment(
            conversation_id="c", session_id="s", segment_id="s:0", text="caf\ud800"
        )
        with pytest.raises(ProduceError) as caught:
            producer.produce(unique_name, event)
        assert caught.value.failure == "encode"
    finally:
        await producer.close(timeout_s=5.0)
