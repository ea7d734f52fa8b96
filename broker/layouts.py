"""Request and response layouts aiokafka does not ship, declared in aiokafka's own field types.

Each is written from Apache Kafka's message definitions (clients/src/main/resources/common/
message/*.json) for exactly the versions named; field names follow aiokafka's for the same
API where it has one, so one handler serves every version.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.protocol import admin, group
from aiokafka.protocol.api import RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    Bytes,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)

logger = logging.getLogger(__name__)

_TEXT = String("utf-8")
_COMPACT_TEXT = CompactString("utf-8")


def layout(
    name: str,
    key: int,
    version: int,
    request: Schema,
    response: Schema,
    *,
    flexible: bool = False,
) -> type[RequestStruct]:
    """A request class (with its response class) in aiokafka's shape, for one API version."""
    response_class: Any = type(
        f"{name}Response_v{version}",
        (Response,),
        {"API_KEY": key, "API_VERSION": version, "SCHEMA": response},
    )
    request_class: type[RequestStruct] = type(
        f"{name}Request_v{version}",
        (RequestStruct,),
        {
            "API_KEY": key,
            "API_VERSION": version,
            "RESPONSE_TYPE": response_class,
            "SCHEMA": request,
            "FLEXIBLE_VERSION": flexible,
        },
    )
    return request_class


# --- ApiVersions v3 (flexible), for librdkafka's first request ---------------------------------

API_VERSIONS_V3 = layout(
    "ApiVersions",
    18,
    3,
    Schema(
        ("client_software_name", _COMPACT_TEXT),
        ("client_software_version", _COMPACT_TEXT),
        ("tags", TaggedFields),
    ),
    Schema(
        ("error_code", Int16),
        (
            "api_versions",
            CompactArray(
                ("api_key", Int16),
                ("min_version", Int16),
                ("max_version", Int16),
                ("tags", TaggedFields),
            ),
        ),
        ("throttle_time_ms", Int32),
        ("tags", TaggedFields),
    ),
    flexible=True,
)

# --- consumer groups: the versions between aiokafka's, and static membership -------------------

JOIN_GROUP_V3 = layout(
    "JoinGroup", 11, 3, group.JoinGroupRequest_v2.SCHEMA, group.JoinGroupResponse_v2.SCHEMA
)
JOIN_GROUP_V4 = layout(
    "JoinGroup", 11, 4, group.JoinGroupRequest_v2.SCHEMA, group.JoinGroupResponse_v2.SCHEMA
)
SYNC_GROUP_V2 = layout(
    "SyncGroup", 14, 2, group.SyncGroupRequest_v1.SCHEMA, group.SyncGroupResponse_v1.SCHEMA
)
HEARTBEAT_V2 = layout(
    "Heartbeat", 12, 2, group.HeartbeatRequest_v1.SCHEMA, group.HeartbeatResponse_v1.SCHEMA
)
HEARTBEAT_V3 = layout(
    "Heartbeat",
    12,
    3,
    Schema(
        ("group", _TEXT),
        ("generation_id", Int32),
        ("member_id", _TEXT),
        ("group_instance_id", _TEXT),
    ),
    group.HeartbeatResponse_v1.SCHEMA,
)
LEAVE_GROUP_V2 = layout(
    "LeaveGroup", 13, 2, group.LeaveGroupRequest_v1.SCHEMA, group.LeaveGroupResponse_v1.SCHEMA
)
LEAVE_GROUP_V3 = layout(
    "LeaveGroup",
    13,
    3,
    Schema(
        ("group", _TEXT), ("members", Array(("member_id", _TEXT), ("group_instance_id", _TEXT)))
    ),
    Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(("member_id", _TEXT), ("group_instance_id", _TEXT), ("error_code", Int16)),
        ),
    ),
)

LIST_GROUPS_V2 = layout("ListGroups", 16, 2, Schema(), admin.ListGroupsResponse_v1.SCHEMA)
LIST_GROUPS_V3 = layout(
    "ListGroups",
    16,
    3,
    Schema(("tags", TaggedFields)),
    Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "groups",
            CompactArray(
                ("group", _COMPACT_TEXT), ("protocol_type", _COMPACT_TEXT), ("tags", TaggedFields)
            ),
        ),
        ("tags", TaggedFields),
    ),
    flexible=True,
)
LIST_GROUPS_V4 = layout(
    "ListGroups",
    16,
    4,
    Schema(("states_filter", CompactArray(_COMPACT_TEXT)), ("tags", TaggedFields)),
    Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "groups",
            CompactArray(
                ("group", _COMPACT_TEXT),
                ("protocol_type", _COMPACT_TEXT),
                ("group_state", _COMPACT_TEXT),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    ),
    flexible=True,
)


def _described_groups(*, instance_ids: bool) -> Schema:
    member_fields: list[tuple[str, Any]] = [("member_id", _TEXT)]
    if instance_ids:
        member_fields.append(("group_instance_id", _TEXT))
    member_fields += [
        ("client_id", _TEXT),
        ("client_host", _TEXT),
        ("member_metadata", Bytes),
        ("member_assignment", Bytes),
    ]
    return Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", _TEXT),
                ("state", _TEXT),
                ("protocol_type", _TEXT),
                ("protocol", _TEXT),
                ("members", Array(*member_fields)),
                ("authorized_operations", Int32),
            ),
        ),
    )


DESCRIBE_GROUPS_V3 = layout(
    "DescribeGroups",
    15,
    3,
    admin.DescribeGroupsRequest_v3.SCHEMA,
    _described_groups(instance_ids=False),
)
DESCRIBE_GROUPS_V4 = layout(
    "DescribeGroups",
    15,
    4,
    admin.DescribeGroupsRequest_v3.SCHEMA,
    _described_groups(instance_ids=True),
)

OFFSET_DELETE_V0 = layout(
    "OffsetDelete",
    47,
    0,
    Schema(
        ("group_id", _TEXT),
        (
            "topics",
            Array(("name", _TEXT), ("partitions", Array(Schema(("partition_index", Int32))))),
        ),
    ),
    Schema(
        ("error_code", Int16),
        ("throttle_time_ms", Int32),
        (
            "topics",
            Array(
                ("name", _TEXT),
                ("partitions", Array(("partition_index", Int32), ("error_code", Int16))),
            ),
        ),
    ),
)

# --- IncrementalAlterConfigs -----------------------------------------------------------------

INCREMENTAL_ALTER_CONFIGS_V0 = layout(
    "IncrementalAlterConfigs",
    44,
    0,
    Schema(
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", _TEXT),
                (
                    "configs",
                    Array(("name", _TEXT), ("config_operation", Int8), ("value", _TEXT)),
                ),
            ),
        ),
        ("validate_only", Boolean),
    ),
    Schema(
        ("throttle_time_ms", Int32),
        (
            "responses",
            Array(
                ("error_code", Int16),
                ("error_message", _TEXT),
                ("resource_type", Int8),
                ("resource_name", _TEXT),
            ),
        ),
    ),
)
INCREMENTAL_ALTER_CONFIGS_V1 = layout(
    "IncrementalAlterConfigs",
    44,
    1,
    Schema(
        (
            "resources",
            CompactArray(
                ("resource_type", Int8),
                ("resource_name", _COMPACT_TEXT),
                (
                    "configs",
                    CompactArray(
                        ("name", _COMPACT_TEXT),
                        ("config_operation", Int8),
                        ("value", _COMPACT_TEXT),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("validate_only", Boolean),
        ("tags", TaggedFields),
    ),
    Schema(
        ("throttle_time_ms", Int32),
        (
            "responses",
            CompactArray(
                ("error_code", Int16),
                ("error_message", _COMPACT_TEXT),
                ("resource_type", Int8),
                ("resource_name", _COMPACT_TEXT),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    ),
    flexible=True,
)
