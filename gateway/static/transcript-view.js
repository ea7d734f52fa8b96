/**
 * The live transcript: one line per utterance, partials greyed until their final arrives, and a
 * revised transcript (one carrying `revision`) rewriting the line it revises in place.
 */

const SPEAKER_LABELS = Object.freeze({ customer: "Customer", rep: "You" });
/** Lines typed here that the server may echo back as `transcript`; matched once, then dropped. */
const MAX_PENDING_TYPED = 20;
/** Distance from the bottom (px) within which the view keeps following new lines. */
const FOLLOW_SLACK_PX = 48;

function normalise(text) {
  return text.trim().replace(/\s+/g, " ").toLowerCase();
}

export class TranscriptView {
  /**
   * @param {HTMLElement} list - the transcript's <ol>
   * @param {HTMLElement} scroller - the element that scrolls (the list or its panel)
   * @param {object} [options]
   * @param {number} [options.maxLines] - older lines are removed beyond this
   */
  constructor(list, scroller, { maxLines = 300 } = {}) {
    this.list = list;
    this.scroller = scroller;
    this.maxLines = maxLines;
    /** speaker -> its line still showing a partial */
    this.partialLines = new Map();
    /** speaker -> its latest final line: what a revision without a segment id revises */
    this.finalLines = new Map();
    this.pendingTyped = [];
  }

  /** A `transcript` message from speech recognition. */
  showRecognised({ speaker = "customer", text = "", final = true, revision, segment_id: segmentId }) {
    const follow = this.#atBottom();
    if (Number.isInteger(revision) && final) {
      const revised = this.#revisedLine(speaker, segmentId);
      if (revised) {
        this.#fill(revised, text, true);
        revised.dataset.revision = String(revision);
        if (follow) this.#scrollToEnd();
        return;
      }
    }
    const partial = this.partialLines.get(speaker);
    if (final) {
      this.partialLines.delete(speaker);
      if (!partial && this.#confirmTyped(speaker, text)) return;
      const line = partial ?? this.#append(speaker);
      if (segmentId) line.dataset.segmentId = String(segmentId);
      this.#fill(line, text, true);
      this.finalLines.set(speaker, line);
    } else {
      const line = partial ?? this.#append(speaker);
      this.partialLines.set(speaker, line);
      this.#fill(line, text, false);
    }
    if (follow) this.#scrollToEnd();
  }

  /** A chunk the rep typed and sent: shown at once, since the server need not echo it. */
  showTyped({ speaker, text }) {
    const follow = this.#atBottom();
    const line = this.#append(speaker);
    line.dataset.source = "typed";
    this.#fill(line, text, true);
    this.pendingTyped.push({ speaker, text: normalise(text) });
    if (this.pendingTyped.length > MAX_PENDING_TYPED) this.pendingTyped.shift();
    if (follow) this.#scrollToEnd();
  }

  #revisedLine(speaker, segmentId) {
    if (segmentId) {
      for (const line of this.list.children) {
        if (line.dataset.segmentId === String(segmentId)) return line;
      }
      return null;
    }
    const latest = this.finalLines.get(speaker);
    return latest?.isConnected ? latest : null;
  }

  #confirmTyped(speaker, text) {
    const wanted = normalise(text);
    const index = this.pendingTyped.findIndex((p) => p.speaker === speaker && p.text === wanted);
    if (index < 0) return false;
    this.pendingTyped.splice(index, 1);
    return true;
  }

  #append(speaker) {
    const line = document.createElement("li");
    line.className = "line";
    line.dataset.speaker = speaker;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = SPEAKER_LABELS[speaker] ?? speaker;
    const words = document.createElement("span");
    words.className = "words";
    line.append(who, words);
    this.list.append(line);
    while (this.list.children.length > this.maxLines) {
      const oldest = this.list.firstElementChild;
      for (const [who, partial] of this.partialLines) {
        if (partial === oldest) this.partialLines.delete(who);
      }
      oldest.remove();
    }
    return line;
  }

  #fill(line, text, final) {
    line.dataset.final = String(final);
    line.querySelector(".words").textContent = text;
  }

  #atBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight <= FOLLOW_SLACK_PX;
  }

  #scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
