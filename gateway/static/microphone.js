/**
 * Microphone capture: getUserMedia -> AudioWorklet -> 16 kHz PCM s16le frames for the socket.
 */

const WORKLET_URL = new URL("./audio-worklet.js", import.meta.url);
const PROCESSOR_NAME = "pcm-frame-processor";
const STOP_TIMEOUT_MS = 1000;

/** Why the microphone could not start, worded for the rep. */
export class MicrophoneError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "MicrophoneError";
  }
}

function explainGetUserMediaFailure(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone permission was denied. Allow it in the browser, or type below.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in, or type below.";
    case "NotReadableError":
      return "The microphone is busy in another application.";
    default:
      return `The microphone could not start: ${error?.message ?? error}`;
  }
}

export class MicrophoneCapture {
  /**
   * @param {object} options
   * @param {(pcm: ArrayBuffer) => void} options.onFrame - one frame of s16le mono PCM
   * @param {(peak: number) => void} [options.onLevel] - frame peak, 0..1, for a level meter
   * @param {(reason: string) => void} [options.onEnded] - the device went away by itself
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
  }

  get running() {
    return this.parts !== null;
  }

  /** Asks for the microphone and starts streaming frames; throws MicrophoneError. */
  async start() {
    if (this.parts) return;
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new MicrophoneError(
        "The microphone needs a secure page (https or localhost). Type the transcript below instead.",
      );
    }
    // Created before any await so it starts inside the click's user activation.
    const context = new AudioContext({ latencyHint: "interactive" });
    let stream = null;
    try {
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
          video: false,
        });
      } catch (error) {
        throw new MicrophoneError(explainGetUserMediaFailure(error), { cause: error });
      }
      await context.audioWorklet.addModule(WORKLET_URL);
      const source = context.createMediaStreamSource(stream);
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
        this.#deviceEnded("Audio processing failed in the browser; reload the page."),
      );
      source.connect(node);
      if (context.state === "suspended") await context.resume();
      for (const track of stream.getAudioTracks()) {
        track.addEventListener("ended", () =>
          this.#deviceEnded("The microphone stopped (unplugged or permission withdrawn)."),
        );
      }
      this.parts = { context, stream, source, node, stopped: null };
    } catch (error) {
      stream?.getTracks().forEach((track) => track.stop());
      await context.close().catch(() => {});
      if (error instanceof MicrophoneError) throw error;
      throw new MicrophoneError(`The microphone could not start: ${error.message}`, {
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
      if (event.data?.type === "frame") this.onFrame(event.data.pcm);
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
    if (message?.type !== "frame") return;
    this.onFrame(message.pcm);
    this.onLevel(message.peak);
  }

  async #deviceEnded(reason) {
    if (!this.parts) return;
    await this.stop();
    this.onEnded(reason);
  }
}
