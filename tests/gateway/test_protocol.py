"""Client messages parse to typed dataclasses or a named error; server messages render to JSON."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import (
    MAX_PROFILE_BYTES,
    AudioConfig,
    ContextMessage,
    EndMessage,
    ErrorMessage,
    ProtocolError,
    Ready,
    SuggestionCancelled,
    SuggestionComplete,
    SuggestionDelta,
    Throttled,
    Transcript,
    TranscriptChunk,
    message_type,
    parse_client_message,
)


def test_transcript_chunk_with_defaults() -> None:
    message = parse_client_message('{"type": "transcript_chunk", "text": "Hello there."}')
    assert message == TranscriptChunk(text="Hello there.", speaker="customer", final=True)


def test_transcript_chunk_with_every_field() -> None:
    message = parse_client_message(
        '{"type": "transcript_chunk", "text": "hi", "speaker": "rep", "final": false, "x": 1}'
    )
    assert message == TranscriptChunk(text="hi", speaker="rep", final=False)


def test_audio_config_defaults_and_telephony() -> None:
    assert parse_client_message('{"type": "audio_config"}') == AudioConfig()
    telephony = parse_client_message(
        '{"type": "audio_config", "encoding": "mulaw", "sample_rate": 8000, "speaker": "rep"}'
    )
    assert telephony == AudioConfig(encoding="mulaw", sample_rate=8000, speaker="rep")
    assert isinstance(telephony, AudioConfig)
    assert telephony.bytes_per_second == 8000
    assert AudioConfig().bytes_per_second == 32000


def test_context_and_end() -> None:
    message = parse_client_message('{"type": "context", "profile": {"name": "Ada", "tier": 2}}')
    assert message == ContextMessage(profile={"name": "Ada", "tier": 2})
    assert parse_client_message('{"type": "end"}') == EndMessage()


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("{not json", "bad_json", "not valid JSON"),
        ("[1, 2]", "bad_json", "not an array"),
        ('"hello"', "bad_json", "not a string"),
        ("{}", "unknown_type", "no 'type'"),
        ('{"type": "shout"}', "unknown_type", "'shout'"),
        ('{"type": "transcript_chunk"}', "missing_field", "'text' is required"),
        ('{"type": "transcript_chunk", "text": 5}', "bad_field", "'text' must be a string"),
        ('{"type": "transcript_chunk", "text": "  "}', "bad_field", "must not be empty"),
        ('{"type": "transcript_chunk", "text": "a", "speaker": "bot"}', "bad_field", "speaker"),
        ('{"type": "transcript_chunk", "text": "a", "final": "yes"}', "bad_field", "'final'"),
        ('{"type": "audio_config", "encoding": "opus"}', "bad_audio", "'encoding'"),
        ('{"type": "audio_config", "sample_rate": 44100}', "bad_audio", "'sample_rate'"),
        ('{"type": "audio_config", "sample_rate": 0}', "bad_audio", "'sample_rate'"),
        ('{"type": "audio_config", "sample_rate": true}', "bad_audio", "'sample_rate'"),
        ('{"type": "audio_config", "sample_rate": "16000"}', "bad_audio", "'sample_rate'"),
        ('{"type": "context"}', "missing_field", "'profile' is required"),
        ('{"type": "context", "profile": [1]}', "bad_field", "JSON object"),
    ],
)
def test_bad_messages_name_what_is_wrong(text: str, code: str, says: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text)
    assert caught.value.code == code
    assert says in caught.value.message


def test_a_profile_above_the_limit_is_refused() -> None:
    profile = {"notes": "x" * MAX_PROFILE_BYTES}
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(json.dumps({"type": "context", "profile": profile}))
    assert caught.value.code == "bad_field"
    assert str(MAX_PROFILE_BYTES) in caught.value.message


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message("[" * 100_000 + "]" * 100_000)
    assert caught.value.code == "bad_json"


def test_server_messages_render_the_contract_fields() -> None:
    assert json.loads(Ready(conversation_id="c", session_id="s", gateway_id="g").to_json()) == {
        "type": "ready",
        "conversation_id": "c",
        "session_id": "s",
        "gateway_id": "g",
    }
    assert json.loads(Transcript(speaker="customer", text="hi", final=False).to_json()) == {
        "type": "transcript",
        "speaker": "customer",
        "text": "hi",
        "final": False,
        "segment_id": "",
        "revision": 0,
    }
    revised = Transcript(
        speaker="customer", text="hi there", final=True, segment_id="u", revision=1
    )
    assert json.loads(revised.to_json())["revision"] == 1
    assert json.loads(revised.to_json())["segment_id"] == "u"
    delta = SuggestionDelta(turn_id="t", seq=3, text=" you", full_text="Thank you")
    assert json.loads(delta.to_json()) == {
        "type": "suggestion_delta",
        "turn_id": "t",
        "seq": 3,
        "text": " you",
        "fullText": "Thank you",
    }
    complete = SuggestionComplete(turn_id="t", text="Thank you.", timings={"llm": 12.3456})
    assert json.loads(complete.to_json()) == {
        "type": "suggestion_complete",
        "turn_id": "t",
        "text": "Thank you.",
        "timings": {"llm": 12.346},
    }
    assert json.loads(SuggestionCancelled(turn_id="t").to_json()) == {
        "type": "suggestion_cancelled",
        "turn_id": "t",
    }
    assert json.loads(Throttled(reason="capacity", turn_id="t").to_json()) == {
        "type": "throttled",
        "reason": "capacity",
        "turn_id": "t",
    }
    assert json.loads(ErrorMessage(code="bad_json", message="m").to_json()) == {
        "type": "error",
        "code": "bad_json",
        "message": "m",
    }


def test_message_type_names_every_server_message() -> None:
    assert message_type(SuggestionCancelled(turn_id="t")) == "suggestion_cancelled"
    assert message_type(ErrorMessage(code="internal", message="")) == "error"


def test_non_ascii_text_is_sent_as_is() -> None:
    rendered = Transcript(speaker="customer", text="Grüße", final=True).to_json()
    assert "Grüße" in rendered
