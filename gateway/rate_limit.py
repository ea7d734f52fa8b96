"""Per-conversation rate limits: token buckets in messages per second and bytes per second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.settings import Settings
from core.token_bucket import TokenBucket

logger = logging.getLogger(__name__)


class ConversationRateLimit:
    """One conversation's budget on one gateway, shared by all of its sockets.

    A frame is admitted only if both buckets can pay for it; a refused frame costs nothing,
    so a client that backs off is served again as soon as the buckets refill.
    """

    def __init__(
        self,
        *,
        messages_per_s: float,
        burst_messages: int,
        bytes_per_s: float,
        burst_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.messages = TokenBucket(rate_per_s=messages_per_s, burst=burst_messages, clock=clock)
        self.bytes = TokenBucket(rate_per_s=bytes_per_s, burst=burst_bytes, clock=clock)

    def admit(self, size_bytes: int) -> bool:
        """Whether one frame of `size_bytes` may pass now (and if so, pay for it)."""
        if not (self.messages.can_take(1) and self.bytes.can_take(size_bytes)):
            return False
        self.messages.take(1)
        self.bytes.take(size_bytes)
        return True


class ConversationRateLimits:
    """The budgets of the conversations open on this gateway, one per conversation, shared by
    every connection carrying it (rep sockets and phone-call media streams alike).

    A connection `hold`s its conversation's budget and `release`s it when it ends; the budget
    goes with the last holder, so a conversation's connections never get a fresh one while
    another of them is still open.
    """

    def __init__(
        self,
        *,
        messages_per_s: float,
        burst_messages: int,
        bytes_per_s: float,
        burst_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._messages_per_s = messages_per_s
        self._burst_messages = burst_messages
        self._bytes_per_s = bytes_per_s
        self._burst_bytes = burst_bytes
        self._clock = clock
        self._held: dict[str, tuple[ConversationRateLimit, int]] = {}  # budget, holders

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationRateLimits:
        return cls(
            messages_per_s=settings.ws_rate_messages_per_s,
            burst_messages=settings.ws_rate_burst_messages,
            bytes_per_s=settings.ws_rate_bytes_per_s,
            burst_bytes=settings.ws_rate_burst_bytes,
        )

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, conversation_id: str) -> ConversationRateLimit:
        """The conversation's budget, for one more connection."""
        held = self._held.get(conversation_id)
        if held is None:
            held = (
                ConversationRateLimit(
                    messages_per_s=self._messages_per_s,
                    burst_messages=self._burst_messages,
                    bytes_per_s=self._bytes_per_s,
                    burst_bytes=self._burst_bytes,
                    clock=self._clock,
                ),
                0,
            )
        limit, holders = held
        self._held[conversation_id] = (limit, holders + 1)
        return limit

    def release(self, conversation_id: str) -> None:
        """One connection of the conversation has ended."""
        limit, holders = self._held[conversation_id]
        if holders <= 1:
            del self._held[conversation_id]
        else:
            self._held[conversation_id] = (limit, holders - 1)
