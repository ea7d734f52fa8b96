"""A phone call as Twilio streams it, and the end-of-speech -> first-token figure on that path.

`TwilioCall` speaks Twilio Media Streams to a gateway's `/twilio/media`: `connected`, `start`
(both tracks, 8 kHz mu-law, the conversation and token in customParameters), `media` frames of
20 ms per track paced in real time (silence included, as Twilio sends it), then `stop`.

Run `python -m teleprompter.bench.twilio_call` to measure, on a system of its own (embedded
broker unless KAFKA_BOOTSTRAP_SERVERS is set): per call the rep greets on the outbound track,
the customer asks a question on the inbound track, and the time from the end of the customer's
speech to the first suggestion token on the rep's WebSocket is recorded. Each call is repeated
with the same audio sent as the page sends its two voices (`SocketCall`), back to back, so the
ratio of the two prices the Twilio adapter under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import numpy as np
import soxr

from streams.asr.audio import SAMPLE_RATE
from streams.asr.corpus import SENTENCES, VOICES, Voice, synthesize

logger = logging.getLogger(__name__)

CALL_RATE: Final = 8000
FRAME_MS: Final = 20
FRAME_BYTES: Final = CALL_RATE * FRAME_MS // 1000  # 160 mu-law bytes
MULAW_SILENCE: Final = b"\xff"
_MULAW_BIAS: Final = 0x84
_MULAW_CLIP: Final = 32635
REP_GREETING: Final = "Thanks for calling, this is Sam. How can I help you today?"


def mulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 mu-law bytes of float samples in [-1, 1]."""
    pcm = np.clip(np.asarray(samples, dtype=np.float64) * 32768.0, -32768, 32767).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(pcm), _MULAW_CLIP) + _MULAW_BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return encoded


@dataclass(frozen=True, kw_only=True)
class CallSpeech:
    """Mu-law audio of one utterance, and where in it the speech ends (seconds)."""

    audio: bytes
    speech_end_s: float


def call_speech(text: str, voice: Voice = VOICES[0]) -> CallSpeech:
    """`text` read by espeak-ng, as a phone line carries it (8 kHz mu-law)."""
    samples = soxr.resample(synthesize(text, voice), SAMPLE_RATE, CALL_RATE)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    end = (int(loud[-1]) + 1) / CALL_RATE if len(loud) else 0.0
    return CallSpeech(audio=mulaw_encode(samples), speech_end_s=end)


@dataclass(kw_only=True)
class TwilioCall:
    """One Twilio media stream to a gateway; use `async with TwilioCall(...) as call`."""

    url: str  # ws://host:port/twilio/media
    conversation_id: str
    token: str
    tracks: tuple[str, ...] = ("inbound", "outbound")
    stream_sid: str = field(default_factory=lambda: f"MZ{uuid.uuid4().hex}")
    call_sid: str = field(default_factory=lambda: f"CA{uuid.uuid4().hex}")
    media_format: dict[str, Any] = field(
        default_factory=lambda: {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    )
    _http: aiohttp.ClientSession | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _sequence: int = 0
    _chunks: dict[str, int] = field(default_factory=dict)
    _started_at: float = 0.0
    playing_since: float = 0.0
    """perf_counter() when the latest `play` began."""

    async def __aenter__(self) -> TwilioCall:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse:
        assert self._ws is not None, "use `async with`"
        return self._ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def start(self) -> None:
        """`connected` then `start`, as Twilio opens every stream."""
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            self._numbered(
                "start",
                start={
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": list(self.tracks),
                    "customParameters": {
                        "conversation_id": self.conversation_id,
                        "token": self.token,
                    },
                    "mediaFormat": self.media_format,
                },
            )
        )
        self._started_at = time.perf_counter()

    async def play(self, audio_by_track: dict[str, bytes]) -> float:
        """Each track's audio in 20 ms frames, in real time; returns when playing began."""
        frames = max(-(-len(audio) // FRAME_BYTES) for audio in audio_by_track.values())
        began = self.playing_since = time.perf_counter()
        for n in range(frames):
            for track, audio in audio_by_track.items():
                frame = audio[n * FRAME_BYTES : (n + 1) * FRAME_BYTES]
                frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
                await self.media(track, frame)
            # Pace by the clock, not by sleeps added up, so a slow send does not stretch time.
            delay = began + (n + 1) * FRAME_MS / 1000.0 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        return began

    async def media(self, track: str, payload: bytes) -> None:
        chunk = self._chunks.get(track, 0) + 1
        self._chunks[track] = chunk
        elapsed_ms = int((time.perf_counter() - self._started_at) * 1000)
        await self.send(
            self._numbered(
                "media",
                media={
                    "track": track,
                    "chunk": str(chunk),
                    "timestamp": str(elapsed_ms),
                    "payload": base64.b64encode(payload).decode(),
                },
            )
        )

    async def stop(self) -> None:
        await self.send(
            self._numbered("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": self.call_sid})
        )

    def _numbered(self, event: str, **body: Any) -> dict[str, Any]:
        self._sequence += 1
        return {
            "event": event,
            "sequenceNumber": str(self._sequence),
            **body,
            "streamSid": self.stream_sid,
        }


@dataclass(kw_only=True)
class SocketCall:
    """The same call on the rep's own WebSocket, as the page sends its two voices: tagged
    binary frames of two declared streams. Compared with `TwilioCall`, it prices the adapter."""

    ws: aiohttp.ClientWebSocketResponse
    tags: dict[str, int] = field(default_factory=lambda: {"inbound": 2, "outbound": 1})
    playing_since: float = 0.0

    async def start(self) -> None:
        for track, tag in self.tags.items():
            speaker = "customer" if track == "inbound" else "rep"
            await self.ws.send_json(
                {
                    "type": "audio_config",
                    "encoding": "mulaw",
                    "sample_rate": CALL_RATE,
                    "speaker": speaker,
                    "stream": tag,
                }
            )

    async def play(self, audio_by_track: dict[str, bytes]) -> float:
        frames = max(-(-len(audio) // FRAME_BYTES) for audio in audio_by_track.values())
        began = self.playing_since = time.perf_counter()
        for n in range(frames):
            for track, audio in audio_by_track.items():
                frame = audio[n * FRAME_BYTES : (n + 1) * FRAME_BYTES]
                frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
                await self.ws.send_bytes(bytes([self.tags[track]]) + frame)
            delay = began + (n + 1) * FRAME_MS / 1000.0 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        return began

    async def stop(self) -> None:
        """The call is over when the rep's socket closes."""


# --- the measurement ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CallTiming:
    """Seconds from the end of the customer's question to what the rep's socket received."""

    first_token_s: float
    transcript_s: float  # the transcript of the question's end (speech recognition's share)


async def measure_call(
    *,
    http_url: str,
    ws_url: str,
    conversation_id: str,
    token: str,
    question: CallSpeech,
    greeting: CallSpeech,
    via: str = "twilio",
    timeout_s: float = 30.0,
) -> CallTiming:
    """One call: from the end of the customer's question to its transcript and first token.

    The first token counted is that of the suggestion answering the end of the question: the
    first suggestion to begin after the first customer transcript that arrives once the speech
    has ended. A pause mid-question (a comma) can start a suggestion early, which the end of
    the question then supersedes; that early one is not the answer.
    """
    first_token: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    speech_end = float("inf")  # known once the question starts playing
    heard_end: list[float] = []  # when the transcript of the question's end arrived
    early_turns: set[str] = set()
    async with aiohttp.ClientSession() as http:
        rep = await http.ws_connect(f"{ws_url}?conversation_id={conversation_id}&token={token}")

        async def listen() -> None:
            async for frame in rep:
                message = json.loads(frame.data)
                kind = message.get("type")
                now = time.perf_counter()
                ends_question = now >= speech_end and not heard_end
                customer = message.get("speaker") == "customer" and message.get("final")
                if kind == "transcript" and customer and ends_question:
                    heard_end.append(now)
                if kind != "suggestion_delta" or first_token.done():
                    continue
                if not heard_end:
                    early_turns.add(message.get("turn_id", ""))
                elif message.get("turn_id") not in early_turns:
                    first_token.set_result(now)

        listener = asyncio.create_task(listen())
        media_url = http_url.replace("http", "ws", 1) + "/twilio/media"
        try:
            twilio = TwilioCall(url=media_url, conversation_id=conversation_id, token=token)
            async with contextlib.AsyncExitStack() as stack:
                call: TwilioCall | SocketCall = (
                    await stack.enter_async_context(twilio)
                    if via == "twilio"
                    else SocketCall(ws=rep)
                )
                await call.start()
                silence = MULAW_SILENCE * len(greeting.audio)
                await call.play({"inbound": silence, "outbound": greeting.audio})
                pause = MULAW_SILENCE * (CALL_RATE // 2)
                await call.play({"inbound": pause, "outbound": pause})
                # The customer asks; both tracks stay live (silence) until the answer starts.
                tail = MULAW_SILENCE * (CALL_RATE * int(timeout_s))
                playing = asyncio.create_task(
                    call.play({"inbound": question.audio + tail, "outbound": tail})
                )
                await asyncio.sleep(0)  # the task has started playing: its clock is set
                speech_end = call.playing_since + question.speech_end_s
                try:
                    arrived = await asyncio.wait_for(first_token, timeout_s)
                finally:
                    playing.cancel()
                await call.stop()
            return CallTiming(
                first_token_s=arrived - speech_end, transcript_s=heard_end[0] - speech_end
            )
        finally:
            listener.cancel()
            await rep.close()


async def run_measurement(
    calls: int, *, data_dir: Path, llm_ttft_ms: float
) -> dict[str, list[CallTiming]]:
    from core.settings import load_settings  # noqa: PLC0415  # the shell's settings only here
    from teleprompter.local_system import LocalSystem  # noqa: PLC0415

    settings = load_settings(
        data_dir=data_dir, gateway_port=0, broker_port=0, llm_sim_port=0, llm_ttft_ms=llm_ttft_ms
    )
    greeting = call_speech(REP_GREETING, VOICES[1])
    questions = [call_speech(text, VOICES[n % len(VOICES)]) for n, text in enumerate(SENTENCES)]
    timings: dict[str, list[CallTiming]] = {"twilio": [], "socket": []}
    async with LocalSystem(settings=settings) as system:
        for n in range(calls):
            # Each question once per path, back to back (in turns first), so both see the same load.
            for via in sorted(timings, reverse=n % 2 == 1):
                found = timings[via]
                cid = f"{via}-bench-{uuid.uuid4().hex[:8]}"
                timing = await measure_call(
                    http_url=system.http_url,
                    ws_url=system.ws_url,
                    conversation_id=cid,
                    token=system.token(cid, rep="bench"),
                    question=questions[n % len(questions)],
                    greeting=greeting,
                    via=via,
                )
                found.append(timing)
                print(
                    f"call {n + 1} via {via}: end of speech -> transcript "
                    f"{timing.transcript_s * 1000:.0f} ms, first token "
                    f"{timing.first_token_s * 1000:.0f} ms",
                    flush=True,
                )
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=Path(".teleprompter-twilio-bench"))
    parser.add_argument("--llm-ttft-ms", type=float, default=300.0, help="simulator TTFT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    before = os.getloadavg()
    timings = asyncio.run(
        run_measurement(args.calls, data_dir=args.data_dir, llm_ttft_ms=args.llm_ttft_ms)
    )
    after = os.getloadavg()
    medians: dict[str, float] = {}
    for via, found in timings.items():
        ms = sorted(timing.first_token_s * 1000 for timing in found)
        medians[via] = statistics.median(ms)
        heard = statistics.median(timing.transcript_s * 1000 for timing in found)
        print(
            f"via {via}: end of speech -> first token over {len(ms)} calls: median "
            f"{medians[via]:.0f} ms, min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms "
            f"(customer transcript median {heard:.0f} ms)"
        )
    print(
        f"twilio / socket median ratio {medians['twilio'] / medians['socket']:.2f}; "
        f"LLM simulator TTFT {args.llm_ttft_ms:.0f} ms; "
        f"load average {before[0]:.2f} before, {after[0]:.2f} after"
    )


if __name__ == "__main__":
    main()
