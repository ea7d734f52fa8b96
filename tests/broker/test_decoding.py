"""Bounded decoding: impossible lengths and item budgets are refused before allocating."""

from __future__ import annotations

import struct

import pytest
from aiokafka.protocol.types import Array, CompactArray, CompactString, Int32, Schema, String

from broker.decoding import RequestTooComplexError, decode_body
from broker.errors import MalformedRequestError

NAMES = Schema(("names", Array(String("utf-8"))))
PAIRS = Schema(("outer", Array(Schema(("inner", Array(Int32))))))


def test_a_count_the_bytes_left_cannot_hold_is_refused_before_allocating() -> None:
    with pytest.raises(MalformedRequestError, match="cannot fit"):
        decode_body(NAMES, struct.pack(">i", 0x7FFF_FFFF) + b"\x00\x01a", 0, max_items=10**9)


def test_compact_counts_and_lengths_are_checked_too() -> None:
    compact = Schema(("names", CompactArray(CompactString("utf-8"))))
    with pytest.raises(MalformedRequestError, match="cannot fit"):
        decode_body(compact, b"\xff\xff\xff\xff\x07", 0, max_items=10**9)
    with pytest.raises(MalformedRequestError, match="runs past the end"):
        decode_body(compact, b"\x02\x7f", 0, max_items=10**9)


def test_items_count_against_one_budget_for_the_whole_request() -> None:
    inner = struct.pack(">i", 3) + struct.pack(">iii", 1, 2, 3)
    body = struct.pack(">i", 2) + inner * 2  # 2 outer + 6 inner items
    assert decode_body(PAIRS, body, 0, max_items=8) == {
        "outer": [{"inner": [1, 2, 3]}, {"inner": [1, 2, 3]}]
    }
    with pytest.raises(RequestTooComplexError) as over:
        decode_body(PAIRS, body, 0, max_items=7)
    assert over.value.needed == 8


def test_null_arrays_and_strings_stay_null() -> None:
    nullable = Schema(("names", Array(String("utf-8"))), ("name", String("utf-8")))
    assert decode_body(nullable, struct.pack(">ih", -1, -1), 0, max_items=1) == {
        "names": None,
        "name": None,
    }
