/**
 * AudioWorklet processor: microphone audio -> 16 kHz mono PCM s16le frames of ~100 ms.
 *
 * Runs on the audio rendering thread. It always converts from the AudioContext's own rate with
 * our band-limited resampler (rather than asking for a 16 kHz AudioContext) so every browser
 * takes the same, tested path: some cannot connect a microphone to a context of another rate.
 * Frames go to the page over the node's port as transferred ArrayBuffers.
 */
import { Resampler } from "./resampler.js";

const PROCESSOR_NAME = "pcm-frame-processor";

class PcmFrameProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, frameMs = 100 } = options.processorOptions ?? {};
    // `sampleRate` is the AudioWorkletGlobalScope's rate: the AudioContext's.
    this.resampler = new Resampler({ inputRate: sampleRate, outputRate: targetRate });
    this.frameSamples = Math.max(1, Math.round((targetRate * frameMs) / 1000));
    this.#newFrame();
    this.mono = new Float32Array(128);
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data?.type === "stop") {
        this.#emit();
        this.running = false;
        this.port.postMessage({ type: "stopped" });
      }
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    // No channels means nothing is connected yet (or the source went away): nothing to do.
    if (channels && channels.length > 0 && channels[0].length > 0) this.#consume(channels);
    return true;
  }

  #consume(channels) {
    const blockLength = channels[0].length;
    if (this.mono.length < blockLength) this.mono = new Float32Array(blockLength);
    const mono = this.mono.subarray(0, blockLength);
    mono.set(channels[0]);
    for (let c = 1; c < channels.length; c += 1) {
      const channel = channels[c];
      for (let i = 0; i < blockLength; i += 1) mono[i] += channel[i];
    }
    if (channels.length > 1) for (let i = 0; i < blockLength; i += 1) mono[i] /= channels.length;

    const samples = this.resampler.process(mono);
    for (let i = 0; i < samples.length; i += 1) {
      const clamped = Math.max(-1, Math.min(1, samples[i]));
      const value = Math.round(clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff);
      // Explicitly little-endian: the wire format is s16le whatever the platform.
      this.view.setInt16(this.filled * 2, value, true);
      this.filled += 1;
      const magnitude = Math.abs(clamped);
      if (magnitude > this.peak) this.peak = magnitude;
      if (this.filled === this.frameSamples) this.#emit();
    }
  }

  #emit() {
    if (this.filled === 0) return;
    const buffer =
      this.filled === this.frameSamples ? this.buffer : this.buffer.slice(0, this.filled * 2);
    this.port.postMessage({ type: "frame", pcm: buffer, peak: this.peak }, [buffer]);
    this.#newFrame();
  }

  #newFrame() {
    this.buffer = new ArrayBuffer(this.frameSamples * 2);
    this.view = new DataView(this.buffer);
    this.filled = 0;
    this.peak = 0;
  }
}

registerProcessor(PROCESSOR_NAME, PcmFrameProcessor);
