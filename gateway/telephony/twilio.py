"""Twilio Media Streams: the JSON text frames Twilio sends, parsed into call events.

Twilio sends `connected`, then one `start` (streamSid, callSid, tracks, mediaFormat,
customParameters), then `media` frames (track, chunk, timestamp, base64 payload of 8 kHz mu-law),
with `mark` and `dtmf` along the way, and `stop` at the end. Numbers such as `sequenceNumber`,
`chunk` and `timestamp` arrive as strings. The inbound track is the caller (the customer) and
the outbound track is what the call sends the caller (the rep's voice).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Final

from gateway.telephony.media_stream import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED,
    CallAudio,
    CallEvent,
    CallNotice,
    CallStarted,
    CallStopped,
    MediaStreamError,
)
from schemas.events import Speaker

logger = logging.getLogger(__name__)

TRACK_SPEAKERS: Final[dict[str, Speaker]] = {"inbound": "customer", "outbound": "rep"}
MEDIA_FORMAT: Final = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
QUOTE_CHARS: Final = 80  # how much of a bad value a log line repeats


class TwilioDialect:
    """Parses one Twilio Media Streams text frame; `MediaStreamError` says what is wrong."""

    name: Final = "twilio"

    def parse(self, text: str) -> CallEvent:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise MediaStreamError(
                f"a frame is not JSON ({exc})", close_code=CLOSE_INVALID_PAYLOAD
            ) from None
        if not isinstance(data, dict):
            raise MediaStreamError("a frame is not a JSON object", close_code=CLOSE_INVALID_PAYLOAD)
        event = data.get("event")
        if event == "media":
            return _media(_object(data, "media"))
        if event == "start":
            return _start(_object(data, "start"), data)
        if event in ("connected", "mark", "dtmf"):
            # dtmf digits are not logged or kept: callers key in card numbers and PINs.
            return CallNotice(what=str(event))
        if event == "stop":
            return CallStopped()
        raise MediaStreamError(f"unknown event {_quote(event)}", close_code=CLOSE_UNSUPPORTED)


def _start(start: dict[str, Any], frame: dict[str, Any]) -> CallStarted:
    media_format = start.get("mediaFormat")
    if media_format != MEDIA_FORMAT:
        raise MediaStreamError(
            f"unsupported mediaFormat {_quote(media_format)}: expected {MEDIA_FORMAT}",
            close_code=CLOSE_UNSUPPORTED,
        )
    tracks = start.get("tracks")
    if (
        not isinstance(tracks, list)
        or not tracks
        or any(track not in TRACK_SPEAKERS for track in tracks)
    ):
        raise MediaStreamError(
            f"'tracks' must list 'inbound' and/or 'outbound', not {_quote(tracks)}",
            close_code=CLOSE_UNSUPPORTED,
        )
    parameters = start.get("customParameters")
    if not isinstance(parameters, dict):
        parameters = {}
    conversation_id = parameters.get("conversation_id")
    token = parameters.get("token")
    if not isinstance(conversation_id, str) or not isinstance(token, str):
        raise MediaStreamError(
            "customParameters must carry 'conversation_id' and 'token'",
            close_code=CLOSE_UNAUTHORIZED,
            reason="Unauthorized",
        )
    stream_sid = start.get("streamSid", frame.get("streamSid"))
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid or not isinstance(call_sid, str):
        raise MediaStreamError(
            "'start' must carry 'streamSid' and 'callSid'", close_code=CLOSE_INVALID_PAYLOAD
        )
    return CallStarted(
        call_id=call_sid,
        stream_id=stream_sid,
        conversation_id=conversation_id,
        token=token,
        speakers={track: TRACK_SPEAKERS[track] for track in tracks},
        encoding="mulaw",
        sample_rate=8000,
    )


def _media(media: dict[str, Any]) -> CallAudio:
    track = media.get("track")
    if track not in TRACK_SPEAKERS:
        raise MediaStreamError(
            f"media for unknown track {_quote(track)}", close_code=CLOSE_INVALID_PAYLOAD
        )
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise MediaStreamError("media without a 'payload'", close_code=CLOSE_INVALID_PAYLOAD)
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaStreamError(
            f"media payload is not base64: {_quote(payload)}", close_code=CLOSE_INVALID_PAYLOAD
        ) from None
    return CallAudio(track=str(track), audio=audio)


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise MediaStreamError(
            f"'{data.get('event')}' without a '{name}' object", close_code=CLOSE_INVALID_PAYLOAD
        )
    return value


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}…"
