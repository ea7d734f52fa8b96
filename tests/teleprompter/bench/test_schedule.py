"""The open-loop script: deterministic, within the duration, paced like a call."""

from __future__ import annotations

import itertools

import pytest

from teleprompter.bench.schedule import CUSTOMER_LINES, Pacing, build_schedule


def test_the_same_seed_gives_the_same_script_and_another_seed_another() -> None:
    a = build_schedule(sessions=20, duration_s=60, seed=1)
    b = build_schedule(sessions=20, duration_s=60, seed=1)
    c = build_schedule(sessions=20, duration_s=60, seed=2)
    assert a == b
    assert a != c


def test_every_line_is_inside_the_run_and_turns_have_unique_keys() -> None:
    schedule = build_schedule(sessions=50, duration_s=30, seed=0)
    keys = [line.turn_key for c in schedule.conversations for line in c.turns]
    assert len(keys) == len(set(keys)) == schedule.turns > 0
    for conversation in schedule.conversations:
        for line in conversation.lines:
            assert 0 <= line.start_s < line.end_s <= 30
            assert all(line.start_s < at < line.end_s for at, _ in line.partials)


def test_speakers_alternate_and_never_overlap_within_a_conversation() -> None:
    schedule = build_schedule(sessions=10, duration_s=120, seed=3)
    for conversation in schedule.conversations:
        lines = conversation.lines
        for before, after in itertools.pairwise(lines):
            assert before.end_s <= after.start_s
            assert before.speaker != after.speaker
        assert all((line.speaker == "customer") == (line.turn_key is not None) for line in lines)


def test_customer_lines_end_a_sentence_so_each_makes_a_turn_at_once() -> None:
    schedule = build_schedule(sessions=5, duration_s=60, seed=0)
    for conversation in schedule.conversations:
        for turn in conversation.turns:
            assert turn.text in CUSTOMER_LINES
            assert turn.text.rstrip()[-1] in ".?!"
            # Interim transcripts grow word by word towards the sentence.
            said = [text for _, text in turn.partials]
            assert all(turn.text.startswith(text) for text in said)
            assert [len(t) for t in said] == sorted(len(t) for t in said)


def test_turns_start_spread_out_not_all_at_once() -> None:
    schedule = build_schedule(sessions=200, duration_s=60, seed=0)
    firsts = sorted(c.turns[0].end_s for c in schedule.conversations if c.turns)
    # With a burst, every first turn would end within the first couple of seconds.
    assert firsts[-1] - firsts[0] > 5.0


def test_the_turn_rate_follows_the_pacing() -> None:
    quick = Pacing(reply_delay_s=(0.1, 0.2), rep_speaks_s=(0.5, 1.0), pause_s=(0.1, 0.2))
    slow = build_schedule(sessions=100, duration_s=60, seed=0)
    fast = build_schedule(sessions=100, duration_s=60, seed=0, pacing=quick)
    assert fast.planned_turns_per_s > 1.5 * slow.planned_turns_per_s


def test_speech_length_can_come_from_real_audio() -> None:
    schedule = build_schedule(
        sessions=3,
        duration_s=30,
        seed=0,
        customer_lines=["Hello there."],
        speech_s=lambda text: 2.0,
    )
    for conversation in schedule.conversations:
        for turn in conversation.turns:
            assert turn.end_s - turn.start_s == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("sessions", "duration", "lines", "message"),
    [
        (0, 10.0, CUSTOMER_LINES, "sessions"),
        (1, 0.0, CUSTOMER_LINES, "duration"),
        (1, 10.0, (), "customer_lines"),
    ],
)
def test_impossible_schedules_are_refused_by_name(
    sessions: int, duration: float, lines: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_schedule(sessions=sessions, duration_s=duration, customer_lines=lines)


def test_unpunctuated_lines_wait_for_the_pause_and_a_comma_splits_one_into_two_finals() -> None:
    plain = build_schedule(sessions=20, duration_s=60, seed=4)
    typed = build_schedule(sessions=20, duration_s=60, seed=4, unpunctuated=1.0)
    assert typed == build_schedule(sessions=20, duration_s=60, seed=4, unpunctuated=1.0)
    pacing = Pacing()
    split = 0
    for conversation in typed.conversations:
        for turn in conversation.turns:
            finals = turn.final_chunks
            assert all(text.rstrip()[-1] not in ".?!" for _, text in finals)
            assert " ".join(text for _, text in finals) == turn.text
            assert finals[-1][0] == turn.end_s
            assert all(turn.start_s < at < turn.end_s for at, _ in turn.partials)
            if len(finals) == 2:
                split += 1
                (first_end, _), (second_end, second) = finals
                # The second phrase resumes after a pause shorter than the turn pause, and an
                # interim transcript says so before that pause could have made a turn.
                resumed = second_end - len(second.split()) / pacing.words_per_s
                assert pacing.phrase_pause_s[0] <= resumed - first_end <= pacing.phrase_pause_s[1]
                assert any(first_end < at < first_end + 0.5 for at, _ in turn.partials)
    assert split > 0
    # Plain lines are untouched: a share of 0 is the script the seed always gave.
    assert build_schedule(sessions=20, duration_s=60, seed=4, unpunctuated=0.0) == plain


def test_a_share_of_lines_is_unpunctuated_and_the_rest_as_written() -> None:
    schedule = build_schedule(sessions=50, duration_s=60, seed=0, unpunctuated=0.5)
    turns = [turn for c in schedule.conversations for turn in c.turns]
    unpunctuated = sum(1 for turn in turns if turn.finals)
    assert 0.3 < unpunctuated / len(turns) < 0.7
    assert all(turn.text in CUSTOMER_LINES for turn in turns if not turn.finals)


def test_unpunctuated_is_a_share_and_for_typed_lines_only() -> None:
    with pytest.raises(ValueError, match="share from 0 to 1"):
        build_schedule(sessions=1, duration_s=10, unpunctuated=1.5)
    with pytest.raises(ValueError, match="not for speech"):
        build_schedule(sessions=1, duration_s=10, unpunctuated=0.5, speech_s=lambda _: 1.0)
