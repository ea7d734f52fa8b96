"""How quickly a dead worker's partitions move: the session timeout, within the broker's bounds."""

from __future__ import annotations

import logging
from typing import Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from core.settings import Settings

logger = logging.getLogger(__name__)

MIN_SESSION_TIMEOUT_CONFIG: Final = "group.min.session.timeout.ms"


def broker_session_floor_s(bootstrap_servers: str, *, timeout_s: float = 5.0) -> float | None:
    """The broker's `group.min.session.timeout.ms` in seconds; None if it cannot be read."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        brokers = admin.list_topics(timeout=timeout_s).brokers
        if not brokers:
            return None
        resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(
            timeout=timeout_s
        )
    except (KafkaException, ValueError, TimeoutError) as exc:
        logger.debug("cannot read the broker's session timeout bounds: %s", exc)
        return None
    entry = configs.get(MIN_SESSION_TIMEOUT_CONFIG)
    if entry is None or entry.value is None:
        return None
    return int(entry.value) / 1000.0


def with_session_floor(settings: Settings, floor_s: float | None) -> Settings:
    """`settings` with the worker session timeout raised to the broker's minimum, if below it.

    A broker refuses to let a member join with a session timeout under its minimum (Apache
    Kafka's default is 6 s); failing over slower beats not running.
    """
    wanted = settings.worker_session_timeout_s
    if floor_s is None or wanted >= floor_s:
        return settings
    logger.warning(
        "worker session timeout raised from %.1f s to %.1f s, the broker's %s; lower that on the "
        "broker for faster failover (docs/reliability.md)",
        wanted,
        floor_s,
        MIN_SESSION_TIMEOUT_CONFIG,
    )
    return settings.model_copy(update={"worker_session_timeout_s": floor_s})
