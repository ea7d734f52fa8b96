"""The per-conversation budget, on a clock the tests turn by hand."""

from __future__ import annotations

from gateway.rate_limit import ConversationRateLimit, ConversationRateLimits
from tests.manual_clock import ManualClock


def test_a_frame_passes_only_if_both_messages_and_bytes_allow_it() -> None:
    clock = ManualClock(now=100.0)
    limit = ConversationRateLimit(
        messages_per_s=2.0, burst_messages=3, bytes_per_s=100.0, burst_bytes=1000, clock=clock
    )
    assert limit.admit(900)
    assert not limit.admit(200)  # a message left, but not the bytes
    assert limit.admit(100)
    assert limit.admit(0)
    assert not limit.admit(0)  # bytes left, but no message
    clock.now += 0.5
    assert limit.admit(50)


def test_a_refused_frame_costs_nothing() -> None:
    clock = ManualClock(now=100.0)
    limit = ConversationRateLimit(
        messages_per_s=1.0, burst_messages=10, bytes_per_s=1.0, burst_bytes=100, clock=clock
    )
    for _ in range(50):
        assert not limit.admit(101)
    assert limit.admit(100)  # the refusals spent neither messages nor bytes


def test_a_conversations_connections_share_one_budget_until_the_last_one_ends() -> None:
    limits = ConversationRateLimits(
        messages_per_s=1.0,
        burst_messages=2,
        bytes_per_s=1000.0,
        burst_bytes=1000,
        clock=ManualClock(now=100.0),
    )
    socket = limits.hold("c1")
    call = limits.hold("c1")  # a phone call's media stream of the same conversation
    assert call is socket
    assert limits.hold("c2") is not socket
    assert socket.admit(1) and call.admit(1)
    assert not socket.admit(1)  # the call spent the socket's budget too
    limits.release("c1")
    assert limits.hold("c1") is call  # still held by one: the same, spent budget
    limits.release("c1")
    limits.release("c1")
    assert len(limits) == 1  # only c2 is left
    assert limits.hold("c1").admit(1)  # a conversation back later starts afresh
