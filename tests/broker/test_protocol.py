"""Request parsing and response encoding, below the clients."""

from __future__ import annotations

import struct

import pytest
from aiokafka.protocol.types import CompactString, TaggedFields

from broker.errors import MalformedRequestError
from broker.protocol import (
    APIS,
    Request,
    UnsupportedApiError,
    advertised_versions,
    encode_response,
    parse_request,
)


def _frame(api_key: int, version: int, body: bytes, *, flexible: bool = False) -> bytes:
    header = struct.pack(">hhih", api_key, version, 7, 3) + b"cli"
    if flexible:
        header += TaggedFields.encode({})
    return header + body


def test_flexible_api_versions_v3_is_parsed_and_answered_with_header_v0() -> None:
    body = CompactString().encode("librdkafka") + CompactString().encode("2.16") + b"\x00"
    request = parse_request(_frame(18, 3, body, flexible=True))
    assert request.body["client_software_name"] == "librdkafka"

    frame = encode_response(request, {"error_code": 0, "api_versions": advertised_versions()})
    size, correlation_id, error_code = struct.unpack_from(">iih", frame)
    assert (size, correlation_id, error_code) == (len(frame) - 4, 7, 0)
    # Compact array: count + 1 as an unsigned varint, right after the error code.
    assert frame[10] == len(advertised_versions()) + 1


def test_fields_a_handler_omits_are_zero_and_null_arrays_stay_null() -> None:
    request = parse_request(_frame(9, 3, struct.pack(">h", 1) + b"g" + struct.pack(">i", -1)))
    assert request.body == {"consumer_group": "g", "topics": None}
    frame = encode_response(request, {"topics": []})
    assert frame[4:] == struct.pack(">iiih", 7, 0, 0, 0)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\x00\x01", MalformedRequestError),
        (_frame(4242, 0, b""), UnsupportedApiError),
        (_frame(0, 2, b""), UnsupportedApiError),  # Produce before record batches
        (_frame(3, 1, b"\x00\x00\x00\x02\x00\x01"), MalformedRequestError),
    ],
)
def test_frames_the_broker_cannot_serve_are_refused(frame: bytes, error: type) -> None:
    with pytest.raises(error):
        parse_request(frame)


def test_every_api_is_advertised_with_a_contiguous_range() -> None:
    advertised = {entry["api_key"]: entry for entry in advertised_versions()}
    assert set(advertised) == set(APIS)
    for key, spec in APIS.items():
        assert list(spec.requests) == list(range(spec.min_version, spec.max_version + 1))
        assert advertised[key]["max_version"] == spec.max_version
    assert isinstance(parse_request(_frame(18, 0, b"")), Request)
