// How long the background blur takes (ui/blur.js: per segmentation, and per output frame drawn), as a moving
// average: when the device is too slow the blur is turned off, visibly, rather than sending a stuttering picture
// or a mask that lags far behind. No DOM.

/** Samples averaged over. */
export const BLUR_WINDOW = 15;
/** Average milliseconds per segmentation above which the device counts as too slow (a new mask would come only
 * every 800 ms at the blur's quarter share of the time). */
export const BLUR_LIMIT_MS = 200;

/** At most this many segmentations a second; the output keeps the camera's frame rate with the last mask. */
export const SEG_MAX_PER_S = 6;
/** ... and at most this share of the time spent segmenting (a slower device segments less often). */
export const SEG_SHARE = 0.25;

/**
 * The time from one segmentation's start to the next's, given the moving average of a segmentation's time.
 * @param {number} averageMs
 * @returns {number} ms
 */
export function segmentInterval(averageMs) {
  const ms = Number.isFinite(averageMs) && averageMs > 0 ? averageMs : 0;
  return Math.max(1000 / SEG_MAX_PER_S, ms / SEG_SHARE);
}

export class FrameMeter {
  /** @param {{window?: number, limitMs?: number}} [options] */
  constructor(options = {}) {
    this.window = options.window || BLUR_WINDOW;
    this.limitMs = options.limitMs || BLUR_LIMIT_MS;
    /** @type {number[]} */
    this.samples = [];
    this.sum = 0;
  }

  /**
   * One frame's time; true once a full window averages over the limit.
   * @param {number} ms
   * @returns {boolean}
   */
  add(ms) {
    const v = Number.isFinite(ms) && ms > 0 ? ms : 0;
    this.samples.push(v);
    this.sum += v;
    if (this.samples.length > this.window) this.sum -= /** @type {number} */ (this.samples.shift());
    return this.tooSlow();
  }

  /** The moving average in milliseconds (0 before the first frame). */
  get average() {
    return this.samples.length ? this.sum / this.samples.length : 0;
  }

  /** @returns {boolean} */
  tooSlow() {
    return this.samples.length >= this.window && this.average > this.limitMs;
  }

  reset() {
    this.samples = [];
    this.sum = 0;
  }
}
