"""Two voices on one connection: tagged audio streams, and the untagged one old clients send."""

from __future__ import annotations

import pytest

from gateway.audio_streams import AudioStreams
from gateway.protocol import AudioConfig, ProtocolError
from schemas.events import AudioChunk
from tests.gateway.conftest import RunningGateway, read_events, receive_json

REP = AudioConfig(speaker="rep", stream=1)
CUSTOMER = AudioConfig(speaker="customer", stream=2)


def streams() -> tuple[AudioStreams, list[AudioChunk]]:
    produced: list[AudioChunk] = []
    audio = AudioStreams(
        conversation_id="c1",
        session_id="s1",
        produce=lambda chunk, _received_at: produced.append(chunk),
    )
    return audio, produced


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
