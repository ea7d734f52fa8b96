"""`teleprompter export` on recorded calls: every event of the range, a typed file per type."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.codec import default_codec
from schemas.events import AudioChunk, Event, SuggestionEvent
from teleprompter.event_log.times import format_time
from teleprompter.options import EXIT_USAGE
from tests.teleprompter.recorded_calls import RecordedCalls

FILES = {
    event_type: version.path.parent.name
    for event_type, version in default_codec().schemas.newest.items()
}


@pytest.fixture(scope="module")
def calls(recorded_calls: RecordedCalls) -> RecordedCalls:
    recorded_calls.record("call-b", minutes=1, audio=False, seed=5, ended_ago_s=400)
    recorded_calls.record("call-a", minutes=1.5, seed=4, ended_ago_s=200)
    return recorded_calls


def events_of(calls: RecordedCalls, *cids: str, start: int = 0, end: int = 2**62) -> list[Event]:
    return [
        s.event for cid in cids for s in calls.calls[cid] if start <= s.event.event_time_ms < end
    ]


def expected_rows(events: list[Event]) -> dict[str, int]:
    counts = Counter(FILES[type(e)] for e in events)
    return {name: counts.get(name, 0) for name in FILES.values()}


def window(calls: RecordedCalls) -> tuple[int, int]:
    times = [s.event.event_time_ms for events in calls.calls.values() for s in events]
    return min(times), max(times) + 1


def export(calls: RecordedCalls, directory: Path, *args: str) -> dict[str, int]:
    result = calls.cli("export", "-o", str(directory), *args)
    assert result.exit_code == 0, result.output
    return {
        line.split()[0].rsplit("/", 1)[-1].split(".")[0]: int(line.split()[1])
        for line in result.stdout.splitlines()[1:-1]
    }


def test_parquet_every_event_in_a_typed_file_per_type(calls: RecordedCalls, tmp_path: Path) -> None:
    start, end = window(calls)

    rows = export(calls, tmp_path, "--from", str(start), "--to", str(end))

    assert rows == expected_rows(events_of(calls, "call-a", "call-b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.parquet" for n in FILES.values()
    )
    suggestions = pq.read_table(tmp_path / "suggestion_event.parquet")
    assert suggestions.schema.field("event_time_ms").type == pa.timestamp("ms")
    assert suggestions.schema.field("timings").type == pa.map_(pa.string(), pa.float64())
    kinds = Counter(suggestions.column("kind").to_pylist())
    assert kinds["delta"] > kinds["complete"] > 0 and kinds["cancelled"] > 0
    deltas = suggestions.filter(pa.compute.equal(suggestions.column("kind"), "delta"))
    assert set(deltas.column("kafka_topic").to_pylist()) == {calls.catalog.reply_topic("gw-a").name}
    audio = pq.read_table(tmp_path / "audio_chunk.parquet")
    chunks = [e for e in events_of(calls, "call-a") if isinstance(e, AudioChunk)]
    assert sorted(audio.column("kafka_offset").to_pylist()) == list(range(len(chunks)))
    assert audio.column("audio")[0].as_py() == chunks[0].audio


def test_jsonl_holds_the_same_events_as_decoded(calls: RecordedCalls, tmp_path: Path) -> None:
    start, end = window(calls)

    rows = export(calls, tmp_path, "--from", str(start), "--to", str(end), "--format", "jsonl")

    assert rows == expected_rows(events_of(calls, "call-a", "call-b"))
    first = json.loads((tmp_path / "audio_chunk.jsonl").read_text().splitlines()[0])
    chunk = next(e for e in events_of(calls, "call-a") if isinstance(e, AudioChunk))
    assert base64.b64decode(first["audio"]) == chunk.audio
    assert first["event_time_ms"] == chunk.event_time_ms  # epoch ms, as in the events
    assert {"kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp"} <= set(first)


def test_only_the_conversations_asked_for(calls: RecordedCalls, tmp_path: Path) -> None:
    start, end = window(calls)

    rows = export(
        calls, tmp_path, "--from", str(start), "--to", str(end), "--conversation", "call-b"
    )

    assert rows == expected_rows(events_of(calls, "call-b"))
    turns = pq.read_table(tmp_path / "turn.parquet")
    assert set(turns.column("conversation_id").to_pylist()) == {"call-b"}


def test_events_are_kept_by_event_time_from_inclusive_to_exclusive(
    calls: RecordedCalls, tmp_path: Path
) -> None:
    events = [s.event for s in calls.calls["call-a"] if isinstance(s.event, SuggestionEvent)]
    start, end = events[3].event_time_ms, events[-3].event_time_ms

    rows = export(calls, tmp_path, "--from", format_time(start), "--to", format_time(end))

    assert rows == expected_rows(events_of(calls, "call-a", "call-b", start=start, end=end))


def test_a_progress_bar_on_request(calls: RecordedCalls, tmp_path: Path) -> None:
    start, end = window(calls)

    shown = calls.cli(
        "export", "-o", str(tmp_path), "--from", str(start), "--to", str(end), "--progress"
    )
    hidden = calls.cli("export", "-o", str(tmp_path), "--from", str(start), "--to", str(end))

    assert shown.exit_code == hidden.exit_code == 0
    assert "export: 100%" in shown.stderr and "rec" in shown.stderr
    assert hidden.stderr == ""  # not a terminal: no bar


def test_an_unknown_conversation_is_one_line_and_exit_2(
    calls: RecordedCalls, tmp_path: Path
) -> None:
    result = calls.cli(
        "export", "-o", str(tmp_path), "--from", "-1h", "--to", "now", "--conversation", "nobody"
    )

    assert result.exit_code == EXIT_USAGE
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("teleprompter: no events of conversation 'nobody' from ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "soon", "--to", "now"], "bad --from time: 'soon' is not a time"),
        (["--from", "now", "--to", "-1h"], "is not before --to"),
    ],
)
def test_bad_times_are_one_line_and_exit_2(
    recorded_calls: RecordedCalls, tmp_path: Path, args: list[str], message: str
) -> None:
    result = recorded_calls.cli("export", "-o", str(tmp_path), *args)

    assert result.exit_code == EXIT_USAGE
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unknown_topics_are_one_line_and_exit_2(calls: RecordedCalls, tmp_path: Path) -> None:
    result = calls.cli(
        "export",
        "-o",
        str(tmp_path),
        "--from",
        "-1h",
        "--to",
        "now",
        env={"TELEPROMPTER_TOPIC_PREFIX": "nosuchprefix"},
    )

    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("teleprompter: no topic nosuchprefix.audio")
