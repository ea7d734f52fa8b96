/**
 * The rep's screen: wires the conversation socket, microphone, transcript and suggestion together.
 *
 * Opened as /?conversation_id=ID&token=TOKEN; talks to /ws on the same host with those values.
 */
import { ConversationSocket } from "./connection.js";
import { MicrophoneCapture, MicrophoneError } from "./microphone.js";
import { SuggestionView } from "./suggestion-view.js";
import { TranscriptView } from "./transcript-view.js";

/** What the microphone path sends: the customer's side of the call. */
const AUDIO_CONFIG = Object.freeze({
  type: "audio_config",
  encoding: "pcm_s16le",
  sample_rate: 16000,
  speaker: "customer",
});
const FRAME_MS = 100;
const MAX_TYPED_CHARS = 4000;
const NOTICE_MS = 10_000;

/**
 * The workers report `timings` as gaps between consecutive trace stages ("a->b": ms, in pipeline
 * order gateway_in -> ... -> llm_first_token -> llm_done), plus "total" (first to last stage) and
 * the gateway's own reply hop ("gateway_out").
 */
const FIRST_TOKEN_STAGE = "llm_first_token";
const TOTAL_KEY = "total";
const REPLY_HOP_KEY = "gateway_out";

function byTestId(id) {
  const element = document.querySelector(`[data-testid="${id}"]`);
  if (!element) throw new Error(`the page is missing its [data-testid="${id}"] element`);
  return element;
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

/** Milliseconds from the first stage to `stage`, walking the chain of "a->b" gaps. */
function elapsedUntil(entries, stage) {
  const gaps = new Map();
  const targets = new Set();
  for (const [key, ms] of entries) {
    const [from, to] = key.split("->");
    if (to === undefined) continue;
    gaps.set(from, { to, ms });
    targets.add(to);
  }
  let at = [...gaps.keys()].find((from) => !targets.has(from));
  let elapsed = 0;
  for (let hops = 0; at !== undefined && hops <= gaps.size; hops += 1) {
    const gap = gaps.get(at);
    if (!gap) return undefined;
    elapsed += gap.ms;
    if (gap.to === stage) return elapsed;
    at = gap.to;
  }
  return undefined;
}

/** The compact read-out and a per-stage breakdown for its tooltip. */
function describeTimings(timings) {
  const entries = Object.entries(timings ?? {}).filter(([, ms]) => Number.isFinite(ms));
  const byKey = Object.fromEntries(entries);
  const firstToken = elapsedUntil(entries, FIRST_TOKEN_STAGE);
  // The pipeline's total plus the hop to this gateway: as close to "on screen" as we measure.
  const total = TOTAL_KEY in byKey ? byKey[TOTAL_KEY] + (byKey[REPLY_HOP_KEY] ?? 0) : undefined;
  const parts = [];
  if (firstToken !== undefined) parts.push(`first token ${formatMs(firstToken)}`);
  if (total !== undefined) parts.push(`total ${formatMs(total)}`);
  const detail = entries.map(([key, ms]) => `${key}: ${formatMs(ms)}`).join("\n");
  return { summary: parts.join(" · "), detail };
}

class RepScreen {
  constructor() {
    this.status = byTestId("status");
    this.latency = byTestId("latency");
    this.notice = byTestId("notice");
    this.startButton = byTestId("start");
    this.stopButton = byTestId("stop");
    this.level = byTestId("level");
    this.form = byTestId("text-form");
    this.input = byTestId("text-input");
    this.speaker = byTestId("text-speaker");
    this.transcript = new TranscriptView(byTestId("transcript"), byTestId("transcript-scroller"));
    this.suggestion = new SuggestionView({
      text: byTestId("suggestion"),
      thinking: byTestId("thinking"),
      scroller: byTestId("suggestion-scroller"),
    });
    this.countdown = null;
    /** Whether audio is (about to be) streaming, so every session must hear AUDIO_CONFIG. */
    this.audioAnnounced = false;
    this.noticeTimer = null;
    this.socket = null;
    this.microphone = new MicrophoneCapture({
      frameMs: FRAME_MS,
      sampleRate: AUDIO_CONFIG.sample_rate,
      onFrame: (pcm) => this.socket?.sendAudio(pcm),
      onLevel: (peak) => this.level.style.setProperty("--level", Math.min(1, peak * 1.5)),
      onEnded: (reason) => {
        this.audioAnnounced = false;
        this.#showNotice(reason);
        this.#setListening(false);
      },
    });
  }

  run() {
    const params = new URLSearchParams(window.location.search);
    const conversationId = params.get("conversation_id");
    const token = params.get("token");
    this.startButton.addEventListener("click", () => this.#start());
    this.stopButton.addEventListener("click", () => this.#stop());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#sendTyped();
    });
    this.input.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter is a new line; not while an IME is composing.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#sendTyped();
      }
    });
    window.addEventListener("pagehide", () => {
      this.microphone.stop();
      this.socket?.stop();
    });
    // Back from the back/forward cache: the socket closed on the way out, so open a new one.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) this.socket?.start();
    });

    if (!conversationId || !token) {
      this.#renderStatus({ name: "misconfigured" });
      this.#showNotice(
        "This page needs ?conversation_id=…&token=… in its address; `teleprompter up` prints one.",
        { sticky: true },
      );
      this.#disable();
      return;
    }
    document.title = `teleprompter · ${conversationId}`;

    const url = new URL("/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = new URLSearchParams({ conversation_id: conversationId, token }).toString();
    this.socket = new ConversationSocket({
      url: url.toString(),
      onMessage: (message) => this.#receive(message),
      onState: (state) => this.#renderStatus(state),
      // Every new session must hear the audio format before the first audio frame.
      greeting: () =>
        this.audioAnnounced || this.socket.queuedFrames > 0 ? [AUDIO_CONFIG] : [],
    });
    this.socket.start();
  }

  #receive(message) {
    switch (message?.type) {
      case "ready":
        this.status.title = `session ${message.session_id ?? "?"} on ${message.gateway_id ?? "?"}`;
        break;
      case "transcript":
        this.transcript.showRecognised(message);
        break;
      case "suggestion_delta":
        this.suggestion.showDelta(message);
        break;
      case "suggestion_complete":
        if (this.suggestion.showComplete(message)) this.#showLatency(message.timings);
        break;
      case "suggestion_cancelled":
        this.suggestion.showCancelled(message);
        break;
      case "throttled":
        this.suggestion.showThrottled(message);
        break;
      case "error":
        this.#showNotice(`Server error ${message.code ?? ""}: ${message.message ?? "(no message)"}`);
        break;
      default:
        console.warn("teleprompter: ignoring an unknown server message", message);
    }
  }

  async #start() {
    this.startButton.disabled = true;
    // Announce the format before the first frame can exist; if not live yet, the socket's
    // greeting announces it when the session is ready. A config with no audio after it is fine.
    this.audioAnnounced = true;
    if (this.socket?.live) this.socket.sendJson(AUDIO_CONFIG);
    try {
      await this.microphone.start();
    } catch (error) {
      this.audioAnnounced = false;
      this.startButton.disabled = false;
      this.#showNotice(error instanceof MicrophoneError ? error.message : String(error));
      return;
    }
    this.#setListening(true);
  }

  async #stop() {
    this.stopButton.disabled = true;
    await this.microphone.stop();
    this.audioAnnounced = false;
    this.#setListening(false);
  }

  #setListening(listening) {
    // Move focus to the other button, so keyboard users are never left on a disabled control.
    const hadFocus = document.activeElement === this.startButton || document.activeElement === this.stopButton;
    this.startButton.disabled = listening;
    this.stopButton.disabled = !listening;
    document.body.dataset.listening = String(listening);
    this.level.style.setProperty("--level", 0);
    if (hadFocus || document.activeElement === document.body) {
      (listening ? this.stopButton : this.startButton).focus();
    }
  }

  /** Nothing on this page can work any more: say so by disabling every control. */
  async #disable() {
    if (this.microphone.running) await this.#stop();
    this.startButton.disabled = true;
    this.stopButton.disabled = true;
    for (const control of this.form.elements) control.disabled = true;
  }

  #sendTyped() {
    const text = this.input.value.trim();
    if (!text || !this.socket) return;
    if (text.length > MAX_TYPED_CHARS) {
      this.#showNotice(`That is ${text.length} characters; send at most ${MAX_TYPED_CHARS} at once.`);
      return;
    }
    const speaker = this.speaker.value === "rep" ? "rep" : "customer";
    this.socket.sendJson({ type: "transcript_chunk", text, speaker, final: true });
    this.transcript.showTyped({ speaker, text });
    this.input.value = "";
  }

  #showLatency(timings) {
    const { summary, detail } = describeTimings(timings);
    this.latency.textContent = summary;
    this.latency.title = detail;
  }

  #renderStatus(state) {
    clearInterval(this.countdown);
    this.status.dataset.state = state.name;
    const reason = state.reason ? ` (${state.reason})` : "";
    switch (state.name) {
      case "connecting":
        this.status.textContent = "connecting…";
        break;
      case "live":
        this.status.textContent = "live";
        break;
      case "reconnecting": {
        const tick = () => {
          const seconds = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
          this.status.textContent = `reconnecting in ${seconds}s`;
        };
        tick();
        this.countdown = setInterval(tick, 250);
        break;
      }
      case "unauthorized":
        this.status.textContent = "unauthorized";
        this.#showNotice("The link's token was refused. Ask for a new link.", { sticky: true });
        this.#disable();
        break;
      case "rejected":
        this.status.textContent = "disconnected";
        this.#showNotice(`The server refused this connection${reason}.`, { sticky: true });
        this.#disable();
        break;
      case "misconfigured":
        this.status.textContent = "no conversation";
        break;
      default:
        this.status.textContent = "closed";
    }
  }

  #showNotice(text, { sticky = false } = {}) {
    clearTimeout(this.noticeTimer);
    this.notice.textContent = text;
    this.notice.hidden = false;
    if (!sticky) this.noticeTimer = setTimeout(() => (this.notice.hidden = true), NOTICE_MS);
  }
}

new RepScreen().run();
