"""Client messages parse to typed dataclasses or a named error; server messages render to JSON."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import (
    MAX_PROFILE_BYTES,
    QUOTE_BYTES,
    Ack,
    AudioConfig,
    ContextMessage,
    EndMessage,
    ErrorMessage,
    ProtocolError,
    Ready,
    Status,
    SuggestionCancelled,
    SuggestionComplete,
    SuggestionDelta,
    SuggestionFailed,
    Throttled,
    TokenRenewal,
    Transcript,
    TranscriptChunk,
    message_type,
    parse_client_message,
    quote,
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
    assert json.loads(SuggestionCancelled(turn_id="t", reason="worker_lost").to_json()) == {
        "type": "suggestion_cancelled",
        "turn_id": "t",
        "reason": "worker_lost",
    }
    assert json.loads(SuggestionFailed(turn_id="t", reason="llm_timeout").to_json()) == {
        "type": "suggestion_failed",
        "turn_id": "t",
        "reason": "llm_timeout",
    }
    assert json.loads(Status(llm="degraded", reason="answered 503").to_json()) == {
        "type": "status",
        "llm": "degraded",
        "reason": "answered 503",
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


# --- seq, acks and errors that name them --------------------------------------------------


def test_every_client_message_may_carry_a_seq() -> None:
    assert parse_client_message('{"type": "transcript_chunk", "text": "Hi.", "seq": 7}') == (
        TranscriptChunk(text="Hi.", seq=7)
    )
    assert parse_client_message('{"type": "audio_config", "seq": 0, "offset": 3200}') == (
        AudioConfig(seq=0, offset=3200)
    )
    assert parse_client_message('{"type": "context", "profile": {}, "seq": 1}') == (
        ContextMessage(profile={}, seq=1)
    )
    assert parse_client_message('{"type": "end", "seq": 2}') == EndMessage(seq=2)
    assert parse_client_message('{"type": "token", "token": "t", "seq": 3}') == (
        TokenRenewal(token="t", seq=3)
    )


@pytest.mark.parametrize("seq", ["-1", "1.5", '"3"', "true", str(2**53)])
def test_a_seq_must_be_a_json_safe_non_negative_integer(seq: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(f'{{"type": "end", "seq": {seq}}}')
    assert caught.value.code == "bad_field"
    assert "'seq'" in caught.value.message
    assert caught.value.seq is None


def test_an_error_in_a_message_with_a_seq_names_that_seq() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"type": "transcript_chunk", "speaker": "bot", "seq": 41}')
    assert (caught.value.code, caught.value.seq) == ("missing_field", 41)
    rendered = ErrorMessage(code="bad_field", message="m", seq=41).to_json()
    assert json.loads(rendered) == {"type": "error", "code": "bad_field", "message": "m", "seq": 41}


def test_acks_and_audio_errors_render_their_fields() -> None:
    assert json.loads(Ack(seq=5).to_json()) == {"type": "ack", "seq": 5}
    assert json.loads(Ack(audio_offset=6400).to_json()) == {"type": "ack", "audio_offset": 6400}
    error = ErrorMessage(code="rate_limited", message="m", audio_offset=6400, audio_bytes=3200)
    assert json.loads(error.to_json()) == {
        "type": "error",
        "code": "rate_limited",
        "message": "m",
        "audio_offset": 6400,
        "audio_bytes": 3200,
    }
    assert message_type(Ack(seq=1)) == "ack"


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "transcript_chunk", "text": "caf\\ud800", "seq": 9}',
        '{"type": "transcript_chunk", "text": "\\udfff end", "seq": 9}',
        '{"type": "context", "profile": {"n\\udc00": "x"}, "seq": 9}',
        '{"type": "context", "profile": {"notes": ["a", {"b": "\\ud83d"}]}, "seq": 9}',
    ],
)
def test_a_lone_surrogate_anywhere_is_bad_text(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert (caught.value.code, caught.value.seq) == ("bad_text", 9)
    assert "surrogate" in caught.value.message
    caught.value.message.encode("utf-8")  # the error itself is valid text


def test_a_surrogate_pair_is_a_character_not_an_error() -> None:
    message = parse_client_message('{"type": "transcript_chunk", "text": "ok \\ud83d\\ude00"}')
    assert message == TranscriptChunk(text="ok \U0001f600")


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"type": "x" * 1_000_000}),
        json.dumps({"type": {"nested": ["y" * 500_000] * 3}}),
        json.dumps({"type": "transcript_chunk", "text": "a", "speaker": "z" * 900_000}),
        json.dumps({"type": "audio_config", "encoding": "\u00e9" * 300_000}),
        json.dumps({"type": "end", "seq": "9" * 100_000}),
    ],
)
def test_errors_quote_at_most_a_couple_of_hundred_bytes_of_input(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert len(caught.value.message.encode()) <= QUOTE_BYTES + 120


def test_quote_cuts_long_values_and_keeps_short_ones() -> None:
    assert quote("short") == "'short'"
    assert quote(12) == "12"
    assert len(quote("\u00e9" * 10_000).encode()) <= QUOTE_BYTES
    assert quote("\ud800") == "'\\ud800'"  # escaped, so still valid UTF-8
