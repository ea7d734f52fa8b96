/**
 * The current suggestion: grows token by token, resumes seamlessly, fades when superseded.
 *
 * Rendering follows each delta's `fullText` (the whole suggestion so far), not its fragment, so a
 * reconnect that re-sends the text so far lands exactly where the screen already is.
 */

/** Turns remembered as finished or cancelled, so their late deltas are ignored. */
const MAX_REMEMBERED_TURNS = 64;
/** A "thinking" indicator with no suggestion after it goes away on its own. */
const THINKING_TIMEOUT_MS = 15_000;

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
   */
  constructor({ text, thinking, scroller }) {
    this.textElement = text;
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

  /** `suggestion_cancelled`: { turn_id } — newer customer speech superseded it. */
  showCancelled({ turn_id: turnId }) {
    this.#close(turnId);
    if (turnId === this.turnId) this.#setState("cancelled");
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
