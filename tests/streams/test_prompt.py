"""Conversation context and prompts: the window, the budgets, and what is never dropped."""

from __future__ import annotations

import json

import pytest

from schemas.events import ConversationSummary, Speaker, TranscriptSegment
from streams.prompt import (
    ELLIPSIS,
    MAX_PROMPT_TOKENS,
    SPEAKER_LABELS,
    ConversationContext,
    ProfileError,
    Prompt,
    PromptBuilder,
    estimate_tokens,
    render_profile,
    truncate_to_tokens,
)

SENTENCE = "We looked at the onboarding plan and the numbers for the second quarter."


def user_text(prompt: Prompt) -> str:
    assert [m.role for m in prompt.messages] == ["system", "user"]
    return prompt.messages[1].content


def huge_profile() -> dict[str, object]:
    return {
        "company": "Acme Logistics",
        "plan": "Pro, 40 seats",
        "notes": {f"item_{i}": f"{SENTENCE} Detail number {i}." for i in range(200)},
    }


def test_estimate_is_about_four_characters_or_three_quarters_of_a_word_per_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("word") == 2  # one word: 4/3 tokens, rounded up
    prose = SENTENCE * 10
    assert estimate_tokens(prose) == max(-(-len(prose) // 4), -(-len(prose.split()) * 4 // 3))
    assert estimate_tokens("a b c d e f") == 8  # short words cost more than their characters


@pytest.mark.parametrize("keep", ["head", "tail"])
def test_truncation_fits_the_budget_at_word_boundaries(keep: str) -> None:
    text = " ".join(f"word{i}" for i in range(500))
    cut = truncate_to_tokens(text, 50, keep=keep)  # type: ignore[arg-type]
    assert estimate_tokens(cut) <= 50
    if keep == "head":
        assert cut.startswith("word0 word1 ") and cut.endswith(ELLIPSIS)
    else:
        assert cut.endswith("word498 word499") and cut.startswith(ELLIPSIS)
    assert truncate_to_tokens("short", 50, keep="head") == "short"
    assert truncate_to_tokens(text, 1, keep="head") == ""


def test_a_giant_unbroken_string_is_cut_by_characters() -> None:
    cut = truncate_to_tokens("x" * 10_000, 20, keep="tail")
    assert cut.startswith(ELLIPSIS) and estimate_tokens(cut) <= 20


def test_window_keeps_the_last_90_seconds_before_the_newest_line() -> None:
    context = ConversationContext("c", window_s=90.0)
    for second in range(0, 300, 10):
        speaker: Speaker = "customer" if second % 20 else "rep"
        context.add(speaker, f"line at {second}", at_ms=second * 1000)
    times = [line.at_ms for line in context.transcript]
    assert times == list(range(200_000, 300_000, 10_000))


def test_window_is_bounded_by_its_token_budget_too() -> None:
    context = ConversationContext("c", transcript_tokens=500)
    for i in range(60):  # all within 90 s, far more than 500 tokens
        context.add("customer" if i % 2 else "rep", f"{SENTENCE} ({i})", at_ms=i * 1000)
    lines = context.transcript
    assert sum(line.tokens for line in lines) <= 500
    assert lines[-1].text.endswith("(59)")
    assert len(lines) < 60


def test_a_speaker_continuing_within_the_gap_is_one_line() -> None:
    context = ConversationContext("c", merge_gap_s=3.0)
    context.add("customer", "We might", at_ms=1_000)
    context.add("customer", "  switch vendors.", at_ms=2_500)
    context.add("customer", "Anyway.", at_ms=9_000)
    context.add("rep", "", at_ms=9_500)  # nothing said: ignored
    assert [line.text for line in context.transcript] == ["We might switch vendors.", "Anyway."]
    assert context.transcript[0].line == f"{SPEAKER_LABELS['customer']}: We might switch vendors."


def test_partial_segments_are_ignored() -> None:
    context = ConversationContext("c")
    for text, final, at_ms in [("too exp", False, 1), ("too expensive", True, 2)]:
        context.add_segment(
            TranscriptSegment(
                conversation_id="c",
                session_id="s",
                segment_id="1",
                text=text,
                final=final,
                event_time_ms=at_ms,
            )
        )
    assert [line.text for line in context.transcript] == ["too expensive"]


def full_context() -> ConversationContext:
    context = ConversationContext("c")
    context.set_profile(huge_profile())
    context.set_summary(f"{SENTENCE} " * 80, covers_until_ms=0)
    for i in range(80):
        context.add("customer" if i % 2 else "rep", f"{SENTENCE} ({i})", at_ms=i * 1000)
    context.add("customer", "So is this really worth the price?", at_ms=100_000)
    return context


def test_prompt_stays_under_budget_with_everything_oversized() -> None:
    context = full_context()
    assert estimate_tokens(context.profile) <= 300
    assert estimate_tokens(context.summary) <= 200
    prompt = PromptBuilder().suggestion(context)
    assert prompt.estimated_tokens <= MAX_PROMPT_TOKENS
    text = user_text(prompt)
    assert text.index("- company: Acme Logistics") < text.index("Summary of the call so far")
    assert "- notes.item_0: " in text
    assert text.rstrip().endswith("Suggest the rep's reply to the customer's last words.")
    assert "Customer: So is this really worth the price?" in text


def test_over_budget_drops_old_transcript_then_summary_then_profile() -> None:
    context = full_context()
    builder = PromptBuilder(max_prompt_tokens=800)
    text = user_text(builder.suggestion(context))
    assert builder.suggestion(context).estimated_tokens <= 800
    # Old lines went first; summary and profile are whole.
    assert "(0)" not in text and "(79)" in text
    assert context.summary in text and context.profile in text

    builder = PromptBuilder(max_prompt_tokens=560)
    prompt = builder.suggestion(context)
    text = user_text(prompt)
    assert prompt.estimated_tokens <= 560
    # Every older line is gone, the summary lost its beginning, the profile is whole.
    assert "(79)" not in text and "Customer: So is this really worth the price?" in text
    assert f"Summary of the call so far:\n{ELLIPSIS}" in text
    assert context.profile in text

    builder = PromptBuilder(max_prompt_tokens=300)
    prompt = builder.suggestion(context)
    text = user_text(prompt)
    assert prompt.estimated_tokens <= 300
    assert "Summary of the call so far" not in text
    assert "- company: Acme Logistics" in text and context.profile not in text
    assert "Customer: So is this really worth the price?" in text


def test_latest_customer_utterance_is_kept_even_when_the_rep_spoke_after_it() -> None:
    context = full_context()
    context.add("rep", f"{SENTENCE} " * 30, at_ms=101_000)
    prompt = PromptBuilder(max_prompt_tokens=250).suggestion(context)
    text = user_text(prompt)
    assert "Customer: So is this really worth the price?" in text
    assert prompt.estimated_tokens <= 250


def test_an_endless_utterance_is_shortened_to_its_last_words_not_dropped() -> None:
    context = ConversationContext("c")
    words = " ".join(f"w{i}" for i in range(2000))
    context.add("customer", words + " so what does it cost?", at_ms=0)
    assert context.transcript[-1].text.endswith("w1999 so what does it cost?")
    assert estimate_tokens(context.transcript[-1].text) <= 300
    prompt = PromptBuilder(max_prompt_tokens=200).suggestion(context)
    assert prompt.estimated_tokens <= 200
    assert user_text(prompt).count("so what does it cost?") == 1


def test_summary_prompt_covers_what_is_new_and_adopting_it_retires_those_lines() -> None:
    context = ConversationContext("c")
    context.add("customer", "We have 40 seats on Pro.", at_ms=1_000)
    context.add("rep", "Thanks, noted.", at_ms=5_000)
    builder = PromptBuilder()
    request = builder.summary(context)
    assert request is not None
    assert request.covers_until_ms == 5_000 and request.utterances == 2
    assert request.prompt.max_tokens is not None
    text = user_text(request.prompt)
    assert "Current summary:\n(none yet)" in text
    assert "Customer: We have 40 seats on Pro.\nRep: Thanks, noted." in text

    context.set_summary("Acme has 40 Pro seats.", covers_until_ms=request.covers_until_ms)
    assert builder.summary(context) is None
    context.add("customer", "And we want SSO.", at_ms=9_000)
    request = builder.summary(context)
    assert request is not None
    text = user_text(request.prompt)
    assert "Current summary:\nAcme has 40 Pro seats." in text
    assert "SSO" in text and "40 seats on Pro" not in text
    # The window still shows the summarized lines to the suggestion prompt.
    assert len(context.transcript) == 3


def test_a_stale_summary_is_ignored() -> None:
    context = ConversationContext("c")
    context.apply_summary(
        ConversationSummary(conversation_id="c", summary="new", covers_until_ms=9, turn_count=3)
    )
    context.set_summary("old", covers_until_ms=5)
    assert (context.summary, context.summary_covers_until_ms, context.summary_turns) == (
        "new",
        9,
        3,
    )


def test_memory_is_bounded_when_the_summarizer_never_runs() -> None:
    context = ConversationContext("c", summary_backlog_tokens=1500)
    for i in range(10_000):
        context.add("customer" if i % 2 else "rep", f"{SENTENCE} ({i})", at_ms=i * 1000)
    assert sum(line.tokens for line in context.unsummarized) <= 1500
    assert len(context) == len(context.unsummarized) < 200
    assert context.unsummarized_dropped == 10_000 - len(context)
    request = PromptBuilder().summary(context)
    assert request is not None
    assert f"({context.unsummarized_dropped} earlier lines were lost" in user_text(request.prompt)


def test_summarized_lines_outside_the_window_are_forgotten() -> None:
    context = ConversationContext("c")
    for i in range(100):
        context.add("customer" if i % 2 else "rep", f"line {i}", at_ms=i * 10_000)
        context.set_summary("...", covers_until_ms=i * 10_000)
    assert len(context) == len(context.transcript) == 10
    assert context.unsummarized_dropped == 0


def test_profile_json_must_be_an_object() -> None:
    context = ConversationContext("c")
    with pytest.raises(ProfileError, match="JSON object, got list"):
        context.set_profile_json("[1, 2]")
    with pytest.raises(ProfileError, match="not valid JSON"):
        context.set_profile_json("{nope")
    context.set_profile_json(json.dumps({"name": "Dana", "tier": {"level": "gold"}}))
    assert context.profile == "- name: Dana\n- tier.level: gold"


def test_profile_rendering_flattens_lists_and_keeps_structures_compact() -> None:
    rendered = render_profile(
        {"products": ["CRM", "Helpdesk"], "open": [{"id": 1}], "empty": "", "note": " a\n b "}
    )
    assert rendered == '- products: CRM, Helpdesk\n- open: [{"id":1}]\n- note: a b'
