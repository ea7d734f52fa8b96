"""The spoken test corpus and the word error rate."""

from __future__ import annotations

import pytest

from streams.asr.audio import SAMPLE_RATE
from streams.asr.corpus import (
    SENTENCES,
    VOICES,
    SpokenSentence,
    join_with_silence,
    word_error_rate,
    word_errors,
    words,
)


def test_words_are_normalised() -> None:
    assert words("Hi, I'm calling -- about my INVOICE!") == [
        "hi",
        "i'm",
        "calling",
        "about",
        "my",
        "invoice",
    ]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "errors"),
    [
        ("a b c", "a b c", 0),
        ("a b c", "a x c", 1),  # substitution
        ("a b c", "a c", 1),  # deletion
        ("a b c", "a b b c", 1),  # insertion
        ("a b c", "", 3),
        ("", "a", 1),
        ("the cat sat", "cat sat on", 2),
    ],
)
def test_word_errors_count_edits(reference: str, hypothesis: str, errors: int) -> None:
    assert word_errors(reference, hypothesis) == errors


def test_corpus_wer_weighs_by_reference_words() -> None:
    assert word_error_rate(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def test_corpus_covers_voices_and_lengths(corpus: list[SpokenSentence]) -> None:
    assert len(corpus) == len(SENTENCES) * len(VOICES) >= 18
    durations = [s.duration_s for s in corpus]
    assert min(durations) >= 1.0
    assert max(durations) <= 8.0
    for sentence in corpus:
        assert 0 <= sentence.speech_start < sentence.speech_end <= len(sentence.audio)


def test_joined_conversation_knows_where_speech_is(corpus: list[SpokenSentence]) -> None:
    conversation = join_with_silence(corpus[:3], gap_s=1.0, lead_s=0.5)
    assert conversation.speech_spans[0][0] == SAMPLE_RATE // 2 + corpus[0].speech_start
    for (start, end), sentence in zip(conversation.speech_spans, corpus[:3], strict=True):
        assert end - start == sentence.speech_end - sentence.speech_start
        assert abs(conversation.audio[start:end]).max() > 0.05
