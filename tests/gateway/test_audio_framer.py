"""Audio re-chunking: ~100-200 ms pieces on sample boundaries, nothing lost, bounded buffer."""

from __future__ import annotations

import pytest

from gateway.audio_framer import AudioFramer

PCM_16K = {"bytes_per_second": 32_000, "bytes_per_sample": 2}  # 3200 B = 100 ms


def test_small_frames_accumulate_to_the_minimum_chunk() -> None:
    framer = AudioFramer(**PCM_16K)
    frame = bytes(640)  # 20 ms
    chunks = [chunk for _ in range(5) for chunk in framer.push(frame)]
    assert [len(chunk) for chunk in chunks] == [3200]
    assert framer.pending_bytes == 0


def test_a_long_frame_is_cut_into_maximum_chunks() -> None:
    framer = AudioFramer(**PCM_16K)
    audio = bytes(range(256)) * 125  # 32 000 bytes: one second
    chunks = framer.push(audio)
    assert [len(chunk) for chunk in chunks] == [6400] * 5
    assert b"".join(chunks) == audio


def test_the_tail_is_held_until_flushed_and_order_is_kept() -> None:
    framer = AudioFramer(**PCM_16K)
    audio = bytes(i % 251 for i in range(7000))
    chunks = framer.push(audio)
    assert [len(chunk) for chunk in chunks] == [6400]
    assert framer.pending_bytes == 600
    tail = framer.flush()
    assert b"".join([*chunks, tail]) == audio
    assert framer.flush() == b""


def test_a_pcm_frame_with_an_odd_byte_count_is_refused_and_nothing_is_kept() -> None:
    framer = AudioFramer(**PCM_16K)
    with pytest.raises(ValueError, match="whole number of 2-byte samples"):
        framer.push(bytes(641))
    assert framer.pending_bytes == 0


def test_mulaw_takes_any_byte_count() -> None:
    framer = AudioFramer(bytes_per_second=8000, bytes_per_sample=1)  # 800 B = 100 ms
    assert framer.push(bytes(801)) == [bytes(801)]


def test_chunk_sizes_fall_on_sample_boundaries() -> None:
    framer = AudioFramer(bytes_per_second=32_000, bytes_per_sample=2, min_chunk_ms=0.05)
    assert framer.min_chunk_bytes == 2
    assert framer.max_chunk_bytes % 2 == 0


def test_minimum_above_maximum_is_refused() -> None:
    with pytest.raises(ValueError):
        AudioFramer(**PCM_16K, min_chunk_ms=300, max_chunk_ms=200)
