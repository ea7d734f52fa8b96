"""The topic catalog: persisted across restarts, names and configs validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import BrokerError, ErrorCode
from broker.topics import TopicStore


def test_topics_and_their_configs_survive_a_restart(tmp_path: Path) -> None:
    store = TopicStore(tmp_path)
    store.create("orders", 3, {"cleanup.policy": "compact"})
    store.create("gone", 1, {})
    store.add_partitions("orders", 4)
    store.delete("gone")
    store.close()
    (tmp_path / "logs" / "half-created-0").mkdir()  # a crash between mkdir and catalog write

    reopened = TopicStore(tmp_path)

    assert reopened.names() == ["orders"]
    orders = reopened.get("orders")
    assert orders is not None
    assert len(orders.partitions) == 4
    assert orders.partitions[0].config.cleanup_policy == "compact"
    assert reopened.effective_configs("orders")["cleanup.policy"] == ("compact", False)
    assert reopened.effective_configs("orders")["retention.ms"] == ("604800000", True)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        f"orders-{i}" for i in range(4)
    ]


@pytest.mark.parametrize(
    ("name", "partitions", "configs", "code"),
    [
        ("bad/name", 1, {}, ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("x" * 250, 1, {}, ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("ok", 0, {}, ErrorCode.INVALID_PARTITIONS),
        ("ok", 1, {"retention.ms": "soon"}, ErrorCode.INVALID_CONFIG),
        ("ok", 1, {"cleanup.policy": "shred"}, ErrorCode.INVALID_CONFIG),
        ("ok", 1, {"not.a.config": "1"}, ErrorCode.INVALID_CONFIG),
    ],
)
def test_bad_topics_are_refused_with_the_protocol_error(
    tmp_path: Path, name: str, partitions: int, configs: dict[str, str], code: ErrorCode
) -> None:
    store = TopicStore(tmp_path)
    with pytest.raises(BrokerError) as refused:
        store.create(name, partitions, configs)
    assert refused.value.code == code
    assert store.names() == []
