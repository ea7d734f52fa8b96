/**
 * Band-limited sample-rate conversion (windowed-sinc interpolation) for the capture worklet.
 *
 * Pure code with no browser dependencies, so the page, the AudioWorklet and the tests can all
 * import it. Each output sample is the input convolved with a Kaiser-windowed sinc low-pass whose
 * cutoff sits below the lower of the two Nyquist frequencies, which is what keeps 8-22 kHz content
 * in a 44.1/48 kHz microphone signal from folding back into the 0-8 kHz speech band at 16 kHz.
 */

/** Filter table resolution: coefficients stored per input sample of filter offset. */
const TABLE_STEPS_PER_SAMPLE = 256;

/** Zeroth-order modified Bessel function of the first kind, for the Kaiser window. */
function besselI0(x) {
  const quarterSquare = (x * x) / 4;
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 64; k += 1) {
    term *= quarterSquare / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

export class Resampler {
  /**
   * @param {object} options
   * @param {number} options.inputRate - samples per second coming in (the AudioContext's rate)
   * @param {number} options.outputRate - samples per second going out (16000 for the gateway)
   * @param {number} [options.zeroCrossings] - sinc lobes kept on each side: longer is sharper
   * @param {number} [options.rolloff] - cutoff as a fraction of the lower Nyquist frequency
   * @param {number} [options.kaiserBeta] - window shape: 8 gives roughly 80 dB stop-band rejection
   */
  constructor({ inputRate, outputRate, zeroCrossings = 16, rolloff = 0.9, kaiserBeta = 8 }) {
    for (const [name, value] of Object.entries({ inputRate, outputRate, zeroCrossings })) {
      if (!Number.isFinite(value) || value <= 0) {
        throw new RangeError(`Resampler: ${name} must be a positive number, got ${value}`);
      }
    }
    if (!(rolloff > 0 && rolloff <= 1)) {
      throw new RangeError(`Resampler: rolloff must be in (0, 1], got ${rolloff}`);
    }
    this.inputRate = inputRate;
    this.outputRate = outputRate;
    this.passthrough = inputRate === outputRate;
    /** Input samples advanced per output sample. */
    this.step = inputRate / outputRate;
    /** Cutoff in cycles per input sample. */
    const cutoff = 0.5 * Math.min(1, outputRate / inputRate) * rolloff;
    /** Half the filter's length, in input samples. */
    this.halfWidth = zeroCrossings / (2 * cutoff);

    const tableLength = Math.ceil(this.halfWidth * TABLE_STEPS_PER_SAMPLE) + 2;
    this.table = new Float32Array(tableLength);
    const windowNorm = besselI0(kaiserBeta);
    for (let i = 0; i < tableLength; i += 1) {
      const offset = i / TABLE_STEPS_PER_SAMPLE;
      if (offset >= this.halfWidth) break;
      const x = 2 * cutoff * offset;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const r = offset / this.halfWidth;
      const window = besselI0(kaiserBeta * Math.sqrt(1 - r * r)) / windowNorm;
      // The 2*cutoff factor gives the low-pass unit gain at DC.
      this.table[i] = 2 * cutoff * sinc * window;
    }

    // History of input samples; zeros before the first sample so output starts at input time 0.
    const lead = Math.ceil(this.halfWidth);
    this.history = new Float32Array(lead + 4096);
    this.length = lead;
    /** Time of the next output sample, in input samples from history[0]. */
    this.time = lead;
    this.output = new Float32Array(0);
  }

  /**
   * Converts the next block of input; returns the output samples it completes.
   * The returned array is reused by the next call: copy what you keep.
   * @param {Float32Array} input
   * @returns {Float32Array}
   */
  process(input) {
    if (this.passthrough) return input;
    this.#append(input);

    const maxOut = Math.ceil((this.length - this.time) / this.step) + 1;
    if (this.output.length < maxOut) this.output = new Float32Array(maxOut * 2);

    const { history, table, halfWidth, step } = this;
    let produced = 0;
    let time = this.time;
    // An output sample needs every input sample within halfWidth of its time.
    while (time + halfWidth < this.length - 1) {
      const first = Math.ceil(time - halfWidth);
      const last = Math.floor(time + halfWidth);
      let acc = 0;
      for (let i = first; i <= last; i += 1) {
        const position = Math.abs(time - i) * TABLE_STEPS_PER_SAMPLE;
        const index = position | 0;
        const frac = position - index;
        acc += history[i] * (table[index] + frac * (table[index + 1] - table[index]));
      }
      this.output[produced] = acc;
      produced += 1;
      time += step;
    }

    // Forget input no future output sample can reach; rebasing keeps `time` small and precise.
    const keepFrom = Math.max(0, Math.floor(time - halfWidth) - 1);
    history.copyWithin(0, keepFrom, this.length);
    this.length -= keepFrom;
    this.time = time - keepFrom;
    return this.output.subarray(0, produced);
  }

  #append(input) {
    const needed = this.length + input.length;
    if (needed > this.history.length) {
      const grown = new Float32Array(needed * 2);
      grown.set(this.history.subarray(0, this.length));
      this.history = grown;
    }
    this.history.set(input, this.length);
    this.length = needed;
  }
}
