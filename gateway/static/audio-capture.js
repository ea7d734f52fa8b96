/**
 * Audio capture for one voice: a MediaStream (a microphone, another input, or a shared call tab)
 * -> AudioWorklet -> 16 kHz PCM s16le frames for the socket. Muting drops frames at the source.
 */

const WORKLET_URL = new URL("./audio-worklet.js", import.meta.url);
const PROCESSOR_NAME = "pcm-frame-processor";
const STOP_TIMEOUT_MS = 1000;

/** Why a voice could not be captured, worded for the rep. */
export class CaptureError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "CaptureError";
  }
}

function explainFailure(error, what) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Permission for ${what} was denied. Allow it in the browser, or type below.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `${what} was not found. Plug it in or pick another, or type below.`;
    case "NotReadableError":
      return `${what} is busy in another application.`;
    default:
      return `${what} could not start: ${error?.message ?? error}`;
  }
}

/** A microphone or other input device; `deviceId` "" is the browser's default. */
export function inputDevice(deviceId, what = "The microphone") {
  return {
    what,
    async open() {
      const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true };
      if (deviceId) audio.deviceId = { exact: deviceId };
      return navigator.mediaDevices.getUserMedia({ audio, video: false });
    },
  };
}

/** The call's own audio: a shared browser tab (the web phone) or the screen's sound. */
export function sharedCallAudio() {
  return {
    what: "The call's audio",
    async open() {
      if (!navigator.mediaDevices?.getDisplayMedia) {
        throw new CaptureError("This browser cannot share a tab's audio; pick an input device.");
      }
      // Browsers only share audio along with a picture; the picture is dropped at once.
      const stream = await navigator.mediaDevices.getDisplayMedia({
        video: true,
        audio: { echoCancellation: false, noiseSuppression: false },
        systemAudio: "include",
      });
      if (stream.getAudioTracks().length === 0) {
        stream.getTracks().forEach((track) => track.stop());
        throw new CaptureError(
          "The shared tab or screen has no sound: share it again and tick “Share audio”.",
        );
      }
      for (const track of stream.getVideoTracks()) {
        track.stop();
        stream.removeTrack(track);
      }
      return stream;
    },
  };
}

export class AudioCapture {
  /**
   * @param {object} options
   * @param {(pcm: ArrayBuffer) => void} options.onFrame - one frame of s16le mono PCM
   * @param {(peak: number) => void} [options.onLevel] - frame peak, 0..1, for a level meter
   * @param {(reason: string) => void} [options.onEnded] - the source went away by itself
   * @param {number} [options.sampleRate] - samples per second sent up
   * @param {number} [options.frameMs] - milliseconds of audio per frame
   */
  constructor({ onFrame, onLevel = () => {}, onEnded = () => {}, sampleRate = 16000, frameMs = 100 }) {
    this.onFrame = onFrame;
    this.onLevel = onLevel;
    this.onEnded = onEnded;
    this.sampleRate = sampleRate;
    this.frameMs = frameMs;
    this.parts = null;
    this.muted = false;
  }

  get running() {
    return this.parts !== null;
  }

  /** While muted nothing is sent: the recogniser sees the voice stop, not silence. */
  setMuted(muted) {
    this.muted = muted;
    for (const track of this.parts?.stream.getAudioTracks() ?? []) track.enabled = !muted;
    if (muted) this.onLevel(0);
  }

  /**
   * Opens `source` ({ what, open(): Promise<MediaStream> }) and streams its frames;
   * throws CaptureError.
   */
  async start(source) {
    if (this.parts) return;
    if (!window.isSecureContext || !navigator.mediaDevices) {
      throw new CaptureError(
        "Audio needs a secure page (https or localhost). Type the transcript below instead.",
      );
    }
    // Created before any await so it starts inside the click's user activation.
    const context = new AudioContext({ latencyHint: "interactive" });
    let stream = null;
    try {
      try {
        stream = await source.open();
      } catch (error) {
        if (error instanceof CaptureError) throw error;
        throw new CaptureError(explainFailure(error, source.what), { cause: error });
      }
      await context.audioWorklet.addModule(WORKLET_URL);
      const input = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, PROCESSOR_NAME, {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        channelCount: 1,
        channelCountMode: "explicit",
        channelInterpretation: "speakers",
        processorOptions: { targetRate: this.sampleRate, frameMs: this.frameMs },
      });
      node.port.onmessage = (event) => this.#fromWorklet(event.data);
      node.addEventListener("processorerror", () =>
        this.#sourceEnded("Audio processing failed in the browser; reload the page."),
      );
      input.connect(node);
      if (context.state === "suspended") await context.resume();
      for (const track of stream.getAudioTracks()) {
        track.addEventListener("ended", () =>
          this.#sourceEnded(`${source.what} stopped (unplugged, unshared or not allowed).`),
        );
        track.enabled = !this.muted;
      }
      this.parts = { context, stream, source: input, node, stopped: null };
    } catch (error) {
      stream?.getTracks().forEach((track) => track.stop());
      await context.close().catch(() => {});
      if (error instanceof CaptureError) throw error;
      throw new CaptureError(`${source.what} could not start: ${error.message}`, {
        cause: error,
      });
    }
  }

  /** Stops capture after sending the last partial frame. */
  async stop() {
    const parts = this.parts;
    if (!parts) return;
    this.parts = null;
    const stopped = new Promise((resolve) => {
      parts.stopped = resolve;
      setTimeout(resolve, STOP_TIMEOUT_MS);
    });
    // The worklet flushes its partial frame, which still reaches onFrame, then confirms.
    parts.node.port.onmessage = (event) => {
      if (event.data?.type === "frame" && !this.muted) this.onFrame(event.data.pcm);
      if (event.data?.type === "stopped") parts.stopped();
    };
    parts.node.port.postMessage({ type: "stop" });
    await stopped;
    parts.source.disconnect();
    parts.node.port.close();
    parts.stream.getTracks().forEach((track) => track.stop());
    await parts.context.close().catch(() => {});
  }

  #fromWorklet(message) {
    if (message?.type !== "frame" || this.muted) return;
    this.onFrame(message.pcm);
    this.onLevel(message.peak);
  }

  async #sourceEnded(reason) {
    if (!this.parts) return;
    await this.stop();
    this.onEnded(reason);
  }
}
