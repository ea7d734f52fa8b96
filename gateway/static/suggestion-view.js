/**
 * The current suggestion: grows token by token, resumes seamlessly, fades when superseded, and
 * says why when it ends without an answer (failed, or cancelled for another reason).
 *
 * Rendering follows each delta's `fullText` (the whole suggestion so far), not its fragment, so a
 * reconnect that re-sends the text so far lands exactly where the screen already is.
 */

/** Turns remembered as finished or cancelled, so their late deltas are ignored. */
const MAX_REMEMBERED_TURNS = 64;
/** A "thinking" indicator with no suggestion after it goes away on its own. */
const THINKING_TIMEOUT_MS = 15_000;

/** Why a suggestion ended without an answer, worded for the rep. */
const REASONS = Object.freeze({
  worker_lost: "its worker stopped; the next one answers",
  conversation_ended: "the call ended",
  timeout: "the language model took too long",
  llm_timeout: "the language model took too long",
  llm_unavailable: "the language model cannot be reached",
  llm_rate_limited: "the language model is turning requests away",
  llm_bad_request: "the language model refused the request",
  llm_error: "the language model failed",
  internal: "a server error",
});

function explain(reason) {
  if (!reason) return "no reason given";
  return REASONS[reason] ?? reason;
}

/** Splits text into words with their following whitespace, the unit of the typing animation. */
function tokens(text) {
  return text.match(/\s+|\S+\s*/g) ?? [];
}

export class SuggestionView {
  /**
   * @param {object} elements
   * @param {HTMLElement} elements.text - holds exactly the suggestion's text
   * @param {HTMLElement} elements.thinking - the "thinking" indicator
   * @param {HTMLElement} elements.scroller - scrolls when a long suggestion overflows
   * @param {HTMLElement} [elements.note] - why the last suggestion ended without an answer
   */
  constructor({ text, thinking, scroller, note = null }) {
    this.textElement = text;
    this.noteElement = note;
    this.thinkingElement = thinking;
    this.scroller = scroller;
    this.turnId = null;
    this.lastSeq = -Infinity;
    this.rendered = "";
    this.closedTurns = new Set();
    this.thinkingTimer = null;
    this.#setState("idle");
  }

  /** `suggestion_delta`: { turn_id, seq, text, fullText } */
  showDelta({ turn_id: turnId, seq, text = "", fullText }) {
    if (this.closedTurns.has(turnId)) return;
    if (turnId !== this.turnId) this.#beginTurn(turnId);
    if (typeof seq === "number") {
      if (seq <= this.lastSeq) return;
      this.lastSeq = seq;
    }
    this.#render(typeof fullText === "string" ? fullText : this.rendered + text);
    this.#setThinking(false);
    this.#setState("streaming");
  }

  /** `suggestion_complete`: { turn_id, text }. Returns false if it was for a closed turn. */
  showComplete({ turn_id: turnId, text }) {
    if (this.closedTurns.has(turnId)) return false;
    if (turnId !== this.turnId) this.#beginTurn(turnId);
    if (typeof text === "string") this.#render(text);
    this.#close(turnId);
    this.#setThinking(false);
    this.#setState("complete");
    return true;
  }

  /**
   * `suggestion_cancelled`: { turn_id, reason }. Superseded (newer customer speech, the usual
   * case) fades quietly; any other reason is said.
   */
  showCancelled({ turn_id: turnId, reason = "superseded" }) {
    const current = turnId === this.turnId;
    const late = this.closedTurns.has(turnId);
    this.#close(turnId);
    if (!current && (late || reason === "superseded")) return;
    if (!current) this.#beginTurn(turnId);
    this.#setThinking(false);
    this.#setState("cancelled");
    if (reason !== "superseded") this.#setNote(`Suggestion cancelled: ${explain(reason)}.`);
  }

  /** `suggestion_failed`: { turn_id, reason } — the LLM erred or timed out for this turn. */
  showFailed({ turn_id: turnId, reason = "" }) {
    if (this.closedTurns.has(turnId) && turnId !== this.turnId) return;
    this.#close(turnId);
    if (turnId !== this.turnId) this.#beginTurn(turnId);
    this.#setThinking(false);
    this.#setState("failed");
    this.#setNote(`No suggestion: ${explain(reason)}.`);
  }

  /** `throttled`: capacity is saturated; a suggestion is coming but later than usual. */
  showThrottled({ reason = "" } = {}) {
    this.thinkingElement.title = reason ? `Busy: ${reason}` : "Busy";
    this.#setThinking(true);
  }

  #beginTurn(turnId) {
    this.turnId = turnId;
    this.lastSeq = -Infinity;
    this.rendered = "";
    this.textElement.replaceChildren();
    this.#setNote("");
  }

  #setNote(text) {
    if (!this.noteElement) return;
    this.noteElement.textContent = text;
    this.noteElement.hidden = !text;
  }

  #close(turnId) {
    this.closedTurns.add(turnId);
    if (this.closedTurns.size > MAX_REMEMBERED_TURNS) {
      this.closedTurns.delete(this.closedTurns.values().next().value);
    }
  }

  #render(fullText) {
    if (fullText === this.rendered) return;
    if (fullText.startsWith(this.rendered)) {
      // The common case: new tokens at the end, each fading in.
      const fragment = document.createDocumentFragment();
      for (const token of tokens(fullText.slice(this.rendered.length))) {
        const span = document.createElement("span");
        span.className = "token";
        span.textContent = token;
        fragment.append(span);
      }
      this.textElement.append(fragment);
    } else {
      // The text changed under us (a corrected resume): show it as is, without animation.
      const span = document.createElement("span");
      span.textContent = fullText;
      this.textElement.replaceChildren(span);
    }
    this.rendered = fullText;
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  #setState(state) {
    this.textElement.dataset.state = state;
    this.textElement.dataset.turnId = this.turnId ?? "";
    // Screen readers wait for aria-busy to clear, then read the whole suggestion once.
    this.textElement.setAttribute("aria-busy", String(state === "streaming"));
  }

  #setThinking(on) {
    clearTimeout(this.thinkingTimer);
    this.thinkingElement.hidden = !on;
    if (on) this.thinkingTimer = setTimeout(() => this.#setThinking(false), THINKING_TIMEOUT_MS);
  }
}
