/**
 * The conversation's WebSocket: reconnects with backoff, reports its state, and resends what
 * the server has not acknowledged.
 *
 * "live" means the server sent `ready` on this connection. Every JSON message gets a `seq`
 * and every audio byte an offset in its audio stream; both are kept until the server acks them
 * (Kafka has stored them), and resent, in their order, after a reconnect. The gateway names
 * segments `client_id:seq`, so a resend never makes a second turn. What waits is bounded in
 * bytes: beyond that the oldest is dropped, and counted.
 *
 * Audio is one untagged stream, or several tagged ones (`sendAudio(pcm, tag)`: the tag byte
 * goes in front of each frame). Each stream counts its own offsets, over its audio bytes
 * only, as the gateway does; its acks and errors name it with `stream`.
 */

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013,
  UNAUTHORIZED: 4001,
  REPLACED: 4002,
});

const UTF8 = new TextEncoder();

/** A connection live this long resets the backoff. */
const STABLE_AFTER_MS = 10_000;

/** Close codes after which reconnecting would only be refused again. */
const FINAL_CLOSE_CODES = new Map([
  [CloseCode.UNAUTHORIZED, "unauthorized"],
  [CloseCode.POLICY, "rejected"],
  // Another socket of this conversation took this one's place (beyond the gateway's cap).
  [CloseCode.REPLACED, "rejected"],
]);

/** The key of the one untagged audio stream (a tagged stream's key is its tag). */
const UNTAGGED = null;

/** 128 random bits as hex: `crypto.randomUUID` needs a secure context, this does not. */
function randomClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * @typedef {object} SocketState
 * @property {"connecting"|"live"|"reconnecting"|"unauthorized"|"expired"|"rejected"|"closed"} name
 * @property {number} [retryAt] - epoch ms of the next attempt, when reconnecting
 * @property {number} [code] - the close code that led here
 * @property {string} [reason] - the close reason the server gave
 */

/**
 * @typedef {object} Unacked
 * @property {"message"|"frame"} kind
 * @property {string|ArrayBuffer} data - what goes on the wire
 * @property {number} bytes
 * @property {number} [seq] - a message's
 * @property {number} [offset] - a frame's first byte in its audio stream
 * @property {number|null} [stream] - a frame's stream tag (null: untagged)
 */

/** One frame of a tagged stream: its tag byte, then its audio. */
function tagged(tag, pcm) {
  const frame = new Uint8Array(pcm.byteLength + 1);
  frame[0] = tag;
  frame.set(new Uint8Array(pcm), 1);
  return frame.buffer;
}

export class ConversationSocket {
  /**
   * @param {object} options
   * @param {string} options.url - the ws:// or wss:// URL, credentials included
   * @param {(message: object) => void} options.onMessage - every JSON message from the server
   *   but acks
   * @param {(state: SocketState) => void} options.onState - connection state changes
   * @param {() => object[]} [options.greeting] - messages every new session must start with
   *   (sent right after `ready`, before anything resent; an `audio_config` among them is told
   *   where the resent audio starts)
   * @param {number} [options.maxUnackedMessageBytes] - JSON kept for resending
   * @param {number} [options.maxUnackedAudioBytes] - audio kept for resending, per stream
   *   (15 s of 16 kHz PCM by default: a Kafka outage that long loses nothing)
   * @param {number} [options.maxBufferedBytes] - beyond this in the browser's send buffer, new
   *   audio frames are dropped (counted) rather than queued behind a stalled link
   */
  constructor({
    url,
    onMessage,
    onState,
    greeting = () => [],
    initialDelayMs = 500,
    maxDelayMs = 15_000,
    maxUnackedMessageBytes = 256 * 1024,
    maxUnackedAudioBytes = 15 * 32_000,
    maxBufferedBytes = 256 * 1024,
  }) {
    this.clientId = randomClientId();
    const withClient = new URL(url);
    withClient.searchParams.set("client_id", this.clientId);
    this.url = withClient.toString();
    this.onMessage = onMessage;
    this.onState = onState;
    this.greeting = greeting;
    this.initialDelayMs = initialDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.maxUnackedMessageBytes = maxUnackedMessageBytes;
    this.maxUnackedAudioBytes = maxUnackedAudioBytes;
    this.maxBufferedBytes = maxBufferedBytes;

    this.ws = null;
    /** The URL whose token the current session lives by (opened with, or renewed to). */
    this.sessionUrl = null;
    this.state = { name: "connecting" };
    this.failures = 0;
    this.liveSince = 0;
    this.retryTimer = null;
    this.stopped = false;
    /** @type {Unacked[]} in the order they were first sent */
    this.unacked = [];
    this.unackedMessageBytes = 0;
    /** @type {Map<number|null, number>} per stream: unacked audio bytes */
    this.unackedAudioBytes = new Map();
    this.nextSeq = 0;
    /** @type {Map<number|null, number>} per stream: the offset of its next byte */
    this.audioOffsets = new Map();
    this.droppedFrames = 0;
    this.droppedMessages = 0;
    this.onOnline = () => this.#retryNow();
  }

  get live() {
    // Between the server's close frame and the close event the socket is CLOSING: not live.
    return this.state.name === "live" && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Audio frames not yet acknowledged: the next session resends them. */
  get queuedFrames() {
    return this.unacked.filter((item) => item.kind === "frame").length;
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.#open();
  }

  /**
   * A renewed token: the live session is told in-band (`token`), so it lives until the new one
   * expires, and every later connection opens with it.
   */
  renew(token) {
    const url = new URL(this.url);
    url.searchParams.set("token", token);
    this.url = url.toString();
    // A session not yet live hears it right after its `ready`.
    if (this.live) this.#sendToken(this.ws);
  }

  /** The current token to a session opened with (or renewed to) an older one. */
  #sendToken(ws) {
    if (this.sessionUrl === this.url) return;
    const token = new URL(this.url).searchParams.get("token");
    // Not kept for resending: a new connection presents the new token itself.
    ws.send(JSON.stringify({ type: "token", token, seq: this.nextSeq++ }));
    this.sessionUrl = this.url;
  }

  /** Closes for good: no reconnect. */
  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.ws?.close(CloseCode.NORMAL, "page closed");
    this.#setState({ name: "closed" });
  }

  /** Sends a JSON message now if live, and keeps it (bounded) until the server acks it. */
  sendJson(message) {
    const seq = this.nextSeq++;
    const stamped = { ...message, seq };
    if (message.type === "audio_config") {
      const offset = this.audioOffsets.get(message.stream ?? UNTAGGED) ?? 0;
      if (offset > 0) stamped.offset = offset;
    }
    const data = JSON.stringify(stamped);
    this.#keep({ kind: "message", data, bytes: UTF8.encode(data).length, seq });
    if (this.live) this.ws.send(data);
  }

  /**
   * Sends one audio frame of stream `tag` (omitted: the untagged stream) now if live, and keeps
   * it (bounded) until the server acks it.
   */
  sendAudio(pcm, tag = UNTAGGED) {
    if (this.live && this.ws.bufferedAmount > this.maxBufferedBytes) {
      // The link cannot keep up: this frame never joins the stream (offsets skip nothing).
      this.droppedFrames += 1;
      return;
    }
    const stream = tag ?? UNTAGGED;
    const offset = this.audioOffsets.get(stream) ?? 0;
    this.audioOffsets.set(stream, offset + pcm.byteLength);
    const data = stream === UNTAGGED ? pcm : tagged(stream, pcm);
    this.#keep({ kind: "frame", data, bytes: pcm.byteLength, offset, stream });
    if (this.live) this.ws.send(data);
  }

  #keep(item) {
    this.unacked.push(item);
    if (item.kind === "message") {
      this.unackedMessageBytes += item.bytes;
      while (this.unackedMessageBytes > this.maxUnackedMessageBytes) {
        this.#dropOldest((kept) => kept.kind === "message");
        this.droppedMessages += 1;
      }
      return;
    }
    const stream = item.stream;
    this.#addAudioBytes(stream, item.bytes);
    while (this.unackedAudioBytes.get(stream) > this.maxUnackedAudioBytes) {
      this.#dropOldest((kept) => kept.kind === "frame" && kept.stream === stream);
      this.droppedFrames += 1;
    }
  }

  #dropOldest(matches) {
    const [dropped] = this.unacked.splice(this.unacked.findIndex(matches), 1);
    this.#forget(dropped);
  }

  #forget(item) {
    if (item.kind === "message") this.unackedMessageBytes -= item.bytes;
    else this.#addAudioBytes(item.stream, -item.bytes);
  }

  #addAudioBytes(stream, bytes) {
    this.unackedAudioBytes.set(stream, (this.unackedAudioBytes.get(stream) ?? 0) + bytes);
  }

  /**
   * An ack or an error naming a seq settles that message; an audio ack (or error) of a stream
   * every byte of that stream before its `audio_offset`.
   */
  #settle(message) {
    if (message.seq === undefined && message.audio_offset === undefined) return;
    const stream = message.stream ?? UNTAGGED;
    const settled = (item) =>
      item.kind === "message"
        ? item.seq === message.seq
        : message.audio_offset !== undefined &&
          item.stream === stream &&
          item.offset + item.bytes <= message.audio_offset;
    this.unacked = this.unacked.filter((item) => {
      if (!settled(item)) return true;
      this.#forget(item);
      return false;
    });
  }

  /** A new session: the greeting, then everything unacked, in its original order. */
  #resend(ws) {
    for (const first of this.greeting()) {
      const resumeAt =
        first.type === "audio_config" ? this.#resumeAt(first.stream ?? UNTAGGED) : 0;
      ws.send(JSON.stringify(resumeAt > 0 ? { ...first, offset: resumeAt } : first));
    }
    for (const item of this.unacked) ws.send(item.data);
  }

  /** Where a stream's resent audio starts: its first unacked byte, or its next byte. */
  #resumeAt(stream) {
    const first = this.unacked.find((item) => item.kind === "frame" && item.stream === stream);
    return first ? first.offset : (this.audioOffsets.get(stream) ?? 0);
  }

  #open() {
    if (this.stopped) return;
    this.#setState({ name: "connecting" });
    let ws;
    try {
      ws = new WebSocket(this.url);
      this.sessionUrl = this.url;
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
      this.#sendToken(ws);
      this.#resend(ws);
    } else if (message?.type === "ack") {
      this.#settle(message);
      return; // the transport's business alone
    } else if (message?.type === "error") {
      this.#settle(message);
    }
    this.onMessage(message);
  }

  #closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (this.stopped) return;
    // The gateway ends a session whose token ran out with 4001 "token_expired"; if the token
    // was renewed since that socket opened (the renewal did not reach it), reconnect with it.
    const expired = event.code === CloseCode.UNAUTHORIZED && event.reason === "token_expired";
    const renewedSince = this.sessionUrl !== this.url;
    const final = expired
      ? renewedSince
        ? undefined
        : "expired"
      : FINAL_CLOSE_CODES.get(event.code);
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
