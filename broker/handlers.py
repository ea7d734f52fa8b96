"""One handler per Kafka API: request dict in, response dict out (see protocol.encode_response).

Handlers answer every refusal with the protocol's error code for the topic, partition or group
concerned; an exception escaping a handler is a broker bug, and the server then drops only
that connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from broker.errors import BrokerError, ErrorCode
from broker.groups import GroupCoordinator
from broker.log import Appended, PartitionLog
from broker.offsets import OffsetStore
from broker.protocol import Request, advertised_versions
from broker.records import CONTROL_FLAG, TRANSACTIONAL_FLAG, InvalidBatchError, iter_batches
from broker.storage import BrokerIdentity
from broker.topics import TOPIC_CONFIG_DEFAULTS, TopicStore, validate_configs

logger = logging.getLogger(__name__)

ResponseBody = dict[str, Any]
Handler = Callable[[Request, str], Awaitable[ResponseBody | None]]

_LATEST: Final = -1
_EARLIEST: Final = -2
_MAX_OFFSET_METADATA: Final = 4096
_OFFSET_METADATA_TOO_LARGE: Final = 12
_TOPIC_RESOURCE: Final = 2
_BROKER_RESOURCE: Final = 4
_CONFIG_SOURCE_TOPIC: Final = 1
_CONFIG_SOURCE_STATIC_BROKER: Final = 4
_CONFIG_SOURCE_DEFAULT: Final = 5
_NO_TRANSACTIONS: Final = "transactions are not supported by the embedded broker"
_NO_SASL: Final = "the embedded broker listens in PLAINTEXT only; SASL is not offered"
_TRANSACTION_COORDINATOR: Final = 1
# IncrementalAlterConfigs operations
_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3
_LIST_CONFIGS: Final = frozenset({"cleanup.policy"})


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """What clients are told about this broker."""

    node_id: int
    host: str
    port: int
    cluster_id: str
    auto_create_topics: bool
    default_partitions: int


class RequestHandlers:
    """The broker's APIs, keyed by API key, over its topic, offset and group state."""

    def __init__(
        self,
        *,
        info: BrokerInfo,
        topics: TopicStore,
        offsets: OffsetStore,
        groups: GroupCoordinator,
        identity: BrokerIdentity,
    ) -> None:
        self._info = info
        self._topics = topics
        self._offsets = offsets
        self._groups = groups
        self._identity = identity
        self.routes: dict[int, Handler] = {
            0: self.produce,
            1: self.fetch,
            2: self.list_offsets,
            3: self.metadata,
            8: self.offset_commit,
            9: self.offset_fetch,
            10: self.find_coordinator,
            11: self.join_group,
            12: self.heartbeat,
            13: self.leave_group,
            14: self.sync_group,
            15: self.describe_groups,
            16: self.list_groups,
            17: self.sasl_handshake,
            18: self.api_versions,
            19: self.create_topics,
            20: self.delete_topics,
            21: self.delete_records,
            22: self.init_producer_id,
            32: self.describe_configs,
            33: self.alter_configs,
            36: self.sasl_authenticate,
            37: self.create_partitions,
            42: self.delete_groups,
            44: self.incremental_alter_configs,
            47: self.offset_delete,
        }

    # --- cluster ---------------------------------------------------------------------------

    async def api_versions(self, request: Request, peer: str) -> ResponseBody:
        return {"error_code": 0, "api_versions": advertised_versions(), "throttle_time_ms": 0}

    async def sasl_handshake(self, request: Request, peer: str) -> ResponseBody:
        # Apache Kafka's answer on a PLAINTEXT listener: SASL is not in use on this connection.
        logger.warning("SASL handshake from %s refused: %s", peer, _NO_SASL)
        return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "enabled_mechanisms": []}

    async def sasl_authenticate(self, request: Request, peer: str) -> ResponseBody:
        return {
            "error_code": ErrorCode.ILLEGAL_SASL_STATE,
            "error_message": _NO_SASL,
            "sasl_auth_bytes": b"",
        }

    async def metadata(self, request: Request, peer: str) -> ResponseBody:
        wanted: list[str] | None = request.body["topics"]
        if wanted is None or (request.header.api_version == 0 and not wanted):
            names = self._topics.names()
        else:
            names = list(dict.fromkeys(wanted))
        auto_create = self._info.auto_create_topics and request.body.get(
            "allow_auto_topic_creation", True
        )
        node = self._info.node_id
        topics = []
        with self._topics.saving_once():
            for name in names:
                topics.append(self._topic_metadata(name, auto_create=bool(auto_create)))
        return {
            "throttle_time_ms": 0,
            "brokers": [
                {"node_id": node, "host": self._info.host, "port": self._info.port, "rack": None}
            ],
            "cluster_id": self._info.cluster_id,
            "controller_id": node,
            "topics": topics,
        }

    def _topic_metadata(self, name: str, *, auto_create: bool) -> ResponseBody:
        node = self._info.node_id
        topic = self._topics.get(name)
        error = ErrorCode.NONE
        if topic is None:
            if auto_create:
                try:
                    topic = self._topics.create(name, self._info.default_partitions, {})
                except BrokerError as exc:
                    error = exc.code
            else:
                error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        partitions = [
            {
                "error_code": 0,
                "partition": index,
                "leader": node,
                "replicas": [node],
                "isr": [node],
                "offline_replicas": [],
            }
            for index in range(len(topic.partitions) if topic else 0)
        ]
        return {"error_code": error, "topic": name, "is_internal": False, "partitions": partitions}

    # --- produce and consume ---------------------------------------------------------------

    async def produce(self, request: Request, peer: str) -> ResponseBody | None:
        acks = request.body["required_acks"]
        transactional = request.body.get("transactional_id") is not None
        topics = []
        for topic in request.body["topics"]:
            partitions = []
            for part in topic["partitions"]:
                log = self._topics.partition(topic["topic"], part["partition"])
                if acks not in (0, 1, -1):
                    appended = Appended(ErrorCode.INVALID_REQUIRED_ACKS)
                elif transactional:
                    appended = Appended(ErrorCode.UNSUPPORTED_VERSION)
                elif log is None:
                    appended = Appended(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                else:
                    where = f"{topic['topic']}-{part['partition']}"
                    appended = _append(log, part["messages"], where)
                partitions.append(
                    {
                        "partition": part["partition"],
                        "error_code": appended.error,
                        "offset": appended.base_offset,
                        "timestamp": appended.log_append_time,
                        "log_start_offset": log.log_start_offset if log else -1,
                    }
                )
            topics.append({"topic": topic["topic"], "partitions": partitions})
        if acks == 0:
            return None  # acks=0: the producer expects no answer at all
        return {"topics": topics, "throttle_time_ms": 0}

    async def fetch(self, request: Request, peer: str) -> ResponseBody:
        body = request.body
        deadline = time.monotonic() + max(body["max_wait_time"], 0) / 1000
        min_bytes = body["min_bytes"]
        max_bytes = body.get("max_bytes") or 0x7FFFFFFF
        wanted = [
            (topic["topic"], part["partition"], _fetch_offset(part), part["max_bytes"])
            for topic in body["topics"]
            for part in topic["partitions"]
        ]
        loop = asyncio.get_running_loop()
        while True:
            topics, size, has_error, logs = self._read(wanted, max_bytes)
            remaining = deadline - time.monotonic()
            if size >= min_bytes or has_error or remaining <= 0 or not logs:
                break
            # Park until a record arrives on any of these partitions, or max wait passes.
            waiter: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(remaining, _settle, waiter)
            for log in logs:
                log.add_waiter(waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                for log in logs:
                    log.remove_waiter(waiter)
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "topics": topics}

    def _read(
        self, wanted: list[tuple[str, int, int, int]], max_bytes: int
    ) -> tuple[list[ResponseBody], int, bool, list[PartitionLog]]:
        by_topic: dict[str, list[ResponseBody]] = {}
        size = 0
        has_error = False
        logs = []
        for topic, partition, offset, partition_max in wanted:
            log = self._topics.partition(topic, partition)
            records = b""
            error = ErrorCode.NONE
            if log is None:
                error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif not log.log_start_offset <= offset <= log.next_offset:
                error = ErrorCode.OFFSET_OUT_OF_RANGE
            else:
                logs.append(log)
                budget = min(partition_max, max_bytes - size)
                if budget > 0 or size == 0:
                    records = log.read(offset, max(budget, 0), at_least_one=size == 0)
                    size += len(records)
            has_error = has_error or error != ErrorCode.NONE
            end = log.next_offset if log else -1
            by_topic.setdefault(topic, []).append(
                {
                    "partition": partition,
                    "error_code": error,
                    "highwater_offset": end,
                    "last_stable_offset": end,
                    "log_start_offset": log.log_start_offset if log else -1,
                    "aborted_transactions": [],
                    "preferred_read_replica": -1,
                    "message_set": records,
                }
            )
        topics = [{"topics": name, "partitions": parts} for name, parts in by_topic.items()]
        return topics, size, has_error, logs

    async def list_offsets(self, request: Request, peer: str) -> ResponseBody:
        topics = []
        for topic in request.body["topics"]:
            partitions = []
            for part in topic["partitions"]:
                log = self._topics.partition(topic["topic"], part["partition"])
                error, timestamp, offset = ErrorCode.NONE, -1, -1
                if log is None:
                    error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif part["timestamp"] == _LATEST:
                    offset = log.next_offset
                elif part["timestamp"] == _EARLIEST:
                    offset = log.log_start_offset
                elif part["timestamp"] >= 0:
                    found = log.offset_for_timestamp(part["timestamp"])
                    if found is not None:
                        offset, timestamp = found
                else:
                    error = ErrorCode.INVALID_REQUEST
                partitions.append(
                    {
                        "partition": part["partition"],
                        "error_code": error,
                        "timestamp": timestamp,
                        "offset": offset,
                    }
                )
            topics.append({"topic": topic["topic"], "partitions": partitions})
        return {"throttle_time_ms": 0, "topics": topics}

    async def init_producer_id(self, request: Request, peer: str) -> ResponseBody:
        if request.body["transactional_id"] is not None:
            logger.warning("InitProducerId from %s refused: %s", peer, _NO_TRANSACTIONS)
            return {
                "error_code": ErrorCode.UNSUPPORTED_VERSION,
                "producer_id": -1,
                "producer_epoch": -1,
            }
        return {
            "error_code": 0,
            "producer_id": self._identity.new_producer_id(),
            "producer_epoch": 0,
        }

    # --- groups ----------------------------------------------------------------------------

    async def find_coordinator(self, request: Request, peer: str) -> ResponseBody:
        # This broker coordinates every group, and would every transaction: a transactional
        # producer finds it, and InitProducerId then says transactions are not supported
        # (KafkaJS, for one, reports a failed FindCoordinator only as "coordinator not found").
        if request.body.get("coordinator_type", 0) not in (0, _TRANSACTION_COORDINATOR):
            return {
                "error_code": ErrorCode.INVALID_REQUEST,
                "error_message": "unknown coordinator type",
                "coordinator_id": -1,
                "host": "",
                "port": -1,
            }
        return {
            "error_code": 0,
            "error_message": None,
            "coordinator_id": self._info.node_id,
            "host": self._info.host,
            "port": self._info.port,
        }

    async def join_group(self, request: Request, peer: str) -> ResponseBody:
        body = request.body
        result = await self._groups.join(
            group_id=body["group"],
            member_id=body["member_id"] or "",
            group_instance_id=body.get("group_instance_id"),
            client_id=request.header.client_id,
            client_host=peer,
            session_timeout_ms=body["session_timeout"],
            rebalance_timeout_ms=body.get("rebalance_timeout", body["session_timeout"]),
            protocol_type=body["protocol_type"] or "",
            protocols=[
                (p["protocol_name"], p["protocol_metadata"] or b"")
                for p in body["group_protocols"] or []
            ],
            require_known_member_id=request.header.api_version >= 4,
        )
        return {
            "error_code": result.error,
            "generation_id": result.generation,
            "group_protocol": result.protocol,
            "leader_id": result.leader_id,
            "member_id": result.member_id,
            "members": [
                {"member_id": member, "group_instance_id": instance, "member_metadata": metadata}
                for member, instance, metadata in result.members
            ],
        }

    async def sync_group(self, request: Request, peer: str) -> ResponseBody:
        body = request.body
        error, assignment = await self._groups.sync(
            group_id=body["group"],
            generation=body["generation_id"],
            member_id=body["member_id"],
            group_instance_id=body.get("group_instance_id"),
            assignments={
                a["member_id"]: a["member_metadata"] or b"" for a in body["group_assignment"] or []
            },
        )
        return {"error_code": error, "member_assignment": assignment}

    async def heartbeat(self, request: Request, peer: str) -> ResponseBody:
        body = request.body
        error = self._groups.heartbeat(
            group_id=body["group"],
            generation=body["generation_id"],
            member_id=body["member_id"],
            group_instance_id=body.get("group_instance_id"),
        )
        return {"error_code": error}

    async def leave_group(self, request: Request, peer: str) -> ResponseBody:
        body = request.body
        if "members" not in body:  # v0-v2: the one member sending it
            return {
                "error_code": self._groups.leave(
                    group_id=body["group"], member_id=body["member_id"]
                )
            }
        members = [
            {
                "member_id": member["member_id"],
                "group_instance_id": member["group_instance_id"],
                "error_code": self._groups.leave(
                    group_id=body["group"],
                    member_id=member["member_id"] or "",
                    group_instance_id=member["group_instance_id"],
                ),
            }
            for member in body["members"] or []
        ]
        return {"throttle_time_ms": 0, "error_code": 0, "members": members}

    async def offset_commit(self, request: Request, peer: str) -> ResponseBody:
        body = request.body
        group = body["consumer_group"]
        refusal = self._groups.check_commit(
            group_id=group,
            generation=body["consumer_group_generation_id"],
            member_id=body["consumer_id"] or "",
        )
        accepted: list[tuple[str, int, int, str]] = []
        topics = []
        for topic in body["topics"]:
            partitions = []
            for part in topic["partitions"]:
                metadata = part["metadata"] or ""
                if refusal != ErrorCode.NONE:
                    error: int = refusal
                elif self._topics.partition(topic["topic"], part["partition"]) is None:
                    error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif len(metadata) > _MAX_OFFSET_METADATA:
                    error = _OFFSET_METADATA_TOO_LARGE
                else:
                    error = ErrorCode.NONE
                    accepted.append((topic["topic"], part["partition"], part["offset"], metadata))
                partitions.append({"partition": part["partition"], "error_code": error})
            topics.append({"topic": topic["topic"], "partitions": partitions})
        self._offsets.commit(group, accepted)
        return {"throttle_time_ms": 0, "topics": topics}

    async def offset_fetch(self, request: Request, peer: str) -> ResponseBody:
        group = request.body["consumer_group"]
        wanted: list[Any] | None = request.body["topics"]
        if wanted is None:
            committed = self._offsets.of_group(group)
            pairs = sorted(committed)
        else:
            pairs = [(t["topic"], p) for t in wanted for p in t["partitions"]]
        by_topic: dict[str, list[ResponseBody]] = {}
        for topic, partition in pairs:
            found = self._offsets.get(group, topic, partition)
            by_topic.setdefault(topic, []).append(
                {
                    "partition": partition,
                    "offset": found.offset if found else -1,
                    "metadata": found.metadata if found else "",
                    "error_code": 0,
                }
            )
        return {
            "throttle_time_ms": 0,
            "topics": [{"topic": name, "partitions": parts} for name, parts in by_topic.items()],
            "error_code": 0,
        }

    async def list_groups(self, request: Request, peer: str) -> ResponseBody:
        # v4+ filters by state, case-insensitively as Kafka does; empty means every state.
        wanted = {state.lower() for state in request.body.get("states_filter") or []}
        groups = [
            {"group": group_id, "protocol_type": protocol_type, "group_state": state}
            for group_id, protocol_type, state in self._groups.list_groups()
            if not wanted or state.lower() in wanted
        ]
        return {"throttle_time_ms": 0, "error_code": 0, "groups": groups}

    async def describe_groups(self, request: Request, peer: str) -> ResponseBody:
        groups = []
        for group_id in request.body["groups"]:
            described = self._groups.describe(group_id)
            groups.append(
                {
                    "error_code": 0,
                    "group": group_id,
                    "state": described.state,
                    "protocol_type": described.protocol_type,
                    "protocol": described.protocol,
                    "members": [
                        {
                            "member_id": member.member_id,
                            "group_instance_id": member.group_instance_id,
                            "client_id": member.client_id,
                            "client_host": member.client_host,
                            "member_metadata": member.metadata,
                            "member_assignment": member.assignment,
                        }
                        for member in described.members
                    ],
                    "authorized_operations": -(2**31),  # "not requested"
                }
            )
        return {"throttle_time_ms": 0, "groups": groups}

    async def delete_groups(self, request: Request, peer: str) -> ResponseBody:
        results = [
            {"group_id": group_id, "error_code": self._groups.delete_group(group_id)}
            for group_id in request.body["groups_names"]
        ]
        return {"throttle_time_ms": 0, "results": results}

    async def offset_delete(self, request: Request, peer: str) -> ResponseBody:
        group = request.body["group_id"]
        if not self._groups.has_members(group) and not self._offsets.of_group(group):
            return {"error_code": ErrorCode.GROUP_ID_NOT_FOUND, "topics": []}
        subscribed = self._groups.subscribed_topics(group)
        deleted = []
        topics = []
        for topic in request.body["topics"]:
            partitions = []
            for part in topic["partitions"]:
                index = part["partition_index"]
                if subscribed is None or topic["name"] in subscribed:
                    error = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
                else:
                    error = ErrorCode.NONE
                    deleted.append((topic["name"], index))
                partitions.append({"partition_index": index, "error_code": error})
            topics.append({"name": topic["name"], "partitions": partitions})
        self._offsets.delete(group, deleted)
        return {"error_code": 0, "throttle_time_ms": 0, "topics": topics}

    # --- topics and configs ----------------------------------------------------------------

    async def create_topics(self, request: Request, peer: str) -> ResponseBody:
        validate_only = bool(request.body.get("validate_only"))
        results = []
        with self._topics.saving_once():
            for entry in request.body["create_topic_requests"]:
                results.append(self._create_topic(entry, validate_only=validate_only))
        return {"throttle_time_ms": 0, "topic_errors": results}

    def _create_topic(self, entry: dict[str, Any], *, validate_only: bool) -> ResponseBody:
        name = entry["topic"]
        try:
            partitions = self._partition_count(entry)
            configs = {
                c["config_key"]: c["config_value"]
                for c in entry["configs"] or []
                if c["config_value"] is not None
            }
            if validate_only:
                self._topics.check_new(name, partitions, configs)
            else:
                self._topics.create(name, partitions, configs)
        except BrokerError as exc:
            return {"topic": name, "error_code": exc.code, "error_message": exc.message}
        return {"topic": name, "error_code": 0, "error_message": None}

    def _partition_count(self, entry: dict[str, Any]) -> int:
        replication = entry["replication_factor"]
        assignment = entry["replica_assignment"] or []
        if replication not in (-1, 1) and not assignment:
            raise BrokerError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {replication} is impossible on this single-node broker",
            )
        for replicas in assignment:
            if replicas["replicas"] != [self._info.node_id]:
                raise BrokerError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"replicas must be [{self._info.node_id}] on this single-node broker",
                )
        if assignment:
            return len(assignment)
        count: int = entry["num_partitions"]
        return self._info.default_partitions if count == -1 else count

    async def delete_topics(self, request: Request, peer: str) -> ResponseBody:
        results = []
        for name in request.body["topics"]:
            try:
                self._topics.delete(name)
                self._offsets.delete_topic(name)
                results.append({"topic": name, "error_code": 0})
            except BrokerError as exc:
                results.append({"topic": name, "error_code": exc.code})
        return {"throttle_time_ms": 0, "topic_error_codes": results}

    async def delete_records(self, request: Request, peer: str) -> ResponseBody:
        topics = []
        for topic in request.body["topics"]:
            partitions = []
            for part in topic["partitions"]:
                log = self._topics.partition(topic["name"], part["partition_index"])
                error, low_watermark = ErrorCode.NONE, -1
                wanted = part["offset"]
                if log is None:
                    error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif "delete" not in log.config.cleanup_policy:
                    error = ErrorCode.POLICY_VIOLATION  # Kafka's answer for compacted topics
                elif wanted == _LATEST:
                    low_watermark = log.delete_records(log.next_offset)
                elif not 0 <= wanted <= log.next_offset:
                    error = ErrorCode.OFFSET_OUT_OF_RANGE
                else:
                    low_watermark = log.delete_records(wanted)
                partitions.append(
                    {
                        "partition_index": part["partition_index"],
                        "low_watermark": low_watermark,
                        "error_code": error,
                    }
                )
            topics.append({"name": topic["name"], "partitions": partitions})
        return {"throttle_time_ms": 0, "topics": topics}

    async def create_partitions(self, request: Request, peer: str) -> ResponseBody:
        validate_only = bool(request.body.get("validate_only"))
        results = []
        for entry in request.body["topic_partitions"]:
            name = entry["topic"]
            count = entry["new_partitions"]["count"]
            try:
                if validate_only:
                    self._topics.check_add_partitions(name, count)
                else:
                    self._topics.add_partitions(name, count)
                results.append({"topic": name, "error_code": 0, "error_message": None})
            except BrokerError as exc:
                results.append(
                    {"topic": name, "error_code": exc.code, "error_message": exc.message}
                )
        return {"throttle_time_ms": 0, "topic_errors": results}

    async def describe_configs(self, request: Request, peer: str) -> ResponseBody:
        resources = []
        for resource in request.body["resources"]:
            kind, name = resource["resource_type"], resource["resource_name"]
            wanted: list[str] | None = resource["config_names"]
            entries: dict[str, tuple[str, int]] = {}
            error, message = ErrorCode.NONE, None
            if kind == _TOPIC_RESOURCE and self._topics.get(name) is not None:
                entries = {
                    key: (value, _CONFIG_SOURCE_DEFAULT if default else _CONFIG_SOURCE_TOPIC)
                    for key, (value, default) in self._topics.effective_configs(name).items()
                }
            elif kind == _TOPIC_RESOURCE:
                error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
            elif kind == _BROKER_RESOURCE:
                entries = {
                    key: (value, _CONFIG_SOURCE_STATIC_BROKER)
                    for key, value in self._broker_configs().items()
                }
            else:
                error, message = ErrorCode.INVALID_REQUEST, f"resource type {kind} is not supported"
            resources.append(
                {
                    "error_code": error,
                    "error_message": message,
                    "resource_type": kind,
                    "resource_name": name,
                    "config_entries": [
                        {
                            "config_names": key,
                            "config_value": value,
                            "read_only": kind == _BROKER_RESOURCE,
                            "is_default": source == _CONFIG_SOURCE_DEFAULT,
                            "config_source": source,
                            "is_sensitive": False,
                            "config_synonyms": [],
                        }
                        for key, (value, source) in entries.items()
                        if wanted is None or key in wanted
                    ],
                }
            )
        return {"throttle_time_ms": 0, "resources": resources}

    def _broker_configs(self) -> dict[str, str]:
        return {
            "broker.id": str(self._info.node_id),
            "auto.create.topics.enable": str(self._info.auto_create_topics).lower(),
            "num.partitions": str(self._info.default_partitions),
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
        }

    async def alter_configs(self, request: Request, peer: str) -> ResponseBody:
        validate_only = bool(request.body.get("validate_only"))
        resources = []
        for resource in request.body["resources"]:
            replacement = {
                e["config_name"]: e["config_value"]
                for e in resource["config_entries"] or []
                if e["config_value"] is not None
            }
            resources.append(
                self._alter_configs(
                    resource["resource_type"],
                    resource["resource_name"],
                    functools.partial(_replaced_by, replacement),
                    validate_only=validate_only,
                )
            )
        return {"throttle_time_ms": 0, "resources": resources}

    def _alter_configs(
        self,
        kind: int,
        name: str,
        change: Callable[[dict[str, str]], dict[str, str]],
        *,
        validate_only: bool,
    ) -> ResponseBody:
        """One resource of (Incremental)AlterConfigs: a topic's overrides become `change(them)`."""
        error, message = ErrorCode.NONE, None
        try:
            if kind == _BROKER_RESOURCE:
                raise BrokerError(
                    ErrorCode.INVALID_REQUEST,
                    "broker configs are static on the embedded broker; none can be altered",
                )
            if kind != _TOPIC_RESOURCE:
                raise BrokerError(ErrorCode.INVALID_REQUEST, f"resource type {kind} unknown")
            topic = self._topics.get(name)
            if topic is None:
                raise BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
            configs = change(topic.configs)
            if validate_only:
                validate_configs(configs)
            else:
                self._topics.replace_configs(name, configs)
        except BrokerError as exc:
            error, message = exc.code, exc.message
        return {
            "error_code": error,
            "error_message": message,
            "resource_type": kind,
            "resource_name": name,
        }

    async def incremental_alter_configs(self, request: Request, peer: str) -> ResponseBody:
        validate_only = bool(request.body.get("validate_only"))
        responses = [
            self._alter_configs(
                resource["resource_type"],
                resource["resource_name"],
                functools.partial(_incrementally_altered, changes=resource["configs"] or []),
                validate_only=validate_only,
            )
            for resource in request.body["resources"]
        ]
        return {"throttle_time_ms": 0, "responses": responses}


def _replaced_by(new: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """AlterConfigs: the given configs replace all of a topic's overrides."""
    return new


def _incrementally_altered(
    current: dict[str, str], changes: list[dict[str, Any]]
) -> dict[str, str]:
    """A topic's config overrides after IncrementalAlterConfigs' set/delete/append/subtract."""
    names = [change["name"] for change in changes]
    if len(set(names)) != len(names):
        raise BrokerError(ErrorCode.INVALID_REQUEST, "a config key appears twice")
    configs = dict(current)
    for change in changes:
        name, operation, value = change["name"], change["config_operation"], change["value"]
        if name not in TOPIC_CONFIG_DEFAULTS:
            raise BrokerError(ErrorCode.INVALID_CONFIG, f"unknown topic config {name!r}")
        if operation == _SET:
            if value is None:
                raise BrokerError(ErrorCode.INVALID_REQUEST, f"no value to set {name} to")
            configs[name] = value
        elif operation == _DELETE:
            configs.pop(name, None)
        elif operation in (_APPEND, _SUBTRACT):
            if name not in _LIST_CONFIGS:
                raise BrokerError(
                    ErrorCode.INVALID_CONFIG, f"{name} is not a list: it cannot be appended to"
                )
            items = [
                item for item in configs.get(name, TOPIC_CONFIG_DEFAULTS[name]).split(",") if item
            ]
            given = [item.strip() for item in (value or "").split(",") if item.strip()]
            if operation == _APPEND:
                items += [item for item in given if item not in items]
            else:
                items = [item for item in items if item not in given]
            configs[name] = ",".join(items)
        else:
            raise BrokerError(ErrorCode.INVALID_REQUEST, f"unknown config operation {operation}")
    return configs


def _append(log: PartitionLog, data: bytes | None, where: str) -> Appended:
    """Validate a partition's produced batch and append it.

    As Kafka requires from Produce v3 on, a partition's data is exactly one v2 batch
    (INVALID_RECORD otherwise); a bad CRC or header is CORRUPT_MESSAGE.
    """
    try:
        headers = list(iter_batches(data or b"", verify_crc=True))
    except InvalidBatchError as exc:
        logger.warning("produce to %s rejected: %s", where, exc)
        return Appended(ErrorCode.CORRUPT_MESSAGE)
    if len(headers) != 1 or data is None:
        logger.warning("produce to %s rejected: %d batches, not one", where, len(headers))
        return Appended(ErrorCode.INVALID_RECORD)
    header = headers[0]
    if header.size > log.config.max_message_bytes:
        return Appended(ErrorCode.MESSAGE_TOO_LARGE)
    if header.attributes & (TRANSACTIONAL_FLAG | CONTROL_FLAG):
        return Appended(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT)
    return log.append(data, header)


def _fetch_offset(part: dict[str, Any]) -> int:
    # aiokafka names the field "offset" up to Fetch v4 and "fetch_offset" from v5.
    offset: int = part["fetch_offset"] if "fetch_offset" in part else part["offset"]
    return offset


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
