"""The partition a key lands on, as Kafka's default partitioner and our producers place it.

Every topic is keyed by conversation id. The gateway's producer uses librdkafka's
`murmur2_random` and the workers' Faust producer aiokafka's default partitioner; for a key both
are the Java client's `murmur2(key) & 0x7fffffff % partitions`, so one conversation's records
sit on one known partition of each topic and a reader need fetch no other.
"""

from __future__ import annotations

import logging
from typing import Final

from aiokafka.partitioner import murmur2

logger = logging.getLogger(__name__)

_POSITIVE: Final = 0x7FFFFFFF


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of `key` in a topic of `partitions` partitions."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (int(murmur2(key)) & _POSITIVE) % partitions
