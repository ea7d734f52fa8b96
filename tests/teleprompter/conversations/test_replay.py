"""`teleprompter replay` on recorded calls: the whole timeline, in order, decoded, located."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from schemas.codec import default_codec
from schemas.events import AudioChunk, SuggestionEvent, Turn
from teleprompter.event_log.partitions import partition_for_key
from teleprompter.event_log.times import format_time
from teleprompter.options import EXIT_USAGE
from tests.teleprompter.recorded_calls import RecordedCalls, shown_events


@pytest.fixture(scope="module")
def calls(recorded_calls: RecordedCalls) -> RecordedCalls:
    # In the order they happened: reply topics are read by time, and a topic's time index
    # assumes its records' timestamps grow with their offsets (as a live system writes them).
    recorded_calls.record("call-b", minutes=1, audio=False, seed=2, ended_ago_s=300)
    recorded_calls.record("call-a", minutes=2, seed=1)
    return recorded_calls


def jsonl(calls: RecordedCalls, *args: str) -> list[dict[str, Any]]:
    result = calls.cli("replay", *args, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_event_of_the_call_in_event_time_order(calls: RecordedCalls) -> None:
    events = calls.calls["call-a"]

    lines = jsonl(calls, "call-a")

    singles = [line for line in lines if line["type"] not in ("AudioUtterance", "DeltaRun")]
    expected = shown_events(events)
    assert [(line["type"], line["event"]["event_time_ms"]) for line in singles] == [
        (event.schema_name, event.event_time_ms) for event in expected
    ]
    assert [line["event"] for line in singles] == [{**vars(event)} for event in expected]
    times = [line["at"] for line in lines]
    assert times == sorted(times)
    assert {line["event"]["conversation_id"] for line in lines} == {"call-a"}


def test_each_line_says_where_its_records_are_kept(calls: RecordedCalls) -> None:
    lines = jsonl(calls, "call-a")

    partitions = {
        line["topic"]: line["partition"]
        for line in lines
        if not line["topic"].startswith(f"{calls.settings.topic_prefix}.replies.")
    }
    assert set(partitions.values()) == {partition_for_key(b"call-a", 4)}
    assert len(partitions) == 7  # every catalog topic
    turns = [line for line in lines if line["type"] == "Turn"]
    assert [line["offset"] for line in turns] == sorted(line["offset"] for line in turns)


def test_audio_is_one_line_per_utterance(calls: RecordedCalls) -> None:
    chunks = [s.event for s in calls.calls["call-a"] if isinstance(s.event, AudioChunk)]

    utterances = [line for line in jsonl(calls, "call-a") if line["type"] == "AudioUtterance"]

    assert sum(u["records"] for u in utterances) == len(chunks)
    assert sum(u["event"]["bytes"] for u in utterances) == sum(len(c.audio) for c in chunks)
    assert len(utterances) == sum(1 for c in chunks if c.seq == 0)  # each utterance restarts seq
    assert {u["event"]["speaker"] for u in utterances} == {"customer", "rep"}
    assert all(u["last_offset"] - u["offset"] + 1 == u["records"] for u in utterances)


def test_deltas_are_one_line_per_suggestion_with_the_text_they_streamed(
    calls: RecordedCalls,
) -> None:
    events = [s.event for s in calls.calls["call-a"]]
    outcomes = {
        e.turn_id: e for e in events if isinstance(e, SuggestionEvent) and e.kind != "delta"
    }

    runs = [line for line in jsonl(calls, "call-a") if line["type"] == "DeltaRun"]

    assert {run["event"]["turn_id"] for run in runs} == set(outcomes)
    for run in runs:
        outcome = outcomes[run["event"]["turn_id"]]
        assert run["event"]["text"].strip() == (outcome.text or outcome.full_text).strip()
    assert any(o.kind == "cancelled" for o in outcomes.values())  # the call has both outcomes


def test_each_delta_on_request(calls: RecordedCalls) -> None:
    deltas = [
        s.event
        for s in calls.calls["call-a"]
        if isinstance(s.event, SuggestionEvent) and s.event.kind == "delta"
    ]

    lines = jsonl(calls, "call-a", "--each-delta")

    shown = [
        line
        for line in lines
        if line["type"] == "SuggestionEvent" and line["event"]["kind"] == "delta"
    ]
    assert [(line["event"]["turn_id"], line["event"]["seq"]) for line in shown] == [
        (d.turn_id, d.seq) for d in deltas
    ]


def test_from_and_to_keep_the_events_between(calls: RecordedCalls) -> None:
    turns = [s.event for s in calls.calls["call-a"] if isinstance(s.event, Turn)]
    start, end = turns[1].event_time_ms, turns[3].event_time_ms

    lines = jsonl(calls, "call-a", "--from", format_time(start), "--to", str(end))

    assert [line["event"]["turn_id"] for line in lines if line["type"] == "Turn"] == [
        turns[1].turn_id,
        turns[2].turn_id,
    ]
    assert all(
        start <= line["event"].get("event_time_ms", start) < end
        for line in lines
        if line["type"] != "AudioUtterance"
    )


def test_the_table_reads_as_a_timeline(calls: RecordedCalls) -> None:
    result = calls.cli("replay", "call-b")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("conversation call-b, from ")
    assert lines[1].split() == ["TIME", "ELAPSED", "EVENT", "SOURCE", "DETAIL"]
    kinds = [line.split()[2] for line in lines[2:]]
    assert kinds[:2] == ["route", "profile"]
    assert kinds[-2:] == ["end", "route"]
    assert {"transcript", "turn", "deltas", "complete", "summary"} <= set(kinds)
    assert "audio" not in kinds  # call-b was typed


def test_reads_only_the_keys_partition_and_the_time_asked_for(calls: RecordedCalls) -> None:
    calls.record("call-g", minutes=0.5, audio=False, seed=3)
    turns_topic = calls.catalog.turns.name
    home = partition_for_key(b"call-g", 4)
    start = calls.calls["call-g"][0].event.event_time_ms
    # Records the reader must never reach: on another partition, or long before --from.
    calls.produce_raw(
        turns_topic, b"elsewhere", key=b"call-g", partition=(home + 1) % 4, timestamp_ms=start
    )
    calls.produce_raw(
        turns_topic, b"long ago", key=b"call-g", partition=home, timestamp_ms=start - 3_600_000
    )

    everything = jsonl(calls, "call-g")
    windowed = jsonl(calls, "call-g", "--from", str(start - 1000))

    undecodable = [line for line in everything if line["type"] == "Undecodable"]
    assert [(u["partition"], u["at"]) for u in undecodable] == [
        (home, format_time(start - 3_600_000))
    ]
    assert "not an Avro single-object record" in undecodable[0]["event"]["reason"]
    assert not [line for line in windowed if line["type"] == "Undecodable"]
    assert len(windowed) == len(everything) - 1


def test_an_unknown_conversation_is_one_line_and_exit_2(calls: RecordedCalls) -> None:
    result = calls.cli("replay", "no-such-call")

    assert result.exit_code == EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        f"teleprompter: no conversation 'no-such-call': no record of it in "
        f"{calls.settings.topic_prefix}.* (partition {partition_for_key(b'no-such-call', 4)})"
    ]
    assert result.stdout == ""


def test_unknown_topics_are_one_line_and_exit_2(calls: RecordedCalls) -> None:
    result = calls.cli("replay", "call-a", env={"TELEPROMPTER_TOPIC_PREFIX": "nosuchprefix"})

    assert result.exit_code == EXIT_USAGE
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("teleprompter: no topic nosuchprefix.audio, nosuchprefix.transcripts")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday"], "bad --from time: 'yesterday' is not a time"),
        (["--to", "-5x"], "bad --to time: '-5x' is not a time"),
        (["--from", "-1h", "--to", "-2h"], "is not before --to"),
        (["--follow", "--to", "now"], "--follow tails a live call; it takes no --to"),
        (["--model", "gpt-4o"], "--model only go with --through"),
        (["--through", "--follow"], "it cannot --follow"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    recorded_calls: RecordedCalls, args: list[str], message: str
) -> None:
    result = recorded_calls.cli("replay", "call-a", *args)

    assert result.exit_code == EXIT_USAGE
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("teleprompter: ") and message in line


def test_nothing_is_written_to_kafka(calls: RecordedCalls) -> None:
    before = offsets_of_every_topic(calls)

    jsonl(calls, "call-a")

    assert offsets_of_every_topic(calls) == before


def offsets_of_every_topic(calls: RecordedCalls) -> dict[tuple[str, int], int]:
    from teleprompter.event_log.reader import EventLogReader  # noqa: PLC0415

    with EventLogReader(
        bootstrap_servers=calls.settings.bootstrap_servers, codec=default_codec()
    ) as reader:
        topics = {
            t: n
            for t, n in reader.topics().items()
            if t.startswith(calls.settings.topic_prefix + ".")
        }
        ranges = reader.ranges([(t, p) for t, n in topics.items() for p in range(n)])
    time.sleep(0)  # no waiting needed: produced records are acknowledged before this returns
    return {(r.topic, r.partition): r.end or 0 for r in ranges}
