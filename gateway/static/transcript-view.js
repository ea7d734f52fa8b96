/**
 * The live transcript: one line per utterance, partials greyed until their final arrives, and a
 * revised final (a higher `revision` of the same `segment_id`) rewriting its line in place.
 */

const SPEAKER_LABELS = Object.freeze({ customer: "Customer", rep: "You" });
/** Lines typed here that the server may echo back as `transcript`; matched once, then dropped. */
const MAX_PENDING_TYPED = 20;
/** Recent recognised lines a revision (same segment_id, higher revision) may still rewrite. */
const MAX_REVISABLE = 16;
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
    /** segment_id -> the line its final filled, for revisions */
    this.segmentLines = new Map();
    /** speaker -> its latest final line: what a revision without a segment id revises */
    this.finalLines = new Map();
    this.pendingTyped = [];
  }

  /** A `transcript` message from speech recognition. */
  showRecognised({ speaker = "customer", text = "", final = true, segment_id = "", revision = 0 }) {
    const follow = this.#atBottom();
    const partial = this.partialLines.get(speaker);
    const revised = final && revision > 0 ? this.#revisedLine(speaker, segment_id) : null;
    if (revised) {
      // The whole utterance re-decoded: its line is rewritten, its newer partial dropped.
      this.partialLines.delete(speaker);
      if (partial && partial !== revised) partial.remove();
      this.#fill(revised, text, true);
      revised.dataset.revision = String(revision);
    } else if (final) {
      this.partialLines.delete(speaker);
      if (!partial && this.#confirmTyped(speaker, text)) return;
      const line = partial ?? this.#append(speaker);
      this.#fill(line, text, true);
      this.finalLines.set(speaker, line);
      if (segment_id) {
        this.segmentLines.set(segment_id, line);
        if (this.segmentLines.size > MAX_REVISABLE) {
          this.segmentLines.delete(this.segmentLines.keys().next().value);
        }
      }
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
    const line = segmentId ? this.segmentLines.get(segmentId) : this.finalLines.get(speaker);
    return line?.isConnected ? line : null;
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
