"""A consumer group's committed offsets, read by aiokafka for processes that ask all day long."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.kafka.admin import KafkaAdminError
from core.kafka.groups import Partition

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 5.0


class CommittedOffsets:
    """Reads one group's committed offsets (OffsetFetch) over a long-lived aiokafka client.

    Not librdkafka's: its coordinator-bound admin requests (ListConsumerGroupOffsets,
    DescribeConsumerGroups) abort the whole process when the coordinator's connection drops
    mid-request (confluentinc/librdkafka#4605, #3663). A worker's health probe asks every few
    seconds, so every broker restart could kill the worker it is probing.
    """

    def __init__(self, *, bootstrap_servers: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self._client: AIOKafkaAdminClient | None = None

    async def read(self, group_id: str) -> dict[Partition, int]:
        """The group's committed offset on every partition it has committed to."""
        try:
            return await asyncio.wait_for(self._read(group_id), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.close()  # the next read starts over, from the bootstrap servers
            reason = str(exc) or type(exc).__name__
            raise KafkaAdminError(
                f"cannot read the committed offsets of {group_id} on "
                f"{self.bootstrap_servers}: {reason}"
            ) from exc

    async def _read(self, group_id: str) -> dict[Partition, int]:
        if self._client is None:
            client = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=int(self.timeout_s * 1000),
            )
            await client.start()
            self._client = client
        offsets = await self._client.list_consumer_group_offsets(group_id)
        return {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in offsets.items()
            if meta.offset >= 0
        }

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except (KafkaError, OSError) as exc:
                logger.debug("closing the offsets client: %s", exc)
