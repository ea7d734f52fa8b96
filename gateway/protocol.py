"""The WebSocket protocol: client messages parsed from JSON, server messages rendered to JSON."""

from __future__ import annotations

import json
import logging
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

import orjson

from schemas.events import AudioEncoding, LlmState, Speaker

logger = logging.getLogger(__name__)

MAX_PROFILE_BYTES: Final = 64 * 1024
SAMPLE_RATES: Final = (8000, 16000)
MAX_STREAM_TAG: Final = 255  # a stream tag is the first byte of each of its binary frames
# `seq` and audio offsets are JSON numbers: keep them exact in every client language.
MAX_SEQ: Final = 2**53 - 1
# An error quotes at most this much of what the client sent, so a flood of bad 1 MB frames
# costs the server (and its send queue) a few hundred bytes per error, not a megabyte.
QUOTE_BYTES: Final = 200
MAX_ERROR_MESSAGE_BYTES: Final = 1024
CLIENT_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ErrorCode = Literal[
    "bad_json",  # the text frame is not a JSON object
    "bad_text",  # a string holds a lone UTF-16 surrogate: not text any store can keep
    "unknown_type",  # `type` is missing or not one the server knows
    "missing_field",  # a required field is absent
    "bad_field",  # a field has the wrong type or an unsupported value
    "bad_audio",  # a binary frame or audio_config the server cannot take
    "bad_token",  # a `token` renewal that does not admit to this conversation
    "conversation_ended",  # a message after `end`
    "rate_limited",  # over the conversation's messages/s or bytes/s: dropped, not stored
    "too_large",  # the event is bigger than Kafka takes: no retry can store it
    "unavailable",  # Kafka did not store the message in time; the client may resend it
    "internal",  # a bug on the server; the session continues
]


class ProtocolError(Exception):
    """A client message the server rejects; answered with an `error` message, not a close.

    `seq` is the message's own, when it carried a valid one, so the client learns which
    message failed.
    """

    def __init__(self, code: ErrorCode, message: str, *, seq: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message
        self.seq = seq


def _quoter() -> reprlib.Repr:
    quoter = reprlib.Repr()  # keyword arguments only from Python 3.12
    quoter.maxlevel = 2
    quoter.maxdict = quoter.maxlist = quoter.maxtuple = quoter.maxset = 4
    quoter.maxstring = quoter.maxother = 120
    return quoter


_QUOTER: Final = _quoter()


def quote(value: object) -> str:
    """`value` as Python would show it, cut to at most QUOTE_BYTES bytes of UTF-8.

    reprlib never builds the whole repr of a huge value, and repr escapes lone surrogates,
    so the quote is always cheap and always valid text.
    """
    shown = _QUOTER.repr(value)
    encoded = shown.encode("utf-8", errors="backslashreplace")
    if len(encoded) <= QUOTE_BYTES:
        return shown
    return encoded[: QUOTE_BYTES - 3].decode("utf-8", errors="ignore") + "..."


# --- client to server ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TranscriptChunk:
    """Words the client typed or recognised itself."""

    type: ClassVar[str] = "transcript_chunk"

    text: str
    speaker: Speaker = "customer"
    final: bool = True
    seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    """How the binary frames that follow are encoded (with `stream`, those tagged with it),
    and where in that audio stream they start (`offset`, bytes; None continues the count)."""

    type: ClassVar[str] = "audio_config"

    encoding: AudioEncoding = "pcm_s16le"
    sample_rate: int = 16000
    speaker: Speaker = "customer"
    stream: int | None = None
    offset: int | None = None
    seq: int | None = None

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
    seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class EndMessage:
    """The conversation is over."""

    type: ClassVar[str] = "end"

    seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class TokenRenewal:
    """A fresh token for this conversation: the session lives until the new one expires."""

    type: ClassVar[str] = "token"

    token: str
    seq: int | None = None


ClientMessage = TranscriptChunk | AudioConfig | ContextMessage | EndMessage | TokenRenewal
_CLIENT_TYPES: Final = (
    TranscriptChunk.type,
    AudioConfig.type,
    ContextMessage.type,
    EndMessage.type,
    TokenRenewal.type,
)
# A lone surrogate can only come from a JSON escape: the frame itself is valid UTF-8.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def parse_client_message(text: str) -> ClientMessage:
    """One client text frame as a typed message; `ProtocolError` names what is wrong (and the
    message's `seq`, once that could be read)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"the frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", f"a message must be a JSON object, not {_kind(data)}")
    seq = _seq(data)
    try:
        if _SURROGATE_ESCAPE.search(text):
            _check_text(data)
        return _message(data, seq)
    except ProtocolError as exc:
        exc.seq = seq
        raise


def _message(data: dict[str, Any], seq: int | None) -> ClientMessage:
    message_type = data.get("type")
    if message_type is None:
        raise ProtocolError("unknown_type", "the message has no 'type'")
    if message_type == TranscriptChunk.type:
        return TranscriptChunk(
            text=_required_text(data, "text"),
            speaker=_speaker(data),
            final=_optional_bool(data, "final", default=True),
            seq=seq,
        )
    if message_type == AudioConfig.type:
        return _audio_config(data, seq)
    if message_type == ContextMessage.type:
        return ContextMessage(profile=_profile(data), seq=seq)
    if message_type == EndMessage.type:
        return EndMessage(seq=seq)
    if message_type == TokenRenewal.type:
        return TokenRenewal(token=_required_text(data, "token"), seq=seq)
    raise ProtocolError(
        "unknown_type",
        f"unknown type {quote(message_type)}; expected one of {', '.join(_CLIENT_TYPES)}",
    )


def _seq(data: dict[str, Any]) -> int | None:
    return _optional_count(data, "seq", code="bad_field")


def _optional_count(data: dict[str, Any], name: str, *, code: ErrorCode) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    # bool is an int in Python; `true` is not a number.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ProtocolError(
            code, f"'{name}' must be an integer from 0 to 2**53-1, not {quote(value)}"
        )
    return value


def _check_text(value: object, where: str = "the message") -> None:
    """Every string (keys too) must be encodable as UTF-8: no lone surrogates."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProtocolError(
                "bad_text",
                f"{where} holds a lone UTF-16 surrogate ({quote(value[exc.start : exc.end])}) "
                f"at character {exc.start}; send text as UTF-8",
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"'{key}'" if where == "the message" else where)
    elif isinstance(value, list):
        for item in value:
            _check_text(item, where)


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
    raise ProtocolError("bad_field", f"'speaker' must be 'customer' or 'rep', not {quote(value)}")


def _audio_config(data: dict[str, Any], seq: int | None) -> AudioConfig:
    encoding_value = data.get("encoding", "pcm_s16le")
    encoding: AudioEncoding
    if encoding_value == "pcm_s16le":
        encoding = "pcm_s16le"
    elif encoding_value == "mulaw":
        encoding = "mulaw"
    else:
        raise ProtocolError(
            "bad_audio", f"'encoding' must be 'pcm_s16le' or 'mulaw', not {quote(encoding_value)}"
        )
    sample_rate = data.get("sample_rate", 16000)
    # bool is an int in Python; `true` is not a sample rate.
    if isinstance(sample_rate, bool) or sample_rate not in SAMPLE_RATES:
        raise ProtocolError(
            "bad_audio", f"'sample_rate' must be 8000 or 16000, not {quote(sample_rate)}"
        )
    return AudioConfig(
        encoding=encoding,
        sample_rate=int(sample_rate),
        speaker=_speaker(data),
        stream=_stream_tag(data),
        offset=_optional_count(data, "offset", code="bad_audio"),
        seq=seq,
    )


def _stream_tag(data: dict[str, Any]) -> int | None:
    tag = data.get("stream")
    if tag is None:
        return None
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag <= MAX_STREAM_TAG:
        raise ProtocolError(
            "bad_audio",
            f"'stream' must be an integer from 0 to {MAX_STREAM_TAG}, not {quote(tag)}",
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
    # orjson: compact UTF-8 like json.dumps(ensure_ascii=False, separators=(",", ":")), in C.
    return orjson.dumps(payload).decode()


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
    """Speech the recogniser heard. A final with `revision` > 0 replaces the text of the earlier
    final with the same `segment_id` (the recogniser re-decoded the whole utterance)."""

    speaker: Speaker
    text: str
    final: bool
    segment_id: str = ""
    revision: int = 0

    def to_json(self) -> str:
        return _dumps(
            {
                "type": "transcript",
                "speaker": self.speaker,
                "text": self.text,
                "final": self.final,
                "segment_id": self.segment_id,
                "revision": self.revision,
            }
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
    """A suggestion ended without an answer: `superseded`, `worker_lost`, `conversation_ended`."""

    turn_id: str
    reason: str = "superseded"

    def to_json(self) -> str:
        return _dumps(
            {"type": "suggestion_cancelled", "turn_id": self.turn_id, "reason": self.reason}
        )


@dataclass(frozen=True, kw_only=True)
class SuggestionFailed:
    """The LLM failed this suggestion (an error or a time-out); `reason` says how."""

    turn_id: str
    reason: str

    def to_json(self) -> str:
        return _dumps({"type": "suggestion_failed", "turn_id": self.turn_id, "reason": self.reason})


@dataclass(frozen=True, kw_only=True)
class Status:
    """Whether suggestions can be served: `llm` is "degraded" while the LLM keeps failing."""

    llm: LlmState
    reason: str = ""

    def to_json(self) -> str:
        return _dumps({"type": "status", "llm": self.llm, "reason": self.reason})


@dataclass(frozen=True, kw_only=True)
class Throttled:
    """Capacity is saturated: the "thinking" indicator."""

    reason: str
    turn_id: str = ""

    def to_json(self) -> str:
        return _dumps({"type": "throttled", "reason": self.reason, "turn_id": self.turn_id})


@dataclass(frozen=True, kw_only=True)
class ErrorMessage:
    """A message the server could not take; the connection stays open.

    `seq` names the client message; `audio_offset` and `audio_bytes` the audio refused, of
    the tagged stream `stream` (None: the connection's one untagged stream).
    """

    code: ErrorCode
    message: str
    seq: int | None = None
    audio_offset: int | None = None
    audio_bytes: int | None = None
    stream: int | None = None

    def to_json(self) -> str:
        message = self.message
        if len(message) > MAX_ERROR_MESSAGE_BYTES // 4:  # only long ones can be over in bytes
            encoded = message.encode("utf-8", errors="backslashreplace")
            message = encoded[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", errors="ignore")
        payload: dict[str, Any] = {"type": "error", "code": self.code, "message": message}
        if self.seq is not None:
            payload["seq"] = self.seq
        if self.audio_offset is not None:
            payload["audio_offset"] = self.audio_offset
            payload["audio_bytes"] = self.audio_bytes or 0
            if self.stream is not None:
                payload["stream"] = self.stream
        return _dumps(payload)


@dataclass(frozen=True, kw_only=True)
class Ack:
    """Kafka has stored a client message (`seq`), or every audio byte before `audio_offset`
    has an outcome: stored, or refused by an `error` naming its range. Offsets count each
    tagged `stream` on its own (None: the connection's one untagged stream)."""

    seq: int | None = None
    audio_offset: int | None = None
    stream: int | None = None

    def to_json(self) -> str:
        payload: dict[str, Any] = {"type": "ack"}
        if self.seq is not None:
            payload["seq"] = self.seq
        if self.audio_offset is not None:
            payload["audio_offset"] = self.audio_offset
            if self.stream is not None:
                payload["stream"] = self.stream
        return _dumps(payload)


ServerMessage = (
    Ready
    | Transcript
    | SuggestionDelta
    | SuggestionComplete
    | SuggestionCancelled
    | SuggestionFailed
    | Status
    | Throttled
    | ErrorMessage
    | Ack
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
    SuggestionFailed: "suggestion_failed",
    Status: "status",
    Throttled: "throttled",
    ErrorMessage: "error",
    Ack: "ack",
}
