"""Two voices on one connection: tagged audio streams, and the untagged one old clients send;
each counts its own byte offsets for acks."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.audio_ledger import AudioRange
from gateway.audio_streams import AudioRefusedError, AudioStreams
from gateway.protocol import AudioConfig, ProtocolError
from schemas.events import AudioChunk
from tests.gateway.conftest import RunningGateway, read_events, receive_json

REP = AudioConfig(speaker="rep", stream=1)
CUSTOMER = AudioConfig(speaker="customer", stream=2)


def streams() -> tuple[AudioStreams, list[AudioChunk]]:
    audio, produced, _ = streams_with_ranges()
    return audio, produced


def streams_with_ranges() -> tuple[AudioStreams, list[AudioChunk], list[AudioRange]]:
    """Streams whose chunks are collected with the byte ranges they carry."""
    produced: list[AudioChunk] = []
    ranges: list[AudioRange] = []

    def produce(chunk: AudioChunk, _received_at: float, piece: AudioRange | None) -> None:
        produced.append(chunk)
        if piece is not None:
            ranges.append(piece)

    audio = AudioStreams(conversation_id="c1", session_id="s1", produce=produce)
    return audio, produced, ranges


async def test_an_untagged_client_streams_exactly_as_before() -> None:
    audio, produced = streams()
    audio.push(bytes(3200), 0.0)  # no audio_config at all: 16 kHz PCM from the customer
    audio.configure(AudioConfig(encoding="mulaw", sample_rate=8000, speaker="rep"))
    audio.push(bytes(800), 0.0)
    audio.end(0.0)
    assert [(c.speaker, c.encoding, c.seq, len(c.audio), c.end_of_stream) for c in produced] == [
        ("customer", "pcm_s16le", 0, 3200, False),
        ("rep", "mulaw", 1, 800, False),
        ("rep", "mulaw", 2, 0, True),
    ]
    assert not audio.tagged


async def test_tagged_frames_go_to_their_own_speakers_stream() -> None:
    audio, produced = streams()
    audio.configure(REP)
    audio.configure(CUSTOMER)
    assert audio.tagged
    audio.push(b"\x01" + b"\x11" * 3200, 0.0)
    audio.push(b"\x02" + b"\x22" * 3200, 0.0)
    audio.push(b"\x01" + b"\x11" * 3200, 0.0)
    audio.end(0.0)
    by_speaker = {
        speaker: [(c.seq, c.audio[:1], c.end_of_stream) for c in produced if c.speaker == speaker]
        for speaker in ("rep", "customer")
    }
    # The tag byte is stripped, and each stream is numbered and ended on its own.
    assert by_speaker == {
        "rep": [(0, b"\x11", False), (1, b"\x11", False), (2, b"", True)],
        "customer": [(0, b"\x22", False), (1, b"", True)],
    }
    assert all(len(c.audio) == 3200 for c in produced if not c.end_of_stream)


async def test_each_stream_holds_its_own_tail() -> None:
    audio, produced = streams()
    audio.configure(REP)
    audio.configure(CUSTOMER)
    audio.push(b"\x01" + bytes(1000), 0.0)  # under the 100 ms minimum: held back
    audio.push(b"\x02" + bytes(3200), 0.0)
    assert [(c.speaker, len(c.audio)) for c in produced] == [("customer", 3200)]
    audio.end(0.0)
    assert [(c.speaker, len(c.audio), c.end_of_stream) for c in produced[1:]] == [
        ("rep", 1000, False),
        ("rep", 0, True),
        ("customer", 0, True),
    ]


@pytest.mark.parametrize(
    ("declared", "frame", "wanted"),
    [
        ([REP], b"\x07" + bytes(2), "stream 7, which no 'audio_config' declared"),
        ([REP], b"\x01", "empty audio frame for stream 1"),
        ([REP], b"\x01" + bytes(3), "not a whole number of 2-byte samples"),
        ([], b"", "empty audio frame"),
    ],
)
async def test_frames_that_cannot_be_placed_are_refused(
    declared: list[AudioConfig], frame: bytes, wanted: str
) -> None:
    audio, produced = streams()
    for config in declared:
        audio.configure(config)
    with pytest.raises(ProtocolError, match=wanted) as caught:
        audio.push(frame, 0.0)
    assert caught.value.code == "bad_audio"
    assert produced == []


@pytest.mark.parametrize(
    ("first", "then", "wanted"),
    [
        (REP, AudioConfig(speaker="rep", stream=2), "'rep' already streams on stream 1"),
        (REP, AudioConfig(speaker="customer", stream=1), "a stream keeps its speaker"),
        (REP, AudioConfig(speaker="customer"), "needs 'stream'"),
        (AudioConfig(), CUSTOMER, "already sends untagged audio"),
    ],
)
async def test_streams_that_would_mix_voices_are_refused(
    first: AudioConfig, then: AudioConfig, wanted: str
) -> None:
    audio, _ = streams()
    audio.configure(first)
    with pytest.raises(ProtocolError, match=wanted):
        audio.configure(then)


async def test_a_stream_may_change_its_format() -> None:
    audio, produced = streams()
    audio.configure(REP)
    audio.push(b"\x01" + bytes(1000), 0.0)
    audio.configure(AudioConfig(speaker="rep", stream=1, encoding="mulaw", sample_rate=8000))
    audio.push(b"\x01" + bytes(800), 0.0)
    # The held-back PCM leaves in its own format before the first mu-law chunk.
    assert [(c.encoding, len(c.audio)) for c in produced] == [("pcm_s16le", 1000), ("mulaw", 800)]


async def test_each_stream_counts_its_own_offsets_over_its_audio_bytes() -> None:
    audio, _, ranges = streams_with_ranges()
    audio.configure(REP)
    audio.configure(CUSTOMER)
    audio.push(b"\x01" + bytes(3200), 0.0)
    audio.push(b"\x02" + bytes(6400), 0.0)
    audio.push(b"\x01" + bytes(3200), 0.0)
    # The tag byte is not part of a stream: offsets count audio bytes, per stream.
    assert [(r.stream, r.start, r.end) for r in ranges] == [
        (1, 0, 3200),
        (2, 0, 6400),
        (1, 3200, 6400),
    ]
    assert audio.take_ack(1) is None  # nothing is stored yet
    audio.settle(ranges[2])
    assert audio.take_ack(1) is None  # the earlier range of stream 1 still waits
    audio.settle(ranges[1])
    assert (audio.take_ack(2), audio.take_ack(1)) == (6400, None)
    audio.settle(ranges[0])
    assert (audio.take_ack(1), audio.take_ack(1)) == (6400, None)  # each offset taken once


async def test_a_refused_frame_names_its_streams_range_after_what_that_stream_held() -> None:
    audio, produced, ranges = streams_with_ranges()
    audio.configure(REP)
    audio.configure(CUSTOMER)
    audio.push(b"\x01" + bytes(1000), 0.0)  # held back by the framer
    audio.push(b"\x02" + bytes(3200), 0.0)
    with pytest.raises(AudioRefusedError) as caught:
        audio.push(b"\x01" + bytes(641), 0.0)  # not whole samples
    refused = caught.value.refused
    assert (caught.value.code, refused.stream, refused.start, refused.size) == (
        "bad_audio",
        1,
        1000,
        641,
    )
    # The held 1000 bytes went out first, so stream 1 settles in order.
    assert [(r.stream, r.start, r.end) for r in ranges] == [(2, 0, 3200), (1, 0, 1000)]
    audio.settle(ranges[1])
    assert audio.take_ack(1) == 1641
    with pytest.raises(AudioRefusedError) as caught:
        rate_limited = ProtocolError("rate_limited", "over the limit")
        audio.push(b"\x02" + bytes(320), 0.0, refusal=rate_limited)
    assert (caught.value.code, caught.value.refused.start) == ("rate_limited", 3200)
    assert [c.speaker for c in produced] == ["customer", "rep"]


async def test_an_offset_resumes_one_stream_and_never_goes_back() -> None:
    audio, _, ranges = streams_with_ranges()
    audio.configure(AudioConfig(speaker="rep", stream=1, offset=96_000))
    audio.configure(AudioConfig(speaker="customer", stream=2))
    assert (audio.take_ack(1), audio.take_ack(2)) == (96_000, None)
    audio.push(b"\x01" + bytes(3200), 0.0)
    assert [(r.stream, r.start) for r in ranges] == [(1, 96_000)]
    with pytest.raises(ProtocolError, match="stream 1: offset 50 is behind"):
        audio.configure(AudioConfig(speaker="rep", stream=1, offset=50))


# --- through the gateway ---------------------------------------------------------------


async def test_two_tagged_streams_reach_the_audio_topic_as_two_speakers(
    shared_gateway: RunningGateway, bootstrap_servers: str, conversation_id: str
) -> None:
    ws, _ = await shared_gateway.connect(conversation_id)
    await ws.send_json({"type": "audio_config", "speaker": "rep", "stream": 1})
    await ws.send_json(
        {
            "type": "audio_config",
            "speaker": "customer",
            "stream": 2,
            "encoding": "mulaw",
            "sample_rate": 8000,
        }
    )
    await ws.send_bytes(b"\x01" + b"\x11" * 3200)
    await ws.send_bytes(b"\x02" + b"\x22" * 800)
    await ws.send_bytes(b"\x03" + bytes(10))  # no such stream: an error, the session goes on
    error = await receive_json(ws)
    assert (error["type"], error["code"]) == ("error", "bad_audio")
    assert "stream 3" in error["message"]
    await ws.send_json({"type": "end"})
    chunks = await read_events(
        bootstrap_servers,
        shared_gateway.catalog.audio.name,
        conversation_id=conversation_id,
        count=4,
    )
    audio = [c for c in chunks if isinstance(c, AudioChunk)]
    assert sorted(
        (c.speaker, c.encoding, c.sample_rate, c.audio[:1], c.end_of_stream) for c in audio
    ) == [
        ("customer", "mulaw", 8000, b"", True),
        ("customer", "mulaw", 8000, b'"', False),
        ("rep", "pcm_s16le", 16000, b"", True),
        ("rep", "pcm_s16le", 16000, b"\x11", False),
    ]
    await ws.close()


async def test_a_bad_stream_tag_in_audio_config_is_refused(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ = await shared_gateway.connect(conversation_id)
    for tag in (256, -1, "1", True):
        await ws.send_json({"type": "audio_config", "stream": tag})
        error = await receive_json(ws)
        assert (error["code"], "'stream'" in error["message"]) == ("bad_audio", True), error
    assert ws.closed is False
    await ws.close()


async def receive_stream_acks(
    ws: aiohttp.ClientWebSocketResponse, until: dict[int, int]
) -> list[dict[str, object]]:
    """Audio acks and audio errors until each stream's ack reaches its offset in `until`."""
    seen: list[dict[str, object]] = []
    reached: dict[int, int] = {}
    while any(reached.get(tag, -1) < offset for tag, offset in until.items()):
        message = await receive_json(ws)
        if "audio_offset" in message:
            seen.append(message)
            if message["type"] == "ack":
                reached[message["stream"]] = message["audio_offset"]
    return seen


async def test_each_tagged_stream_is_acked_by_its_own_offsets(
    shared_gateway: RunningGateway, conversation_id: str
) -> None:
    ws, _ = await shared_gateway.connect(conversation_id, client_id="page")
    await ws.send_json({"type": "audio_config", "speaker": "rep", "stream": 1, "seq": 0})
    await ws.send_json({"type": "audio_config", "speaker": "customer", "stream": 2, "seq": 1})
    assert [await receive_json(ws) for _ in range(2)] == [
        {"type": "ack", "seq": 0},
        {"type": "ack", "seq": 1},
    ]
    await ws.send_bytes(b"\x01" + bytes(6400))
    await ws.send_bytes(b"\x02" + bytes(3200))
    acks = await receive_stream_acks(ws, {1: 6400, 2: 3200})
    assert {(a["stream"], a["audio_offset"]) for a in acks} == {(1, 6400), (2, 3200)}
    # A refused frame is named by its stream and range in that stream; acks move past it.
    await ws.send_bytes(b"\x02" + bytes(641))
    error = await receive_json(ws)
    assert {k: error[k] for k in ("code", "stream", "audio_offset", "audio_bytes")} == {
        "code": "bad_audio",
        "stream": 2,
        "audio_offset": 3200,
        "audio_bytes": 641,
    }
    assert await receive_stream_acks(ws, {2: 3841}) == [
        {"type": "ack", "audio_offset": 3841, "stream": 2}
    ]
    await ws.close()

    # A new connection resumes each stream where the client says its unacked audio starts.
    ws, _ = await shared_gateway.connect(conversation_id, client_id="page")
    await ws.send_json({"type": "audio_config", "speaker": "rep", "stream": 1, "offset": 6400})
    await ws.send_json({"type": "audio_config", "speaker": "customer", "stream": 2, "offset": 3841})
    assert [await receive_json(ws) for _ in range(2)] == [
        {"type": "ack", "audio_offset": 6400, "stream": 1},
        {"type": "ack", "audio_offset": 3841, "stream": 2},
    ]
    await ws.send_bytes(b"\x01" + bytes(3200))
    assert await receive_stream_acks(ws, {1: 9600}) == [
        {"type": "ack", "audio_offset": 9600, "stream": 1}
    ]
    await ws.close()
