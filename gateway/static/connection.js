/**
 * The conversation's WebSocket: reconnects with backoff, reports its state, bounds what waits.
 *
 * "live" means the server sent `ready` on this connection. Until then (and between connections)
 * outgoing messages wait in a small bounded queue; the oldest are dropped and counted beyond it,
 * because a live call cannot usefully replay minutes of stale audio.
 */

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013,
  UNAUTHORIZED: 4001,
});

/** A connection live this long resets the backoff. */
const STABLE_AFTER_MS = 10_000;

/** Close codes after which reconnecting would only be refused again. */
const FINAL_CLOSE_CODES = new Map([
  [CloseCode.UNAUTHORIZED, "unauthorized"],
  [CloseCode.POLICY, "rejected"],
]);

/**
 * @typedef {object} SocketState
 * @property {"connecting"|"live"|"reconnecting"|"unauthorized"|"expired"|"rejected"|"closed"} name
 * @property {number} [retryAt] - epoch ms of the next attempt, when reconnecting
 * @property {number} [code] - the close code that led here
 * @property {string} [reason] - the close reason the server gave
 */

export class ConversationSocket {
  /**
   * @param {object} options
   * @param {string} options.url - the ws:// or wss:// URL, credentials included
   * @param {(message: object) => void} options.onMessage - every JSON message from the server
   * @param {(state: SocketState) => void} options.onState - connection state changes
   * @param {() => object[]} [options.greeting] - messages every new session must start with
   *   (sent right after `ready`, before anything queued)
   */
  constructor({
    url,
    onMessage,
    onState,
    greeting = () => [],
    initialDelayMs = 500,
    maxDelayMs = 15_000,
    maxQueuedMessages = 50,
    maxQueuedFrames = 30,
    maxBufferedBytes = 256 * 1024,
  }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.greeting = greeting;
    this.initialDelayMs = initialDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.maxQueuedMessages = maxQueuedMessages;
    this.maxQueuedFrames = maxQueuedFrames;
    this.maxBufferedBytes = maxBufferedBytes;

    this.ws = null;
    this.state = { name: "connecting" };
    this.failures = 0;
    this.liveSince = 0;
    this.retryTimer = null;
    this.stopped = false;
    this.queue = [];
    this.droppedFrames = 0;
    this.droppedMessages = 0;
    this.onOnline = () => this.#retryNow();
  }

  get live() {
    // Between the server's close frame and the close event the socket is CLOSING: not live.
    return this.state.name === "live" && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Audio frames waiting for the next session. */
  get queuedFrames() {
    return this.queue.filter((item) => item.kind === "frame").length;
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.#open();
  }

  /** Reconnects at once to `url` (a renewed token); the new session resumes this one's work. */
  restart(url) {
    this.url = url;
    const old = this.ws;
    this.ws = null; // its close event is no longer ours to act on
    clearTimeout(this.retryTimer);
    this.liveSince = 0;
    old?.close(CloseCode.NORMAL, "token renewed");
    this.#open();
  }

  /** Closes for good: no reconnect. */
  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.ws?.close(CloseCode.NORMAL, "page closed");
    this.#setState({ name: "closed" });
  }

  /** Sends a JSON message now if live, else queues it (bounded). */
  sendJson(message) {
    const text = JSON.stringify(message);
    if (this.live && this.queue.length === 0) {
      this.ws.send(text);
      return;
    }
    this.#enqueue({ kind: "message", data: text });
  }

  /** Sends one audio frame; drops it (counted) when the link cannot keep up. */
  sendAudio(pcm) {
    if (this.live && this.queue.length === 0) {
      if (this.ws.bufferedAmount > this.maxBufferedBytes) {
        this.droppedFrames += 1;
        return;
      }
      this.ws.send(pcm);
      return;
    }
    this.#enqueue({ kind: "frame", data: pcm });
  }

  #enqueue(item) {
    this.queue.push(item);
    const limit = item.kind === "frame" ? this.maxQueuedFrames : this.maxQueuedMessages;
    if (this.queue.filter((queued) => queued.kind === item.kind).length > limit) {
      const oldest = this.queue.findIndex((queued) => queued.kind === item.kind);
      this.queue.splice(oldest, 1);
      if (item.kind === "frame") this.droppedFrames += 1;
      else this.droppedMessages += 1;
    }
  }

  #flush() {
    while (this.live && this.queue.length > 0) {
      this.ws.send(this.queue.shift().data);
    }
  }

  #open() {
    if (this.stopped) return;
    this.#setState({ name: "connecting" });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      // Only a malformed URL throws here; retrying cannot fix it.
      this.#setState({ name: "rejected", reason: error.message });
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (event) => this.#receive(ws, event));
    ws.addEventListener("close", (event) => this.#closed(ws, event));
    this.ws = ws;
  }

  #receive(ws, event) {
    if (ws !== this.ws || typeof event.data !== "string") return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn("teleprompter: ignoring a server frame that is not JSON", event.data);
      return;
    }
    if (message?.type === "ready") {
      this.liveSince = Date.now();
      this.#setState({ name: "live" });
      for (const first of this.greeting()) ws.send(JSON.stringify(first));
      this.#flush();
    }
    this.onMessage(message);
  }

  #closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (this.stopped) return;
    // The gateway ends a session whose token ran out with 4001 "token_expired".
    const expired = event.code === CloseCode.UNAUTHORIZED && event.reason === "token_expired";
    const final = expired ? "expired" : FINAL_CLOSE_CODES.get(event.code);
    if (final) {
      this.#setState({ name: final, code: event.code, reason: event.reason });
      return;
    }
    // A connection that stayed up a while was healthy: start the backoff afresh. One that
    // drops right after `ready` keeps backing off, so a flapping server is not hammered.
    if (this.liveSince && Date.now() - this.liveSince > STABLE_AFTER_MS) this.failures = 0;
    this.liveSince = 0;
    // Exponential backoff with jitter, so a restarted gateway is not stampeded by every rep.
    const ceiling = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** this.failures);
    let delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    if (event.code === CloseCode.TRY_AGAIN_LATER) delay = Math.max(delay, 2000);
    this.failures += 1;
    this.retryTimer = setTimeout(() => this.#open(), delay);
    this.#setState({
      name: "reconnecting",
      retryAt: Date.now() + delay,
      code: event.code,
      reason: event.reason,
    });
  }

  #retryNow() {
    if (this.state.name !== "reconnecting") return;
    clearTimeout(this.retryTimer);
    this.#open();
  }

  #setState(state) {
    this.state = state;
    this.onState(state);
  }
}
