/**
 * The rep's screen: the conversation socket, both voices (the rep's microphone and the customer's
 * side of the call), the transcript, the suggestion and the call's controls, wired together.
 *
 * Opened as /?conversation_id=ID&token=TOKEN (a link `teleprompter up` or `token` prints), or
 * signed in as a rep (/#rep_key=KEY) to start calls with "New call". Talks to /ws on this host.
 */
import { AudioCapture, CaptureError, inputDevice, sharedCallAudio } from "./audio-capture.js";
import { ConversationSocket } from "./connection.js";
import { TokenRenewal, repName, startConversation, takeRepKey } from "./credentials.js";
import { SuggestionView } from "./suggestion-view.js";
import { TranscriptView } from "./transcript-view.js";

const SAMPLE_RATE = 16000;
const FRAME_MS = 100;
/**
 * Each voice is a stream of its own on the one socket: declared by an `audio_config` with its
 * `stream` tag, and that tag byte in front of each of its binary frames (see docs/protocol.md).
 * The rep's own speech feeds the context; only the customer's makes suggestions.
 */
const VOICES = Object.freeze({ rep: { tag: 1 }, customer: { tag: 2 } });
const MAX_TYPED_CHARS = 4000;
const NOTICE_MS = 10_000;
const PROFILE_FIELDS = Object.freeze(["name", "company", "account", "notes"]);
/** What the rep is told for the gateway's error codes that need more than their message. */
const ERROR_ADVICE = Object.freeze({
  rate_limited: "Sending faster than the gateway allows: some audio or text was dropped.",
  bad_text: "That text could not be sent: it holds characters that are not valid text.",
});

function audioConfig(speaker) {
  return {
    type: "audio_config",
    encoding: "pcm_s16le",
    sample_rate: SAMPLE_RATE,
    speaker,
    stream: VOICES[speaker].tag,
  };
}

function byTestId(id) {
  const element = document.querySelector(`[data-testid="${id}"]`);
  if (!element) throw new Error(`the page is missing its [data-testid="${id}"] element`);
  return element;
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

/**
 * The workers report `timings` as gaps between consecutive trace stages ("a->b": ms, in pipeline
 * order gateway_in -> ... -> llm_first_token -> llm_done), plus "total" (first to last stage) and
 * the gateway's own reply hop ("gateway_out").
 */
const FIRST_TOKEN_STAGE = "llm_first_token";
const TOTAL_KEY = "total";
const REPLY_HOP_KEY = "gateway_out";

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

/** One voice of the call: where it comes from (a picker), its capture, mute and level meter. */
class Voice {
  constructor(speaker, { onFrame, onEnded }) {
    this.speaker = speaker;
    this.select = byTestId(`${speaker}-device`);
    this.muteButton = byTestId(`${speaker}-mute`);
    this.level = byTestId(`${speaker}-level`);
    this.capture = new AudioCapture({
      frameMs: FRAME_MS,
      sampleRate: SAMPLE_RATE,
      onFrame: (pcm) => onFrame(VOICES[speaker].tag, pcm),
      onLevel: (peak) => this.level.style.setProperty("--level", Math.min(1, peak * 1.5)),
      onEnded: (reason) => onEnded(this, reason),
    });
  }

  get running() {
    return this.capture.running;
  }

  /** The picked source, or null when this voice is off. */
  source() {
    const value = this.select.value;
    if (value === "off") return null;
    if (value === "display") return sharedCallAudio();
    const what = this.speaker === "rep" ? "Your microphone" : "The customer's input";
    return inputDevice(value, what);
  }

  async start() {
    const source = this.source();
    if (source) await this.capture.start(source);
  }

  async stop() {
    await this.capture.stop();
    this.level.style.setProperty("--level", 0);
  }

  toggleMute() {
    const muted = this.muteButton.getAttribute("aria-pressed") !== "true";
    this.muteButton.setAttribute("aria-pressed", String(muted));
    this.muteButton.textContent = muted ? "Unmute" : "Mute";
    this.capture.setMuted(muted);
  }

  /** Input devices as options after the fixed ones, keeping the current pick. */
  listDevices(devices) {
    const picked = this.select.value;
    for (const option of [...this.select.options]) {
      if (option.dataset.device) option.remove();
    }
    devices.forEach((device, n) => {
      const option = document.createElement("option");
      option.value = device.deviceId;
      option.dataset.device = "true";
      option.textContent = device.label || `Input ${n + 1}`;
      this.select.append(option);
    });
    if ([...this.select.options].some((option) => option.value === picked)) {
      this.select.value = picked;
    }
  }
}

class RepScreen {
  constructor() {
    this.status = byTestId("status");
    this.latency = byTestId("latency");
    this.notice = byTestId("notice");
    this.llmStatus = byTestId("llm-status");
    this.startButton = byTestId("start");
    this.stopButton = byTestId("stop");
    this.endButton = byTestId("end-call");
    this.newButton = byTestId("new-conversation");
    this.form = byTestId("text-form");
    this.input = byTestId("text-input");
    this.speaker = byTestId("text-speaker");
    this.contextForm = byTestId("context-form");
    this.contextSaved = byTestId("context-saved");
    this.transcript = new TranscriptView(byTestId("transcript"), byTestId("transcript-scroller"));
    this.suggestion = new SuggestionView({
      text: byTestId("suggestion"),
      thinking: byTestId("thinking"),
      scroller: byTestId("suggestion-scroller"),
      note: byTestId("suggestion-note"),
    });
    this.countdown = null;
    this.noticeTimer = null;
    this.socket = null;
    this.renewal = null;
    this.repKey = null;
    this.conversationId = null;
    this.listening = false;
    this.ended = false;
    const voiceEvents = {
      // The socket puts the voice's tag byte in front and counts its offsets on their own.
      onFrame: (tag, pcm) => this.socket?.sendAudio(pcm, tag),
      onEnded: (voice, reason) => {
        this.#showNotice(reason);
        if (!Object.values(this.voices).some((v) => v.running)) this.#setListening(false);
      },
    };
    this.voices = {
      rep: new Voice("rep", voiceEvents),
      customer: new Voice("customer", voiceEvents),
    };
  }

  run() {
    const params = new URLSearchParams(window.location.search);
    const conversationId = params.get("conversation_id");
    const token = params.get("token");
    this.repKey = takeRepKey();
    this.#wireControls();

    if (this.repKey) {
      this.newButton.hidden = false;
      this.newButton.title = `Signed in as ${repName(this.repKey) ?? "a rep"}`;
    }
    if (!conversationId || !token) {
      this.#renderStatus({ name: "misconfigured" });
      this.#showNotice(
        this.repKey
          ? `Signed in as ${repName(this.repKey) ?? "a rep"}. Press “New call” to start a conversation.`
          : "This page needs ?conversation_id=…&token=… in its address; `teleprompter up` prints one.",
        { sticky: true },
      );
      this.#disable();
      return;
    }
    this.conversationId = conversationId;
    document.title = `teleprompter · ${conversationId}`;

    this.socket = new ConversationSocket({
      url: this.#socketUrl(token),
      onMessage: (message) => this.#receive(message),
      onState: (state) => this.#renderStatus(state),
      // Every new session must hear each voice's format before that voice's first frame.
      greeting: () => [audioConfig("rep"), audioConfig("customer")],
    });
    this.socket.start();
    this.renewal = new TokenRenewal({
      conversationId,
      token,
      onRenewed: (renewed) => {
        const address = new URL(window.location.href);
        address.searchParams.set("token", renewed);
        history.replaceState(history.state, "", address);
        // In-band: the live session now lasts as long as the new token; no reconnect.
        this.socket?.renew(renewed);
      },
      onRefused: (error) =>
        this.#showNotice(`This link cannot be renewed (${error.message}); it will stop working.`, {
          sticky: true,
        }),
    });
    this.renewal.start();
  }

  #socketUrl(token) {
    const url = new URL("/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = new URLSearchParams({ conversation_id: this.conversationId, token }).toString();
    return url.toString();
  }

  #wireControls() {
    this.startButton.addEventListener("click", () => this.#start());
    this.stopButton.addEventListener("click", () => this.#stop());
    this.endButton.addEventListener("click", () => this.#endCall());
    this.newButton.addEventListener("click", () => this.#newCall());
    for (const voice of Object.values(this.voices)) {
      voice.muteButton.addEventListener("click", () => voice.toggleMute());
      voice.select.addEventListener("change", () => this.#switchSource(voice));
    }
    this.contextForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#sendContext();
    });
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
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.#listDevices());
    window.addEventListener("pagehide", () => {
      for (const voice of Object.values(this.voices)) voice.stop();
      this.renewal?.stop();
      this.socket?.stop();
    });
    // Back from the back/forward cache: the socket closed on the way out, so open a new one.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted && !this.ended) {
        this.socket?.start();
        this.renewal?.start();
      }
    });
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
      case "suggestion_failed":
        this.suggestion.showFailed(message);
        break;
      case "throttled":
        this.suggestion.showThrottled(message);
        break;
      case "status":
        this.#showLlmStatus(message);
        break;
      case "ack":
        break; // the socket's delivery bookkeeping; nothing to show
      case "error": {
        const advice = ERROR_ADVICE[message.code];
        const detail = `Server error ${message.code ?? ""}: ${message.message ?? "(no message)"}`;
        this.#showNotice(advice ? `${advice} (${detail})` : detail);
        break;
      }
      default:
        console.warn("teleprompter: ignoring an unknown server message", message);
    }
  }

  #showLlmStatus({ llm, reason = "" }) {
    const degraded = llm === "degraded";
    this.llmStatus.hidden = !degraded;
    this.llmStatus.dataset.state = degraded ? "degraded" : "ok";
    this.llmStatus.textContent = degraded
      ? `Suggestions degraded${reason ? `: ${reason}` : ""}`
      : "";
  }

  async #start() {
    this.startButton.disabled = true;
    // The call's tab first: sharing it needs the click's user activation, which a slow answer
    // to the microphone's permission prompt could outlast.
    const voices = [this.voices.customer, this.voices.rep].filter((voice) => voice.source());
    if (voices.length === 0) {
      this.startButton.disabled = false;
      this.#showNotice("Both voices are off: pick a source for you or the customer.");
      return;
    }
    // One after another: a browser shows one permission prompt at a time.
    const failures = [];
    for (const voice of voices) {
      try {
        await voice.start();
      } catch (error) {
        failures.push(error instanceof CaptureError ? error.message : String(error));
      }
    }
    if (failures.length) this.#showNotice(failures.join(" "));
    if (!voices.some((voice) => voice.running)) {
      this.startButton.disabled = false;
      return;
    }
    this.#setListening(true);
    this.#listDevices();
  }

  async #stop() {
    this.stopButton.disabled = true;
    await Promise.all(Object.values(this.voices).map((voice) => voice.stop()));
    this.#setListening(false);
  }

  async #switchSource(voice) {
    if (!this.listening) return;
    await voice.stop();
    try {
      await voice.start();
    } catch (error) {
      this.#showNotice(error instanceof CaptureError ? error.message : String(error));
    }
    if (!Object.values(this.voices).some((v) => v.running)) this.#setListening(false);
  }

  async #listDevices() {
    let devices = [];
    try {
      devices = (await navigator.mediaDevices.enumerateDevices()).filter(
        (device) => device.kind === "audioinput" && device.deviceId && device.deviceId !== "default",
      );
    } catch {
      return; // the pickers keep their fixed choices
    }
    for (const voice of Object.values(this.voices)) voice.listDevices(devices);
  }

  #setListening(listening) {
    // Move focus to the other button, so keyboard users are never left on a disabled control.
    const hadFocus =
      document.activeElement === this.startButton || document.activeElement === this.stopButton;
    this.listening = listening;
    this.startButton.disabled = listening || this.ended;
    this.stopButton.disabled = !listening;
    document.body.dataset.listening = String(listening);
    if (hadFocus || document.activeElement === document.body) {
      (listening ? this.stopButton : this.startButton).focus();
    }
  }

  async #endCall() {
    if (!this.socket?.live) {
      this.#showNotice("The call can be ended once the connection is live again.");
      return;
    }
    this.socket.sendJson({ type: "end" });
    this.ended = true;
    document.body.dataset.call = "ended";
    this.renewal?.stop();
    if (this.listening) await this.#stop();
    this.socket.stop();
    this.#renderStatus({ name: "ended" });
    this.#showNotice(
      this.repKey ? "Call ended. “New call” starts the next one." : "Call ended.",
      { sticky: true },
    );
    this.#disable();
    (this.repKey ? this.newButton : this.status).focus?.();
  }

  async #newCall() {
    this.newButton.disabled = true;
    try {
      const { conversation_id: conversationId, token } = await startConversation(this.repKey);
      const address = new URL("/", window.location.href);
      address.search = new URLSearchParams({ conversation_id: conversationId, token }).toString();
      window.location.assign(address);
    } catch (error) {
      this.newButton.disabled = false;
      this.#showNotice(`No new call: ${error.message}`, { sticky: error.status === 401 });
    }
  }

  /** Nothing on this page can work any more but "New call": disable every other control. */
  async #disable() {
    if (this.listening) await this.#stop();
    this.startButton.disabled = true;
    this.stopButton.disabled = true;
    this.endButton.disabled = true;
    for (const voice of Object.values(this.voices)) {
      voice.select.disabled = true;
      voice.muteButton.disabled = true;
    }
    for (const control of [...this.form.elements, ...this.contextForm.elements]) {
      control.disabled = true;
    }
  }

  #sendContext() {
    const data = new FormData(this.contextForm);
    const profile = {};
    for (const field of PROFILE_FIELDS) {
      const value = String(data.get(field) ?? "").trim();
      if (value) profile[field] = value;
    }
    if (Object.keys(profile).length === 0) {
      this.contextSaved.textContent = "Nothing to save yet.";
      return;
    }
    this.socket?.sendJson({ type: "context", profile });
    this.contextSaved.textContent = this.socket?.live
      ? "Saved."
      : "Saved; sent when the connection is back.";
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
    if (this.ended && state.name !== "ended") return; // the call is over whatever the socket says
    this.status.dataset.state = state.name;
    this.endButton.disabled = state.name !== "live";
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
        this.renewal?.stop();
        this.#showNotice("The link's token was refused. Ask for a new link.", { sticky: true });
        this.#disable();
        break;
      case "expired":
        this.status.textContent = "expired";
        this.renewal?.stop();
        this.#showNotice(
          this.repKey
            ? "This call's link expired. “New call” starts another."
            : "This call's link expired. Ask for a new link.",
          { sticky: true },
        );
        this.#disable();
        break;
      case "rejected":
        this.status.textContent = "disconnected";
        this.renewal?.stop();
        this.#showNotice(`The server refused this connection${reason}.`, { sticky: true });
        this.#disable();
        break;
      case "misconfigured":
        this.status.textContent = "no conversation";
        break;
      case "ended":
        this.status.textContent = "call ended";
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
