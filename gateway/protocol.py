"""The WebSocket protocol: client messages parsed from JSON, server messages rendered to JSON."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

from schemas.events import AudioEncoding, Speaker

logger = logging.getLogger(__name__)

MAX_PROFILE_BYTES: Final = 64 * 1024
SAMPLE_RATES: Final = (8000, 16000)
MAX_STREAM_TAG: Final = 255  # a stream tag is the first byte of each of its binary frames

ErrorCode = Literal[
    "bad_json",  # the text frame is not a JSON object
    "unknown_type",  # `type` is missing or not one the server knows
    "missing_field",  # a required field is absent
    "bad_field",  # a field has the wrong type or an unsupported value
    "bad_audio",  # a binary frame or audio_config the server cannot take
    "conversation_ended",  # a message after `end`
    "unavailable",  # Kafka did not take the message; the client may retry
    "internal",  # a bug on the server; the session continues
]


class ProtocolError(Exception):
    """A client message the server rejects; answered with an `error` message, not a close."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message


# --- client to server ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TranscriptChunk:
    """Words the client typed or recognised itself."""

    type: ClassVar[str] = "transcript_chunk"

    text: str
    speaker: Speaker = "customer"
    final: bool = True


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    """How the binary frames that follow are encoded; with `stream`, those tagged with it."""

    type: ClassVar[str] = "audio_config"

    encoding: AudioEncoding = "pcm_s16le"
    sample_rate: int = 16000
    speaker: Speaker = "customer"
    stream: int | None = None

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm_s16le" else 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.bytes_per_sample


@dataclass(frozen=True, kw_only=True)
class ContextMessage:
    """Customer profile and product notes for the conversation."""

    type: ClassVar[str] = "context"

    profile: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class EndMessage:
    """The conversation is over."""

    type: ClassVar[str] = "end"


ClientMessage = TranscriptChunk | AudioConfig | ContextMessage | EndMessage


def parse_client_message(text: str) -> ClientMessage:
    """One client text frame as a typed message; `ProtocolError` names what is wrong."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"the frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", f"a message must be a JSON object, not {_kind(data)}")
    message_type = data.get("type")
    if message_type is None:
        raise ProtocolError("unknown_type", "the message has no 'type'")
    if message_type == TranscriptChunk.type:
        return TranscriptChunk(
            text=_required_text(data, "text"),
            speaker=_speaker(data),
            final=_optional_bool(data, "final", default=True),
        )
    if message_type == AudioConfig.type:
        return _audio_config(data)
    if message_type == ContextMessage.type:
        return ContextMessage(profile=_profile(data))
    if message_type == EndMessage.type:
        return EndMessage()
    known = ", ".join(
        (TranscriptChunk.type, AudioConfig.type, ContextMessage.type, EndMessage.type)
    )
    raise ProtocolError("unknown_type", f"unknown type {message_type!r}; expected one of {known}")


def _required_text(data: dict[str, Any], name: str) -> str:
    if name not in data:
        raise ProtocolError("missing_field", f"'{name}' is required")
    value = data[name]
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"'{name}' must be a string, not {_kind(value)}")
    if not value.strip():
        raise ProtocolError("bad_field", f"'{name}' must not be empty")
    return value


def _optional_bool(data: dict[str, Any], name: str, *, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError("bad_field", f"'{name}' must be true or false, not {_kind(value)}")
    return value


def _speaker(data: dict[str, Any]) -> Speaker:
    value = data.get("speaker", "customer")
    if value == "customer":
        return "customer"
    if value == "rep":
        return "rep"
    raise ProtocolError("bad_field", f"'speaker' must be 'customer' or 'rep', not {value!r}")


def _audio_config(data: dict[str, Any]) -> AudioConfig:
    encoding_value = data.get("encoding", "pcm_s16le")
    encoding: AudioEncoding
    if encoding_value == "pcm_s16le":
        encoding = "pcm_s16le"
    elif encoding_value == "mulaw":
        encoding = "mulaw"
    else:
        raise ProtocolError(
            "bad_audio", f"'encoding' must be 'pcm_s16le' or 'mulaw', not {encoding_value!r}"
        )
    sample_rate = data.get("sample_rate", 16000)
    # bool is an int in Python; `true` is not a sample rate.
    if isinstance(sample_rate, bool) or sample_rate not in SAMPLE_RATES:
        raise ProtocolError(
            "bad_audio", f"'sample_rate' must be 8000 or 16000, not {sample_rate!r}"
        )
    return AudioConfig(
        encoding=encoding,
        sample_rate=int(sample_rate),
        speaker=_speaker(data),
        stream=_stream_tag(data),
    )


def _stream_tag(data: dict[str, Any]) -> int | None:
    tag = data.get("stream")
    if tag is None:
        return None
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag <= MAX_STREAM_TAG:
        raise ProtocolError(
            "bad_audio", f"'stream' must be an integer from 0 to {MAX_STREAM_TAG}, not {tag!r}"
        )
    return tag


def _profile(data: dict[str, Any]) -> dict[str, Any]:
    if "profile" not in data:
        raise ProtocolError("missing_field", "'profile' is required")
    profile = data["profile"]
    if not isinstance(profile, dict):
        raise ProtocolError("bad_field", f"'profile' must be a JSON object, not {_kind(profile)}")
    size = len(json.dumps(profile, ensure_ascii=False).encode())
    if size > MAX_PROFILE_BYTES:
        raise ProtocolError(
            "bad_field", f"'profile' is {size} bytes; at most {MAX_PROFILE_BYTES} are accepted"
        )
    return profile


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- server to client ---------------------------------------------------------------------


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class Ready:
    """The connection is authenticated and the session is live."""

    conversation_id: str
    session_id: str
    gateway_id: str

    def to_json(self) -> str:
        return _dumps(
            {
                "type": "ready",
                "conversation_id": self.conversation_id,
                "session_id": self.session_id,
                "gateway_id": self.gateway_id,
            }
        )


@dataclass(frozen=True, kw_only=True)
class Transcript:
    """Speech the recogniser heard."""

    speaker: Speaker
    text: str
    final: bool

    def to_json(self) -> str:
        return _dumps(
            {"type": "transcript", "speaker": self.speaker, "text": self.text, "final": self.final}
        )


@dataclass(frozen=True, kw_only=True)
class SuggestionDelta:
    """The next fragment of a streamed suggestion, with the whole text so far."""

    turn_id: str
    seq: int
    text: str
    full_text: str

    def to_json(self) -> str:
        return _dumps(
            {
                "type": "suggestion_delta",
                "turn_id": self.turn_id,
                "seq": self.seq,
                "text": self.text,
                "fullText": self.full_text,
            }
        )


@dataclass(frozen=True, kw_only=True)
class SuggestionComplete:
    """A suggestion is finished; `timings` are milliseconds per pipeline stage."""

    turn_id: str
    text: str
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return _dumps(
            {
                "type": "suggestion_complete",
                "turn_id": self.turn_id,
                "text": self.text,
                "timings": {stage: round(ms, 3) for stage, ms in self.timings.items()},
            }
        )


@dataclass(frozen=True, kw_only=True)
class SuggestionCancelled:
    """A suggestion was superseded by newer customer speech."""

    turn_id: str

    def to_json(self) -> str:
        return _dumps({"type": "suggestion_cancelled", "turn_id": self.turn_id})


@dataclass(frozen=True, kw_only=True)
class Throttled:
    """Capacity is saturated: the "thinking" indicator."""

    reason: str
    turn_id: str = ""

    def to_json(self) -> str:
        return _dumps({"type": "throttled", "reason": self.reason, "turn_id": self.turn_id})


@dataclass(frozen=True, kw_only=True)
class ErrorMessage:
    """A message the server could not take; the connection stays open."""

    code: ErrorCode
    message: str

    def to_json(self) -> str:
        return _dumps({"type": "error", "code": self.code, "message": self.message})


ServerMessage = (
    Ready
    | Transcript
    | SuggestionDelta
    | SuggestionComplete
    | SuggestionCancelled
    | Throttled
    | ErrorMessage
)


def message_type(message: ServerMessage) -> str:
    """The `type` a server message carries on the wire (a metrics label)."""
    return _SERVER_TYPES[type(message)]


_SERVER_TYPES: Final[dict[type[Any], str]] = {
    Ready: "ready",
    Transcript: "transcript",
    SuggestionDelta: "suggestion_delta",
    SuggestionComplete: "suggestion_complete",
    SuggestionCancelled: "suggestion_cancelled",
    Throttled: "throttled",
    ErrorMessage: "error",
}
