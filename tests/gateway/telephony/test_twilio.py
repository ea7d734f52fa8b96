"""Twilio Media Streams frames, exactly as Twilio sends them, parsed into call events."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.telephony.media_stream import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED,
    CallAudio,
    CallNotice,
    CallStarted,
    CallStopped,
    MediaStreamError,
)
from gateway.telephony.twilio import TwilioDialect

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA5f0ab4b3b8b1c6a1e1a1b2c3d4e5f6a7"


def start_frame(**start_overrides: Any) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": STREAM_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound", "outbound"],
            "customParameters": {"conversation_id": "c1", "token": "tok"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            **start_overrides,
        },
        "streamSid": STREAM_SID,
    }


def parse(frame: dict[str, Any] | str) -> object:
    return TwilioDialect().parse(frame if isinstance(frame, str) else json.dumps(frame))


def test_connected_mark_and_dtmf_need_no_action() -> None:
    assert parse({"event": "connected", "protocol": "Call", "version": "1.0.0"}) == CallNotice(
        what="connected"
    )
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": "m"}}
    assert parse(mark) == CallNotice(what="mark")
    dtmf = {
        "event": "dtmf",
        "streamSid": STREAM_SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
    assert parse(dtmf) == CallNotice(what="dtmf")  # the digit itself is never kept


def test_start_maps_inbound_to_the_customer_and_outbound_to_the_rep() -> None:
    assert parse(start_frame()) == CallStarted(
        call_id=CALL_SID,
        stream_id=STREAM_SID,
        conversation_id="c1",
        token="tok",
        speakers={"inbound": "customer", "outbound": "rep"},
        encoding="mulaw",
        sample_rate=8000,
    )
    inbound_only = parse(start_frame(tracks=["inbound"]))
    assert isinstance(inbound_only, CallStarted)
    assert inbound_only.speakers == {"inbound": "customer"}


def test_media_payload_is_decoded_from_base64() -> None:
    audio = bytes(range(160))
    frame = {
        "event": "media",
        "sequenceNumber": "3",
        "media": {
            "track": "outbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": base64.b64encode(audio).decode(),
        },
        "streamSid": STREAM_SID,
    }
    assert parse(frame) == CallAudio(track="outbound", audio=audio)


def test_stop_ends_the_call() -> None:
    frame = {
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": "AC" + "0" * 32, "callSid": CALL_SID},
        "streamSid": STREAM_SID,
    }
    assert parse(frame) == CallStopped()


@pytest.mark.parametrize(
    ("frame", "close_code", "wanted"),
    [
        ({"event": "hangup"}, CLOSE_UNSUPPORTED, "unknown event 'hangup'"),
        ({"sequenceNumber": "1"}, CLOSE_UNSUPPORTED, "unknown event None"),
        ("not json", CLOSE_INVALID_PAYLOAD, "not JSON"),
        ("[1, 2]", CLOSE_INVALID_PAYLOAD, "not a JSON object"),
        (
            {"event": "media", "media": {"track": "inbound", "payload": "%%%notbase64"}},
            CLOSE_INVALID_PAYLOAD,
            "media payload is not base64",
        ),
        (
            {"event": "media", "media": {"track": "both", "payload": ""}},
            CLOSE_INVALID_PAYLOAD,
            "unknown track 'both'",
        ),
        ({"event": "media"}, CLOSE_INVALID_PAYLOAD, "without a 'media' object"),
        (
            start_frame(
                mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}
            ),
            CLOSE_UNSUPPORTED,
            "unsupported mediaFormat",
        ),
        (
            start_frame(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000}),
            CLOSE_UNSUPPORTED,
            "unsupported mediaFormat",
        ),
        (start_frame(tracks=["inbound_track"]), CLOSE_UNSUPPORTED, "'tracks'"),
        (start_frame(customParameters={}), CLOSE_UNAUTHORIZED, "'conversation_id' and 'token'"),
        (start_frame(callSid=None), CLOSE_INVALID_PAYLOAD, "'streamSid' and 'callSid'"),
    ],
)
def test_bad_input_names_what_is_wrong(
    frame: dict[str, Any] | str, close_code: int, wanted: str
) -> None:
    with pytest.raises(MediaStreamError, match=wanted) as caught:
        parse(frame)
    assert caught.value.close_code == close_code
    assert len(caught.value.reason.encode()) <= 123  # fits a close frame


def test_a_huge_bad_value_is_quoted_short() -> None:
    with pytest.raises(MediaStreamError) as caught:
        parse({"event": "x" * 100_000})
    assert len(str(caught.value)) < 200
