"""The topic catalog: names, partition logs and per-topic configs, persisted in topics.json."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

from broker.errors import BrokerError, ErrorCode
from broker.log import CleanupPolicy, LogConfig, PartitionLog, TimestampType
from broker.storage import read_json, write_json_atomically

logger = logging.getLogger(__name__)

_CATALOG_FILE: Final = "topics.json"
_LOGS_DIR: Final = "logs"
_TOPIC_NAME: Final = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
MAX_PARTITIONS: Final = 10_000

# Kafka's topic configs with this broker's defaults. Those that change behaviour here are
# cleanup.policy, retention.ms, retention.bytes, segment.bytes and max.message.bytes; the rest
# are accepted, stored and described so that tools written for Kafka keep working.
TOPIC_CONFIG_DEFAULTS: Final[dict[str, str]] = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "index.interval.bytes": "4096",
    "max.compaction.lag.ms": "9223372036854775807",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "preallocate": "false",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "67108864",
    "segment.index.bytes": "10485760",
    "segment.jitter.ms": "0",
    "segment.ms": "604800000",
    "unclean.leader.election.enable": "false",
}
_INTEGER_CONFIGS: Final = frozenset(
    name
    for name, value in TOPIC_CONFIG_DEFAULTS.items()
    if value.lstrip("-").isdigit() and name != "min.cleanable.dirty.ratio"
)
_CLEANUP_POLICIES: Final = {"delete", "compact", "compact,delete", "delete,compact"}
_TIMESTAMP_TYPES: Final = {"CreateTime", "LogAppendTime"}


def validate_topic_name(name: str) -> None:
    if not _TOPIC_NAME.match(name) or name in {".", ".."}:
        raise BrokerError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"topic name {name!r} is not legal: use 1-249 of [a-zA-Z0-9._-]",
        )


def validate_configs(configs: dict[str, str]) -> None:
    for name, value in configs.items():
        if name not in TOPIC_CONFIG_DEFAULTS:
            raise BrokerError(ErrorCode.INVALID_CONFIG, f"unknown topic config {name!r}")
        if name in _INTEGER_CONFIGS:
            try:
                int(value)
            except ValueError:
                raise BrokerError(
                    ErrorCode.INVALID_CONFIG, f"{name} must be an integer, got {value!r}"
                ) from None
        if name == "cleanup.policy" and value.replace(" ", "") not in _CLEANUP_POLICIES:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG, f"cleanup.policy must be delete or compact, got {value!r}"
            )
        if name == "message.timestamp.type" and value not in _TIMESTAMP_TYPES:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG,
                f"message.timestamp.type must be CreateTime or LogAppendTime, got {value!r}",
            )
        if name == "segment.bytes" and int(value) < 1024:
            raise BrokerError(ErrorCode.INVALID_CONFIG, "segment.bytes must be at least 1024")


def log_config(configs: dict[str, str]) -> LogConfig:
    effective = {**TOPIC_CONFIG_DEFAULTS, **configs}
    policy = effective["cleanup.policy"].replace(" ", "")
    if policy == "delete,compact":
        policy = "compact,delete"
    return LogConfig(
        segment_bytes=int(effective["segment.bytes"]),
        retention_ms=int(effective["retention.ms"]),
        retention_bytes=int(effective["retention.bytes"]),
        cleanup_policy=cast(CleanupPolicy, policy),
        max_message_bytes=int(effective["max.message.bytes"]),
        timestamp_type=cast(TimestampType, effective["message.timestamp.type"]),
    )


@dataclass(slots=True)
class Topic:
    name: str
    topic_id: str
    configs: dict[str, str]  # overrides only; defaults come from TOPIC_CONFIG_DEFAULTS
    partitions: list[PartitionLog] = field(default_factory=list)


class TopicStore:
    """Every topic and its partition logs; catalog changes are written before they answer."""

    def __init__(self, data_dir: Path) -> None:
        self._catalog_path = data_dir / _CATALOG_FILE
        self._logs_dir = data_dir / _LOGS_DIR
        self._logs_dir.mkdir(parents=True, exist_ok=True)
        self._topics: dict[str, Topic] = {}
        self._save_deferred = 0
        self._unsaved = False
        self._load()

    def _load(self) -> None:
        document = read_json(self._catalog_path) if self._catalog_path.exists() else {}
        for name, entry in document.get("topics", {}).items():
            configs = {str(k): str(v) for k, v in entry.get("configs", {}).items()}
            topic = Topic(name=name, topic_id=str(entry["id"]), configs=configs)
            config = log_config(configs)
            topic.partitions = [
                PartitionLog(directory=self._partition_dir(name, index), config=config)
                for index in range(int(entry["partitions"]))
            ]
            self._topics[name] = topic
        expected = {
            self._partition_dir(topic.name, index).name
            for topic in self._topics.values()
            for index in range(len(topic.partitions))
        }
        for directory in self._logs_dir.iterdir():
            if directory.name not in expected:
                # A topic deleted (or half-created) before a crash: its catalog entry is gone.
                logger.info("removing log directory of deleted topic: %s", directory.name)
                shutil.rmtree(directory, ignore_errors=True)
        logger.info("loaded %d topic(s) from %s", len(self._topics), self._catalog_path.parent)

    @contextlib.contextmanager
    def saving_once(self) -> Iterator[None]:
        """Write the catalog once at the end, for a request creating many topics at a time."""
        self._save_deferred += 1
        try:
            yield
        finally:
            self._save_deferred -= 1
            if not self._save_deferred and self._unsaved:
                self._save()

    def _save(self) -> None:
        if self._save_deferred:
            self._unsaved = True
            return
        self._unsaved = False
        write_json_atomically(
            self._catalog_path,
            {
                "topics": {
                    topic.name: {
                        "id": topic.topic_id,
                        "partitions": len(topic.partitions),
                        "configs": topic.configs,
                    }
                    for topic in self._topics.values()
                }
            },
        )

    def _partition_dir(self, topic: str, partition: int) -> Path:
        return self._logs_dir / f"{topic}-{partition}"

    # --- queries ---------------------------------------------------------------------------

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def names(self) -> list[str]:
        return list(self._topics)

    def partition(self, topic: str, partition: int) -> PartitionLog | None:
        found = self._topics.get(topic)
        if found is None or not 0 <= partition < len(found.partitions):
            return None
        return found.partitions[partition]

    def all_logs(self) -> list[PartitionLog]:
        return [log for topic in self._topics.values() for log in topic.partitions]

    def effective_configs(self, name: str) -> dict[str, tuple[str, bool]]:
        """Every config of a topic: name -> (value, is the broker default)."""
        topic = self._topics[name]
        return {
            key: (topic.configs.get(key, default), key not in topic.configs)
            for key, default in TOPIC_CONFIG_DEFAULTS.items()
        }

    # --- changes ---------------------------------------------------------------------------

    def check_new(self, name: str, partitions: int, configs: dict[str, str]) -> None:
        """Raise what creating this topic would fail with; change nothing."""
        validate_topic_name(name)
        if name in self._topics:
            raise BrokerError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise BrokerError(
                ErrorCode.INVALID_PARTITIONS,
                f"partition count must be 1-{MAX_PARTITIONS}, got {partitions}",
            )
        validate_configs(configs)

    def create(self, name: str, partitions: int, configs: dict[str, str]) -> Topic:
        self.check_new(name, partitions, configs)
        config = log_config(configs)
        topic = Topic(name=name, topic_id=uuid.uuid4().hex, configs=dict(configs))
        topic.partitions = [
            PartitionLog(directory=self._partition_dir(name, index), config=config)
            for index in range(partitions)
        ]
        self._topics[name] = topic
        self._save()
        logger.info("created topic %s with %d partition(s) %s", name, partitions, configs or "")
        return topic

    def delete(self, name: str) -> None:
        topic = self._topics.pop(name, None)
        if topic is None:
            raise BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        self._save()
        for index, log in enumerate(topic.partitions):
            log.close()
            shutil.rmtree(self._partition_dir(name, index), ignore_errors=True)
        logger.info("deleted topic %s", name)

    def check_add_partitions(self, name: str, count: int) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        if count <= len(topic.partitions):
            raise BrokerError(
                ErrorCode.INVALID_PARTITIONS,
                f"topic {name!r} has {len(topic.partitions)} partition(s); "
                f"the new count must be larger, got {count}",
            )
        if count > MAX_PARTITIONS:
            raise BrokerError(ErrorCode.INVALID_PARTITIONS, f"at most {MAX_PARTITIONS} partitions")
        return topic

    def add_partitions(self, name: str, count: int) -> None:
        topic = self.check_add_partitions(name, count)
        config = log_config(topic.configs)
        for index in range(len(topic.partitions), count):
            topic.partitions.append(
                PartitionLog(directory=self._partition_dir(name, index), config=config)
            )
        self._save()
        logger.info("topic %s now has %d partitions", name, count)

    def replace_configs(self, name: str, configs: dict[str, str]) -> None:
        topic = self._topics.get(name)
        if topic is None:
            raise BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        validate_configs(configs)
        topic.configs = dict(configs)
        config = log_config(configs)
        for log in topic.partitions:
            log.config = config
        self._save()

    def close(self) -> None:
        for log in self.all_logs():
            log.close()
