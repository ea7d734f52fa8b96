"""Audio byte offsets: what is held, handed to Kafka, and settled, in stream order."""

from __future__ import annotations

import pytest

from gateway.audio_ledger import AudioLedger


def test_settled_moves_over_a_run_of_settled_ranges_only() -> None:
    ledger = AudioLedger()
    assert ledger.receive(1000) == 0
    first = ledger.hand_on(600)
    second = ledger.hand_on(400)
    assert ledger.held == 0
    assert not ledger.settle(second)  # the first is still waiting: nothing moves
    assert ledger.settled == 0
    assert ledger.settle(first)
    assert ledger.settled == 1000


def test_bytes_held_by_the_framer_are_not_settled() -> None:
    ledger = AudioLedger()
    ledger.receive(700)
    ledger.settle(ledger.hand_on(600))
    assert (ledger.settled, ledger.held) == (600, 100)
    with pytest.raises(ValueError):
        ledger.refuse(50)  # held bytes come first; hand them on before refusing later ones
    ledger.settle(ledger.hand_on(100))
    refused = ledger.refuse(50)
    assert (refused.start, refused.size) == (700, 50)
    assert ledger.settled == 750


def test_a_stream_resumed_at_an_offset_counts_from_there() -> None:
    ledger = AudioLedger(offset=5000)
    ledger.receive(100)
    assert ledger.hand_on(100).start == 5000
    ledger.skip_to(8000)  # the client dropped 2900 bytes itself
    assert ledger.received == 8000
    assert ledger.settled == 5000  # the chunk before the gap is still in flight
    with pytest.raises(ValueError):
        ledger.skip_to(7000)  # never backwards


def test_a_range_cannot_hand_on_more_than_is_held() -> None:
    ledger = AudioLedger()
    ledger.receive(10)
    with pytest.raises(ValueError):
        ledger.hand_on(11)
