"""Kafka wire format: frames, request headers, the API/version table and response encoding.

Request and response layouts come from aiokafka's protocol classes (aiokafka.protocol.*); only
what aiokafka lacks is declared here with aiokafka's own field types. The broker advertises, per
API, the versions whose layouts aiokafka's own client uses against real Kafka, so every layout
here has been exercised by a real cluster.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

from aiokafka.protocol import (
    admin,
    commit,
    coordination,
    fetch,
    group,
    metadata,
    offset,
    produce,
    transaction,
)
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
    Int64,
    Schema,
    String,
    TaggedFields,
    UnsignedVarInt32,
)

from broker.errors import MalformedRequestError

logger = logging.getLogger(__name__)

API_VERSIONS_KEY: Final = 18
# ApiVersions v3+ requests use the flexible request header (KIP-482); every other API this
# broker serves is advertised only in non-flexible versions, so this is the one exception.
FLEXIBLE_API_VERSIONS_MIN: Final = 3

_HEADER = struct.Struct(">hhih")
_INT32 = struct.Struct(">i")


# --- layouts aiokafka does not ship ----------------------------------------------------------


class ApiVersionsResponseV3(Response):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 18
    API_VERSION = 3
    SCHEMA = Schema(
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
    )


class ApiVersionsRequestV3(RequestStruct):  # type: ignore[misc]  # aiokafka ships no types
    FLEXIBLE_VERSION = True
    API_KEY = 18
    API_VERSION = 3
    RESPONSE_TYPE = ApiVersionsResponseV3
    SCHEMA = Schema(
        ("client_software_name", CompactString("utf-8")),
        ("client_software_version", CompactString("utf-8")),
        ("tags", TaggedFields),
    )


class OffsetDeleteResponseV0(Response):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 47
    API_VERSION = 0
    SCHEMA = Schema(
        ("error_code", Int16),
        ("throttle_time_ms", Int32),
        (
            "topics",
            Array(
                ("name", String("utf-8")),
                ("partitions", Array(("partition_index", Int32), ("error_code", Int16))),
            ),
        ),
    )


class OffsetDeleteRequestV0(RequestStruct):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 47
    API_VERSION = 0
    RESPONSE_TYPE = OffsetDeleteResponseV0
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        (
            "topics",
            Array(
                ("name", String("utf-8")), ("partitions", Array(Schema(("partition_index", Int32))))
            ),
        ),
    )


# --- the API table ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """One API: its key, name and the request layout for every version the broker serves."""

    key: int
    name: str
    requests: Mapping[int, type[RequestStruct]]

    @property
    def min_version(self) -> int:
        return min(self.requests)

    @property
    def max_version(self) -> int:
        return max(self.requests)


# ApiVersionRequest_v2 names the v1 response class, whose fields are exactly v2's.
_SAME_RESPONSE_LAYOUT: Final = {(18, 2)}


def _spec(key: int, name: str, *classes: type[RequestStruct]) -> ApiSpec:
    requests = {cls.API_VERSION: cls for cls in classes}
    # ApiVersions advertises a range, so the versions served must have no gaps; and each request
    # must answer with its own version's layout (aiokafka pairs DescribeGroups v3 with the v2
    # response, so v3 is not served).
    contiguous = sorted(requests) == list(range(min(requests), max(requests) + 1))
    mispaired = [
        cls
        for cls in classes
        if cls.RESPONSE_TYPE.API_VERSION != cls.API_VERSION
        and (key, cls.API_VERSION) not in _SAME_RESPONSE_LAYOUT
    ]
    duplicated = len(requests) != len(classes)
    if any(key != cls.API_KEY for cls in classes) or duplicated or not contiguous or mispaired:
        raise RuntimeError(f"inconsistent request layouts for {name}")
    return ApiSpec(key, name, requests)


# Produce from v3 and Fetch from v4 carry record batches (magic 2), the only format stored.
APIS: Final[Mapping[int, ApiSpec]] = {
    spec.key: spec
    for spec in (
        _spec(
            0,
            "Produce",
            produce.ProduceRequest_v3,
            produce.ProduceRequest_v4,
            produce.ProduceRequest_v5,
            produce.ProduceRequest_v6,
            produce.ProduceRequest_v7,
        ),
        _spec(
            1,
            "Fetch",
            fetch.FetchRequest_v4,
            fetch.FetchRequest_v5,
            fetch.FetchRequest_v6,
            fetch.FetchRequest_v7,
            fetch.FetchRequest_v8,
            fetch.FetchRequest_v9,
            fetch.FetchRequest_v10,
            fetch.FetchRequest_v11,
        ),
        _spec(
            2,
            "ListOffsets",
            offset.OffsetRequest_v1,
            offset.OffsetRequest_v2,
            offset.OffsetRequest_v3,
        ),
        _spec(
            3,
            "Metadata",
            metadata.MetadataRequest_v0,
            metadata.MetadataRequest_v1,
            metadata.MetadataRequest_v2,
            metadata.MetadataRequest_v3,
            metadata.MetadataRequest_v4,
            metadata.MetadataRequest_v5,
        ),
        _spec(8, "OffsetCommit", commit.OffsetCommitRequest_v2, commit.OffsetCommitRequest_v3),
        _spec(
            9,
            "OffsetFetch",
            commit.OffsetFetchRequest_v1,
            commit.OffsetFetchRequest_v2,
            commit.OffsetFetchRequest_v3,
        ),
        _spec(
            10,
            "FindCoordinator",
            coordination.FindCoordinatorRequest_v0,
            coordination.FindCoordinatorRequest_v1,
        ),
        _spec(
            11,
            "JoinGroup",
            group.JoinGroupRequest_v0,
            group.JoinGroupRequest_v1,
            group.JoinGroupRequest_v2,
        ),
        _spec(12, "Heartbeat", group.HeartbeatRequest_v0, group.HeartbeatRequest_v1),
        _spec(13, "LeaveGroup", group.LeaveGroupRequest_v0, group.LeaveGroupRequest_v1),
        _spec(14, "SyncGroup", group.SyncGroupRequest_v0, group.SyncGroupRequest_v1),
        _spec(
            15,
            "DescribeGroups",
            admin.DescribeGroupsRequest_v0,
            admin.DescribeGroupsRequest_v1,
            admin.DescribeGroupsRequest_v2,
        ),
        _spec(16, "ListGroups", admin.ListGroupsRequest_v0, admin.ListGroupsRequest_v1),
        _spec(
            18,
            "ApiVersions",
            admin.ApiVersionRequest_v0,
            admin.ApiVersionRequest_v1,
            admin.ApiVersionRequest_v2,
            ApiVersionsRequestV3,
        ),
        _spec(
            19,
            "CreateTopics",
            admin.CreateTopicsRequest_v0,
            admin.CreateTopicsRequest_v1,
            admin.CreateTopicsRequest_v2,
            admin.CreateTopicsRequest_v3,
        ),
        _spec(
            20,
            "DeleteTopics",
            admin.DeleteTopicsRequest_v0,
            admin.DeleteTopicsRequest_v1,
            admin.DeleteTopicsRequest_v2,
            admin.DeleteTopicsRequest_v3,
        ),
        _spec(22, "InitProducerId", transaction.InitProducerIdRequest_v0),
        _spec(
            32,
            "DescribeConfigs",
            admin.DescribeConfigsRequest_v0,
            admin.DescribeConfigsRequest_v1,
            admin.DescribeConfigsRequest_v2,
        ),
        _spec(33, "AlterConfigs", admin.AlterConfigsRequest_v0, admin.AlterConfigsRequest_v1),
        _spec(
            37,
            "CreatePartitions",
            admin.CreatePartitionsRequest_v0,
            admin.CreatePartitionsRequest_v1,
        ),
        _spec(42, "DeleteGroups", admin.DeleteGroupsRequest_v0, admin.DeleteGroupsRequest_v1),
        _spec(47, "OffsetDelete", OffsetDeleteRequestV0),
    )
}


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: its header and its body as nested dicts keyed by aiokafka's names."""

    header: RequestHeader
    spec: ApiSpec
    body: dict[str, Any]


class UnsupportedApiError(MalformedRequestError):
    """The header names an API key or version this broker does not serve."""

    def __init__(self, header: RequestHeader, message: str) -> None:
        super().__init__(message)
        self.header = header


def parse_header(frame: bytes) -> tuple[RequestHeader, int]:
    """The request header at the start of a frame, and where the body starts."""
    if len(frame) < _HEADER.size:
        raise MalformedRequestError(f"frame of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id, client_id_len = _HEADER.unpack_from(frame)
    position = _HEADER.size
    client_id = ""
    if client_id_len > 0:
        raw = frame[position : position + client_id_len]
        if len(raw) != client_id_len:
            raise MalformedRequestError("client id runs past the end of the frame")
        client_id = raw.decode("utf-8", errors="replace")
        position += client_id_len
    return RequestHeader(api_key, api_version, correlation_id, client_id), position


def parse_request(frame: bytes) -> Request:
    """Parse one frame (without its length prefix) into a request this broker serves."""
    header, position = parse_header(frame)
    spec = APIS.get(header.api_key)
    if spec is None:
        raise UnsupportedApiError(header, f"unknown API key {header.api_key}")
    request_class = spec.requests.get(header.api_version)
    if request_class is None:
        raise UnsupportedApiError(
            header,
            f"{spec.name} v{header.api_version} is not supported "
            f"(v{spec.min_version}-v{spec.max_version} are)",
        )
    buffer = BytesIO(frame)
    buffer.seek(position)
    try:
        if request_class.FLEXIBLE_VERSION:
            TaggedFields.decode(buffer)  # header tags: none are defined that we use
        values = request_class.SCHEMA.decode(buffer)
        body = _to_dict(request_class.SCHEMA, values)
    except (ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise MalformedRequestError(
            f"{spec.name} v{header.api_version} body does not parse: {exc}"
        ) from exc
    return Request(header, spec, body)


def _to_dict(schema: Schema, values: Sequence[Any]) -> dict[str, Any]:
    """Decoded positional values as nested dicts by field name (null arrays stay None)."""
    result: dict[str, Any] = {}
    for name, field, value in zip(schema.names, schema.fields, values, strict=True):
        if isinstance(field, Schema):
            result[name] = _to_dict(field, value)
        elif isinstance(field, Array) and isinstance(field.array_of, Schema) and value is not None:
            item_schema = field.array_of
            result[name] = [_to_dict(item_schema, item) for item in value]
        else:
            result[name] = value
    return result


# --- responses --------------------------------------------------------------------------------

_MISSING: Final = object()


_ZERO_VALUES: Final[dict[Any, Any]] = {
    Int8: 0,
    Int16: 0,
    Int32: 0,
    Int64: 0,
    UnsignedVarInt32: 0,
    Boolean: False,
    Bytes: None,
}


def _default(field: Any) -> Any:
    if field is TaggedFields:
        return {}
    if isinstance(field, String):
        return ""
    if isinstance(field, Array):
        return []
    if isinstance(field, Schema):
        return _values(field, {})
    if field in _ZERO_VALUES:
        return _ZERO_VALUES[field]
    raise TypeError(f"no default for field type {field!r}")


def _values(schema: Schema, data: Mapping[str, Any]) -> list[Any]:
    """Positional values for a schema from a dict; absent fields take the type's zero value."""
    values: list[Any] = []
    for name, field in zip(schema.names, schema.fields, strict=True):
        value = data.get(name, _MISSING)
        if value is _MISSING:
            values.append(_default(field))
        elif isinstance(field, Schema):
            values.append(_values(field, value))
        elif isinstance(field, Array) and isinstance(field.array_of, Schema) and value is not None:
            item_schema = field.array_of
            values.append([_values(item_schema, item) for item in value])
        else:
            values.append(value)
    return values


def encode_response(request: Request, body: Mapping[str, Any]) -> bytes:
    """A whole response frame (length prefix, header, body) for a request.

    `body` uses aiokafka's field names; fields the negotiated version lacks are ignored and
    fields it has but `body` omits are zero, so handlers can write one dict for all versions.
    """
    request_class = request.spec.requests[request.header.api_version]
    response_class = request_class.RESPONSE_TYPE
    payload: bytes = response_class.SCHEMA.encode(_values(response_class.SCHEMA, body))
    # ApiVersions answers always use response header v0, even in flexible versions (KIP-511).
    header = _INT32.pack(request.header.correlation_id)
    if request_class.FLEXIBLE_VERSION and request.header.api_key != API_VERSIONS_KEY:
        header += TaggedFields.encode({})
    return _INT32.pack(len(header) + len(payload)) + header + payload


def api_versions_error_frame(
    correlation_id: int, api_versions: Sequence[Mapping[str, int]]
) -> bytes:
    """ApiVersions v0 answer with UNSUPPORTED_VERSION, for a client asking a newer version.

    Per KIP-511 the client then retries with the highest version listed for key 18.
    """
    response = admin.ApiVersionResponse_v0
    payload: bytes = response.SCHEMA.encode(
        _values(response.SCHEMA, {"error_code": 35, "api_versions": api_versions})
    )
    header = _INT32.pack(correlation_id)
    return _INT32.pack(len(header) + len(payload)) + header + payload


def advertised_versions() -> list[dict[str, int]]:
    """The ApiVersions list: every API served, with its version range."""
    return [
        {"api_key": spec.key, "min_version": spec.min_version, "max_version": spec.max_version}
        for spec in APIS.values()
    ]
