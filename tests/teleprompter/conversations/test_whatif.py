"""What-if prompts: each turn gets the context as it stood when the turn was made."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import (
    ConversationSummary,
    CustomerProfile,
    Event,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)
from streams.prompt import SUGGESTION_SYSTEM_PROMPT
from teleprompter.conversations.whatif import PromptFileError, read_system_prompt, turn_prompts


def said(at: int, text: str, *, speaker: str = "customer", final: bool = True) -> TranscriptSegment:
    return TranscriptSegment(
        conversation_id="c",
        event_time_ms=at,
        session_id="s",
        segment_id=str(at),
        speaker=speaker,  # type: ignore[arg-type]
        text=text,
        final=final,
    )


def turn(at: int, turn_id: str, text: str) -> Turn:
    return Turn(conversation_id="c", event_time_ms=at, turn_id=turn_id, text=text)


CALL: list[Event] = [
    CustomerProfile(conversation_id="c", event_time_ms=0, profile_json='{"name": "Dana"}'),
    said(1_000, "Hi, my invoice is wrong."),
    turn(1_100, "t1", "Hi, my invoice is wrong."),
    SuggestionEvent(
        conversation_id="c",
        event_time_ms=1_900,
        turn_id="t1",
        kind="complete",
        text="Sorry to hear that.",
        trace={"llm_request": 1_200.0, "llm_first_token": 1_520.0, "llm_done": 1_880.0},
    ),
    said(2_000, "Let me look.", speaker="rep"),
    ConversationSummary(
        conversation_id="c",
        event_time_ms=2_500,
        summary="Dana disputes an invoice.",
        covers_until_ms=2_000,
    ),
    said(3_000, "Also, what does prem", final=False),  # a partial recognition: not in any prompt
    said(3_100, "Also, what does premium cost?"),
    turn(3_100, "t2", "Also, what does premium cost?"),  # same millisecond: its words come first
]


def test_each_turn_gets_the_context_of_its_moment() -> None:
    first, second = turn_prompts(CALL, window_s=90)

    first_user = first.prompt.messages[-1].content
    assert "Customer: Hi, my invoice is wrong." in first_user and "- name: Dana" in first_user
    assert "Let me look." not in first_user and "Dana disputes" not in first_user
    second_user = second.prompt.messages[-1].content
    assert "Summary of the call so far:\nDana disputes an invoice." in second_user
    assert second_user.rstrip().endswith("Suggest the rep's reply to the customer's last words.")
    assert "Customer: Also, what does premium cost?" in second_user
    assert "what does prem\n" not in second_user
    assert first.prompt.messages[0].content == SUGGESTION_SYSTEM_PROMPT


def test_the_original_outcome_and_its_time_to_first_token() -> None:
    first, second = turn_prompts(CALL, window_s=90)

    assert (first.original.kind, first.original.text) == ("complete", "Sorry to hear that.")
    assert (first.original.ttft_ms, first.original.total_ms) == (320.0, 680.0)
    assert second.original.kind == "none"  # the call ended before it was answered


def test_another_system_prompt_replaces_only_the_system_message() -> None:
    (default, *_), (custom, *_) = (
        turn_prompts(CALL, window_s=90),
        turn_prompts(CALL, window_s=90, system_prompt="Be terse."),
    )

    assert custom.prompt.messages[0].content == "Be terse."
    assert custom.prompt.messages[1:] == default.prompt.messages[1:]


def test_from_and_to_choose_the_turns_not_the_context() -> None:
    (only,) = turn_prompts(CALL, window_s=90, from_ms=2_000)

    assert only.turn.turn_id == "t2"
    assert "Hi, my invoice is wrong." in only.prompt.messages[-1].content


def test_a_prompt_file_is_utf8_text(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("  Be brief.\n\n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Soyez brèf".encode("latin-1"))

    assert read_system_prompt(good) == "Be brief."
    with pytest.raises(PromptFileError, match="is not UTF-8 text"):
        read_system_prompt(latin)
    with pytest.raises(PromptFileError, match="cannot read --prompt file"):
        read_system_prompt(tmp_path / "missing.txt")
