"""Response encoding: compiled encoders write what aiokafka's own layouts read back."""

from __future__ import annotations

from aiokafka.protocol.admin import ApiVersionResponse_v0
from aiokafka.protocol.metadata import MetadataResponse_v5

from broker.encoding import encode_body
from broker.layouts import LIST_GROUPS_V4


def test_a_metadata_answer_round_trips_through_aiokafka() -> None:
    body = {
        "brokers": [{"node_id": 1, "host": "h", "port": 9092, "rack": None}],
        "cluster_id": "c",
        "controller_id": 1,
        "topics": [{"error_code": 3, "topic": "missing", "partitions": []}],
    }
    decoded = MetadataResponse_v5.decode(encode_body(MetadataResponse_v5.SCHEMA, body))
    assert decoded.brokers == [(1, "h", 9092, None)]
    assert decoded.topics == [(3, "missing", False, [])]  # is_internal: its zero value


def test_omitted_fields_take_their_zero_values() -> None:
    decoded = ApiVersionResponse_v0.decode(encode_body(ApiVersionResponse_v0.SCHEMA, {}))
    assert (decoded.error_code, decoded.api_versions) == (0, [])


def test_flexible_layouts_get_compact_lengths_and_tags() -> None:
    schema = LIST_GROUPS_V4.RESPONSE_TYPE.SCHEMA
    body = {"groups": [{"group": "g", "protocol_type": "consumer", "group_state": "Stable"}]}
    decoded = LIST_GROUPS_V4.RESPONSE_TYPE.decode(encode_body(schema, body))
    assert [tuple(group[:3]) for group in decoded.groups] == [("g", "consumer", "Stable")]
