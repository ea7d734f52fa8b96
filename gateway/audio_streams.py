"""The audio one connection carries: one untagged stream, or up to one tagged stream per speaker.

An old client configures one stream with `audio_config` and sends bare binary frames, exactly as
before. A client with two voices (the rep's microphone and the customer's side of the call)
declares each with `audio_config` carrying a `stream` tag (0-255) and prefixes every binary
frame with that tag byte. Each stream is re-chunked, numbered and ended on its own, so the
workers see two independent (conversation, speaker) streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.audio_framer import AudioFramer
from gateway.protocol import AudioConfig, ProtocolError
from schemas.events import AudioChunk

logger = logging.getLogger(__name__)

UNTAGGED: Final = -1  # the key of a single-stream client's one stream

ProduceAudio = Callable[[AudioChunk, float], None]


@dataclass(eq=False, kw_only=True)
class _Stream:
    config: AudioConfig
    framer: AudioFramer
    seq: int = 0
    tail_timer: asyncio.TimerHandle | None = None


class AudioStreams:
    """A connection's audio streams, turned into `AudioChunk`s for `produce(chunk, received_at)`."""

    def __init__(
        self,
        *,
        conversation_id: str,
        session_id: str,
        produce: ProduceAudio,
        min_chunk_ms: float = 100.0,
        max_chunk_ms: float = 200.0,
    ) -> None:
        self._conversation_id = conversation_id
        self._session_id = session_id
        self._produce = produce
        self._min_chunk_ms = min_chunk_ms
        self._max_chunk_ms = max_chunk_ms
        self._streams: dict[int, _Stream] = {}

    @property
    def tagged(self) -> bool:
        """Whether frames carry a stream tag byte (some `audio_config` named a `stream`)."""
        return any(key != UNTAGGED for key in self._streams)

    def configure(self, config: AudioConfig) -> None:
        """Declare or re-declare a stream; `ProtocolError` if it clashes with the others."""
        key = UNTAGGED if config.stream is None else config.stream
        if config.stream is None and self.tagged:
            raise ProtocolError(
                "bad_audio", "this connection sends tagged streams: 'audio_config' needs 'stream'"
            )
        if config.stream is not None and UNTAGGED in self._streams:
            raise ProtocolError(
                "bad_audio",
                "this connection already sends untagged audio; tagged streams need a new one",
            )
        current = self._streams.get(key)
        if config.stream is not None:
            for other_key, other in self._streams.items():
                if other_key != key and other.config.speaker == config.speaker:
                    raise ProtocolError(
                        "bad_audio",
                        f"speaker {config.speaker!r} already streams on stream {other_key}",
                    )
            if current is not None and current.config.speaker != config.speaker:
                raise ProtocolError(
                    "bad_audio",
                    f"stream {key} carries {current.config.speaker!r}; a stream keeps its speaker",
                )
        if current is None:
            self._streams[key] = _Stream(config=config, framer=self._framer(config))
            return
        # A new format from here on: what the old framer holds goes out in the old format.
        self._flush(current)
        current.config = config
        current.framer = self._framer(config)

    def push(self, frame: bytes, received_at: float) -> None:
        """One binary frame (tag byte first when tagged); `ProtocolError` if it is unusable."""
        if not frame:
            raise ProtocolError("bad_audio", "empty audio frame")
        if self.tagged:
            self.push_to(frame[0], frame[1:], received_at)
            return
        stream = self._streams.get(UNTAGGED)
        if stream is None:
            stream = self._streams[UNTAGGED] = _Stream(
                config=AudioConfig(), framer=self._framer(AudioConfig())
            )
        self._push(stream, frame, received_at)

    def push_to(self, tag: int, audio: bytes, received_at: float) -> None:
        """Audio for the tagged stream `tag`, without a tag byte (carrier adapters use this)."""
        stream = self._streams.get(tag)
        if stream is None:
            declared = ", ".join(str(k) for k in sorted(self._streams))
            raise ProtocolError(
                "bad_audio",
                f"a frame for stream {tag}, which no 'audio_config' declared "
                f"(declared: {declared or 'none'})",
            )
        if not audio:
            raise ProtocolError("bad_audio", f"empty audio frame for stream {tag}")
        self._push(stream, audio, received_at)

    def _push(self, stream: _Stream, audio: bytes, received_at: float) -> None:
        try:
            chunks = stream.framer.push(audio)
        except ValueError as exc:
            raise ProtocolError("bad_audio", f"{exc} ({stream.config.encoding})") from None
        for chunk in chunks:
            self._emit(stream, chunk, received_at)
        self._rearm_tail_timer(stream)

    def end(self, received_at: float) -> None:
        """Every stream is over: send what each holds, then its end-of-stream marker."""
        for stream in self._streams.values():
            self._flush(stream)
            if stream.seq:
                self._emit(stream, b"", received_at, end_of_stream=True)

    def _framer(self, config: AudioConfig) -> AudioFramer:
        return AudioFramer(
            bytes_per_second=config.bytes_per_second,
            bytes_per_sample=config.bytes_per_sample,
            min_chunk_ms=self._min_chunk_ms,
            max_chunk_ms=self._max_chunk_ms,
        )

    def _emit(
        self, stream: _Stream, audio: bytes, received_at: float, *, end_of_stream: bool = False
    ) -> None:
        config = stream.config
        chunk = AudioChunk(
            conversation_id=self._conversation_id,
            session_id=self._session_id,
            speaker=config.speaker,
            seq=stream.seq,
            encoding=config.encoding,
            sample_rate=config.sample_rate,
            audio=audio,
            end_of_stream=end_of_stream,
        )
        stream.seq += 1
        chunk.stamp("gateway_in")
        self._produce(chunk, received_at)

    def _rearm_tail_timer(self, stream: _Stream) -> None:
        # A client that pauses must not leave its last words sitting in the framer.
        if stream.tail_timer is not None:
            stream.tail_timer.cancel()
            stream.tail_timer = None
        if stream.framer.pending_bytes:
            stream.tail_timer = asyncio.get_running_loop().call_later(
                self._max_chunk_ms / 1000.0, self._flush, stream
            )

    def _flush(self, stream: _Stream) -> None:
        if stream.tail_timer is not None:
            stream.tail_timer.cancel()
            stream.tail_timer = None
        tail = stream.framer.flush()
        if tail:
            self._emit(stream, tail, time.perf_counter())
