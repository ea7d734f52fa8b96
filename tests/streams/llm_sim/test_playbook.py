"""The simulator's playbook: which answer a customer utterance gets, and how it is tokenized."""

from __future__ import annotations

import pytest

from streams.llm_sim.playbook import (
    FALLBACK_PLAY,
    MAX_PIECE_CHARS,
    MAX_UTTERANCE_CHARS,
    PLAYBOOK,
    compose_reply,
    last_customer_utterance,
    match_play,
    reply_fragments,
    tokenize,
)
from streams.prompt import ConversationContext, PromptBuilder


def test_playbook_covers_the_common_objections_with_two_or_three_answers_each() -> None:
    names = [play.name for play in PLAYBOOK]
    assert len(set(names)) == len(names)
    assert 15 <= len(PLAYBOOK) <= 25
    for required in ("price", "competitor", "timing", "contract", "security", "integration"):
        assert required in names
    for required in ("discount", "cancellation", "billing_error", "outage", "refund"):
        assert required in names
    assert "onboarding" in names
    for play in PLAYBOOK:
        assert 2 <= len(play.answers) <= 3, play.name
        assert play.patterns, play.name


@pytest.mark.parametrize(
    ("utterance", "play"),
    [
        ("Honestly this is way too expensive for a team our size.", "price"),
        ("Can you do any kind of discount if we sign today?", "discount"),
        ("We're already using HubSpot for this.", "competitor"),
        ("This isn't a good time, maybe next quarter.", "timing"),
        ("I don't want to get locked into a long contract.", "contract"),
        ("Is the platform SOC 2 compliant?", "security"),
        ("Does it integrate with our SSO provider?", "integration"),
        ("I want to cancel my subscription.", "cancellation"),
        ("I was charged twice on my last invoice.", "billing_error"),
        ("The dashboard has been down all morning, nothing is working.", "outage"),
        ("I'd like a refund for last month.", "refund"),
        ("How long does it take to get set up?", "onboarding"),
        ("I need to check with my manager before any decision.", "authority"),
    ],
)
def test_utterances_match_their_play(utterance: str, play: str) -> None:
    assert match_play(utterance).name == play
    assert compose_reply(utterance) in match_play(utterance).answers


def test_unrelated_words_get_a_generic_answer() -> None:
    assert match_play("What's the weather like over there?") is FALLBACK_PLAY
    assert compose_reply("What's the weather like over there?") in FALLBACK_PLAY.answers


def test_a_word_inside_another_word_does_not_match() -> None:
    # "sso" inside "lesson", "api" inside "capital": patterns start at word boundaries.
    assert match_play("That was a lesson about capital.") is FALLBACK_PLAY


def test_a_long_utterance_is_matched_by_its_last_words() -> None:
    long = "The price was fine. " * 100 + "But is it GDPR compliant and encrypted?"
    assert len(long) > MAX_UTTERANCE_CHARS
    assert match_play(long).name == "security"


def test_reply_is_stable_and_variants_cycle_through_the_answers() -> None:
    utterance = "That's too expensive."
    assert compose_reply(utterance) == compose_reply(utterance)
    answers = match_play(utterance).answers
    assert [compose_reply(utterance, variant=i) for i in range(len(answers))] == list(answers)
    assert compose_reply(utterance, variant=len(answers)) == answers[0]
    assert reply_fragments(utterance, 1) == tuple(tokenize(answers[1]))


@pytest.mark.parametrize("text", [a for play in PLAYBOOK for a in play.answers])
def test_tokens_are_word_pieces_that_join_back_exactly(text: str) -> None:
    pieces = tokenize(text)
    assert "".join(pieces) == text
    assert all(0 < len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    assert len(pieces) >= len(text.split())


def test_long_words_stream_in_several_pieces() -> None:
    pieces = tokenize("An implementation, today.")
    assert pieces[0] == "An"
    assert "".join(pieces[1:3]).startswith(" implem")
    assert pieces[-2:] == [" today", "."]
    assert len(pieces) > 4


def test_last_customer_utterance_is_read_from_our_rendered_prompt() -> None:
    context = ConversationContext("c-1")
    context.add("customer", "Hi, we're looking at tools.", at_ms=0)
    context.add("rep", "Great, what are you using today?", at_ms=5_000)
    context.add("customer", "Salesforce, but it's too expensive.", at_ms=10_000)
    context.add("rep", "Got it.", at_ms=12_000)
    prompt = PromptBuilder().suggestion(context)
    messages = prompt.as_openai()
    assert last_customer_utterance(messages) == "Salesforce, but it's too expensive."


def test_without_customer_lines_the_last_user_message_is_the_utterance() -> None:
    messages = [
        {"role": "system", "content": "Customer: not this one"},
        {"role": "user", "content": "  Can I get a refund?  "},
        {"role": "assistant", "content": "Sure."},
    ]
    assert last_customer_utterance(messages) == "Can I get a refund?"
    assert last_customer_utterance([{"role": "system", "content": "x"}]) == ""
    huge = [{"role": "user", "content": "x" * 10_000}]
    assert len(last_customer_utterance(huge)) == MAX_UTTERANCE_CHARS


def test_customer_label_matches_case_insensitively_per_line() -> None:
    content = "CUSTOMER: first\nRep: reply\ncustomer:   second thing  \nRep: ok"
    assert last_customer_utterance([{"role": "user", "content": content}]) == "second thing"
