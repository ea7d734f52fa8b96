"""Broker identity and the data-directory lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import EmbeddedBroker
from broker.storage import BrokerIdentity, DataDirInUseError


def test_cluster_id_and_producer_ids_persist_without_reuse(tmp_path: Path) -> None:
    first = BrokerIdentity(tmp_path)
    issued = {first.new_producer_id() for _ in range(3)}

    second = BrokerIdentity(tmp_path)  # as after a kill -9: nothing was saved on exit

    assert second.cluster_id == first.cluster_id
    assert len(first.cluster_id) == 22
    assert not issued & {second.new_producer_id() for _ in range(3)}


async def test_a_second_broker_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    async with EmbeddedBroker(data_dir=tmp_path):
        with pytest.raises(DataDirInUseError, match="in use by another broker"):
            await EmbeddedBroker(data_dir=tmp_path).start()
    # Once the first one stops, the directory is free again.
    async with EmbeddedBroker(data_dir=tmp_path) as again:
        assert again.port > 0
