"""The audio one connection carries: one untagged stream, or up to one tagged stream per speaker.

An old client configures one stream with `audio_config` and sends bare binary frames, exactly as
before. A client with two voices (the rep's microphone and the customer's side of the call)
declares each with `audio_config` carrying a `stream` tag (0-255) and prefixes every binary
frame with that tag byte. Each stream is re-chunked, numbered and ended on its own, so the
workers see two independent (conversation, speaker) streams, and each counts its own byte
offsets for acks (an `AudioLedger` per stream; the tag byte is not part of the stream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.audio_framer import AudioFramer
from gateway.audio_ledger import AudioLedger, AudioRange
from gateway.protocol import AudioConfig, ErrorCode, ProtocolError
from schemas.events import AudioChunk

logger = logging.getLogger(__name__)

ProduceAudio = Callable[[AudioChunk, float, AudioRange | None], None]
"""Hands a chunk on: `(chunk, received_at, range)`; the range is None for an end marker.

Whoever produces it settles the range (`AudioStreams.settle`) once Kafka has answered."""


class AudioRefusedError(ProtocolError):
    """Audio of a stream that was received and refused: `refused` is its byte range."""

    def __init__(self, code: ErrorCode, message: str, *, refused: AudioRange) -> None:
        super().__init__(code, message)
        self.refused = refused


@dataclass(eq=False, kw_only=True)
class _Stream:
    config: AudioConfig
    framer: AudioFramer
    ledger: AudioLedger
    acked: int = 0  # the last offset taken for an ack
    seq: int = 0
    tail_timer: asyncio.TimerHandle | None = None


class AudioStreams:
    """A connection's audio streams, turned into `AudioChunk`s for `produce`.

    Streams are keyed by tag; None is the one untagged stream of a single-stream client.
    """

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
        self._streams: dict[int | None, _Stream] = {}

    @property
    def tagged(self) -> bool:
        """Whether frames carry a stream tag byte (some `audio_config` named a `stream`)."""
        return any(key is not None for key in self._streams)

    def configure(self, config: AudioConfig) -> None:
        """Declare or re-declare a stream, from `config.offset` if it names one;
        `ProtocolError` if it clashes with the others or the offset is behind the stream."""
        key = config.stream
        if key is None and self.tagged:
            raise ProtocolError(
                "bad_audio", "this connection sends tagged streams: 'audio_config' needs 'stream'"
            )
        if key is not None and None in self._streams:
            raise ProtocolError(
                "bad_audio",
                "this connection already sends untagged audio; tagged streams need a new one",
            )
        current = self._streams.get(key)
        if key is not None:
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
            current = self._new_stream(key, config)
        else:
            # A new format from here on: what the old framer holds goes out in the old format.
            self._flush(current)
        ledger = current.ledger
        if config.offset is not None and config.offset != ledger.received:
            try:
                ledger.skip_to(config.offset)
            except ValueError as exc:
                raise ProtocolError("bad_audio", _named(key, str(exc))) from None
        self._streams[key] = current
        current.config = config
        current.framer = self._framer(config)

    def push(
        self, frame: bytes, received_at: float, *, refusal: ProtocolError | None = None
    ) -> None:
        """One binary frame (tag byte first when tagged), refused with `refusal` if given.

        `AudioRefusedError` names the stream's bytes refused (a refusal, or audio the stream's
        format cannot take); a plain `ProtocolError` a frame that belongs to no stream.
        """
        if not frame:
            raise ProtocolError("bad_audio", "empty audio frame")
        if self.tagged:
            self.push_to(frame[0], frame[1:], received_at, refusal=refusal)
            return
        stream = self._streams.get(None)
        if stream is None:
            stream = self._streams[None] = self._new_stream(None, AudioConfig())
        self._push(stream, frame, received_at, refusal)

    def push_to(
        self,
        tag: int,
        audio: bytes,
        received_at: float,
        *,
        refusal: ProtocolError | None = None,
    ) -> None:
        """Audio for the tagged stream `tag`, without a tag byte (carrier adapters use this)."""
        stream = self._streams.get(tag)
        if stream is None:
            declared = ", ".join(str(k) for k in sorted(k for k in self._streams if k is not None))
            raise ProtocolError(
                "bad_audio",
                f"a frame for stream {tag}, which no 'audio_config' declared "
                f"(declared: {declared or 'none'})",
            )
        if not audio:
            raise ProtocolError("bad_audio", f"empty audio frame for stream {tag}")
        self._push(stream, audio, received_at, refusal)

    def settle(self, piece: AudioRange) -> None:
        """`piece` has its outcome (stored or not)."""
        self._streams[piece.stream].ledger.settle(piece)

    def take_ack(self, stream: int | None) -> int | None:
        """The offset before which every byte of `stream` has an outcome, if it moved since
        the last time it was taken; else None."""
        state = self._streams.get(stream)
        if state is None or state.ledger.settled <= state.acked:
            return None
        state.acked = state.ledger.settled
        return state.acked

    def end(self, received_at: float, *, keep_held: bool = True) -> None:
        """Every stream is over: send what each holds (or drop it, unless `keep_held`), then
        its end-of-stream marker."""
        for stream in self._streams.values():
            if keep_held:
                self._flush(stream)
            else:
                self._cancel_tail_timer(stream)
                stream.framer.flush()
            if stream.seq:
                self._emit(stream, b"", received_at, end_of_stream=True)

    def _new_stream(self, key: int | None, config: AudioConfig) -> _Stream:
        return _Stream(config=config, framer=self._framer(config), ledger=AudioLedger(stream=key))

    def _push(
        self,
        stream: _Stream,
        audio: bytes,
        received_at: float,
        refusal: ProtocolError | None,
    ) -> None:
        if refusal is None:
            try:
                chunks = stream.framer.push(audio)
            except ValueError as exc:
                refusal = ProtocolError("bad_audio", f"{exc} ({stream.config.encoding})")
        if refusal is not None:
            # What the framer holds came first: hand it on, so the refusal settles in order.
            self._flush(stream)
            refused = stream.ledger.refuse(len(audio))
            raise AudioRefusedError(refusal.code, refusal.message, refused=refused)
        stream.ledger.receive(len(audio))
        for chunk in chunks:
            self._emit(stream, chunk, received_at)
        self._rearm_tail_timer(stream)

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
        piece = stream.ledger.hand_on(len(audio)) if audio else None
        self._produce(chunk, received_at, piece)

    def _rearm_tail_timer(self, stream: _Stream) -> None:
        # A client that pauses must not leave its last words sitting in the framer.
        self._cancel_tail_timer(stream)
        if stream.framer.pending_bytes:
            stream.tail_timer = asyncio.get_running_loop().call_later(
                self._max_chunk_ms / 1000.0, self._flush, stream
            )

    def _cancel_tail_timer(self, stream: _Stream) -> None:
        if stream.tail_timer is not None:
            stream.tail_timer.cancel()
            stream.tail_timer = None

    def _flush(self, stream: _Stream) -> None:
        self._cancel_tail_timer(stream)
        tail = stream.framer.flush()
        if tail:
            self._emit(stream, tail, time.perf_counter())


def _named(stream: int | None, message: str) -> str:
    return message if stream is None else f"stream {stream}: {message}"
