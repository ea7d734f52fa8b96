"""Measures the codec on the hot path: µs to encode and decode one token-delta SuggestionEvent.

Run: `python -m schemas.bench_codec [--number 200000]`.
"""

from __future__ import annotations

import argparse
import logging
import timeit

from schemas.codec import default_codec
from schemas.events import SuggestionEvent, now_ms

logger = logging.getLogger(__name__)


def _typical_delta() -> SuggestionEvent:
    """A delta as the inference stage emits it: a few words, the text so far, a full trace."""
    start = now_ms()
    return SuggestionEvent(
        conversation_id="conv-7f3a9c2e-5b1d-4c8e-9a0f-1e2d3c4b5a69",
        turn_id="turn-000042",
        kind="delta",
        seq=17,
        text=" happy to",
        full_text="I understand the concern about pricing, and I'm happy to",
        trace={
            "gateway_in": start,
            "transcribed": start + 180.0,
            "turn": start + 420.0,
            "llm_first_token": start + 690.0,
            "delta_out": start + 905.0,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200_000, help="calls per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="measurements; the best is shown")
    args = parser.parse_args()
    number: int = args.number
    repeat: int = args.repeat

    codec = default_codec()
    event = _typical_delta()
    data = codec.encode(event)
    assert codec.decode(data) == event, "round trip changed the event"

    def best_us(stmt: str) -> float:
        namespace = {
            "codec": codec,
            "event": event,
            "data": data,
            "SuggestionEvent": SuggestionEvent,
        }
        times = timeit.repeat(stmt, globals=namespace, number=number, repeat=repeat)
        return min(times) / number * 1e6

    encode_us = best_us("codec.encode(event)")
    decode_us = best_us("codec.decode(data)")
    decode_as_us = best_us("codec.decode_as(data, SuggestionEvent)")
    print(f"SuggestionEvent delta, {len(data)} bytes on the wire (best of {repeat}):")
    print(f"  encode     {encode_us:6.2f} µs")
    print(f"  decode     {decode_us:6.2f} µs")
    print(f"  decode_as  {decode_as_us:6.2f} µs")
    print(f"  round trip {encode_us + decode_us:6.2f} µs")


if __name__ == "__main__":
    main()
