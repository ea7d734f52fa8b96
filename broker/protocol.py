"""Kafka wire format: frames, request headers, the API/version table and response encoding.

Request and response layouts come from aiokafka's protocol classes (aiokafka.protocol.*); what
aiokafka lacks is declared in layouts.py with aiokafka's own field types. Bodies are decoded by
decoding.py, which bounds the work and memory one request can cost.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
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
from aiokafka.protocol.api import RequestStruct
from aiokafka.protocol.types import TaggedFields

from broker import layouts
from broker.decoding import MAX_REQUEST_ITEMS, decode_body, skip_tagged_fields
from broker.encoding import encode_body
from broker.errors import MalformedRequestError

logger = logging.getLogger(__name__)

API_VERSIONS_KEY: Final = 18

_HEADER = struct.Struct(">hhih")
_INT32 = struct.Struct(">i")


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
            layouts.JOIN_GROUP_V3,
            layouts.JOIN_GROUP_V4,
            group.JoinGroupRequest_v5,
        ),
        _spec(
            12,
            "Heartbeat",
            group.HeartbeatRequest_v0,
            group.HeartbeatRequest_v1,
            layouts.HEARTBEAT_V2,
            layouts.HEARTBEAT_V3,
        ),
        _spec(
            13,
            "LeaveGroup",
            group.LeaveGroupRequest_v0,
            group.LeaveGroupRequest_v1,
            layouts.LEAVE_GROUP_V2,
            layouts.LEAVE_GROUP_V3,
        ),
        _spec(
            14,
            "SyncGroup",
            group.SyncGroupRequest_v0,
            group.SyncGroupRequest_v1,
            layouts.SYNC_GROUP_V2,
            group.SyncGroupRequest_v3,
        ),
        _spec(
            15,
            "DescribeGroups",
            admin.DescribeGroupsRequest_v0,
            admin.DescribeGroupsRequest_v1,
            admin.DescribeGroupsRequest_v2,
            layouts.DESCRIBE_GROUPS_V3,
            layouts.DESCRIBE_GROUPS_V4,
        ),
        _spec(
            16,
            "ListGroups",
            admin.ListGroupsRequest_v0,
            admin.ListGroupsRequest_v1,
            layouts.LIST_GROUPS_V2,
            layouts.LIST_GROUPS_V3,
            layouts.LIST_GROUPS_V4,
        ),
        _spec(17, "SaslHandshake", admin.SaslHandShakeRequest_v0, admin.SaslHandShakeRequest_v1),
        _spec(
            18,
            "ApiVersions",
            admin.ApiVersionRequest_v0,
            admin.ApiVersionRequest_v1,
            admin.ApiVersionRequest_v2,
            layouts.API_VERSIONS_V3,
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
        _spec(
            21,
            "DeleteRecords",
            admin.DeleteRecordsRequest_v0,
            admin.DeleteRecordsRequest_v1,
            admin.DeleteRecordsRequest_v2,
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
        _spec(
            36,
            "SaslAuthenticate",
            admin.SaslAuthenticateRequest_v0,
            admin.SaslAuthenticateRequest_v1,
        ),
        _spec(42, "DeleteGroups", admin.DeleteGroupsRequest_v0, admin.DeleteGroupsRequest_v1),
        _spec(
            44,
            "IncrementalAlterConfigs",
            layouts.INCREMENTAL_ALTER_CONFIGS_V0,
            layouts.INCREMENTAL_ALTER_CONFIGS_V1,
        ),
        _spec(47, "OffsetDelete", layouts.OFFSET_DELETE_V0),
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


def parse_request(frame: bytes, *, max_items: int = MAX_REQUEST_ITEMS) -> Request:
    """Parse one frame (without its length prefix) into a request this broker serves.

    Raises UnsupportedApiError for an API or version not served, MalformedRequestError for
    bytes that do not parse, and RequestTooComplexError past `max_items` array items.
    """
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
    if request_class.FLEXIBLE_VERSION:
        position = skip_tagged_fields(frame, position)  # header tags: none we use
    try:
        body = decode_body(request_class.SCHEMA, frame, position, max_items=max_items)
    except MalformedRequestError as exc:
        raise type(exc)(f"{spec.name} v{header.api_version}: {exc}") from None
    return Request(header, spec, body)


# --- responses --------------------------------------------------------------------------------


def encode_response(request: Request, body: Mapping[str, Any]) -> bytes:
    """A whole response frame (length prefix, header, body) for a request.

    `body` uses aiokafka's field names; fields the negotiated version lacks are ignored and
    fields it has but `body` omits are zero, so handlers can write one dict for all versions.
    """
    request_class = request.spec.requests[request.header.api_version]
    response_class = request_class.RESPONSE_TYPE
    payload = encode_body(response_class.SCHEMA, body)
    # ApiVersions answers always use response header v0, even in flexible versions (KIP-511).
    header = _INT32.pack(request.header.correlation_id)
    if request_class.FLEXIBLE_VERSION and request.header.api_key != API_VERSIONS_KEY:
        header += TaggedFields.encode({})
    return _INT32.pack(len(header) + len(payload)) + header + payload


def api_versions_error_frame(correlation_id: int) -> bytes:
    """ApiVersions v0 answer with UNSUPPORTED_VERSION, for a client asking a newer version.

    As Apache Kafka does (KIP-511), it lists only ApiVersions' own range; the client retries
    with the highest version listed.
    """
    spec = APIS[API_VERSIONS_KEY]
    own_range = {
        "api_key": spec.key,
        "min_version": spec.min_version,
        "max_version": spec.max_version,
    }
    response = admin.ApiVersionResponse_v0
    payload = encode_body(response.SCHEMA, {"error_code": 35, "api_versions": [own_range]})
    header = _INT32.pack(correlation_id)
    return _INT32.pack(len(header) + len(payload)) + header + payload


def advertised_versions() -> list[dict[str, int]]:
    """The ApiVersions list: every API served, with its version range."""
    return [
        {"api_key": spec.key, "min_version": spec.min_version, "max_version": spec.max_version}
        for spec in APIS.values()
    ]
