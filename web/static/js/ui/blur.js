// Background blur on the device (the join page's "Blur my background" switch and the session's button).
//
// The camera's picture goes through a person-segmentation model (MediaPipe Selfie Segmentation, an npm package
// that carries its model and WebAssembly runtime; make and the Dockerfile copy it into static/vendor/, so it is
// served from Alcove's own origin and nothing is fetched from anyone else) and is drawn onto a canvas: the person
// sharp, everything else strongly blurred. The canvas's captured track replaces the camera's track in the local
// stream and in every sender (lib/call.js replaceVideoTrack), so the SFrame sender transform only ever sees
// blurred frames: the unblurred picture never leaves the device. Until the first mask exists nothing is drawn
// (the canvas is blank, never the camera's picture), and the track is swapped in only after the first blurred
// frame.
//
// The schedule (what it costs): the output canvas has the camera's size (never upscaled) and is drawn at the
// camera's frame rate, each frame with the last mask. Segmenting is the expensive part, so it runs less often:
// at most SEG_MAX_PER_S (6) times a second, and never more than SEG_SHARE (a quarter) of the time, measured, so a
// slower device segments less often (lib/frame-meter.js segmentInterval). Six a second keeps the model's cost to
// about a sixth of a core where a mask takes 25 ms, and a mask at most about 170 ms older than the frame it cuts;
// the mask's edge is feathered over about 8 pixels, inward only (the softening never reaches outward), so when the
// person moves, the lag shows as a soft edge, not a sharp halo of the room. Each output frame is cheap: the
// camera's picture, and over it the background layer: the frame shrunk 8 times and blurred, stretched to half the
// frame's size, the person cut out with the feathered mask, stretched back (bilinear) over the full frame.
//
// Each segmentation's time and each output frame's drawing time go into moving averages (lib/frame-meter.js);
// when the device is too slow for either the blur turns itself off and says so ("slow"), and the plain camera is
// sent again.

import { FrameMeter, segmentInterval } from "../lib/frame-meter.js";
import { prefs } from "../lib/store.js";

const BASE = "/static/vendor/selfie_segmentation/";
/** The model's input width (it takes 256×256; a small copy keeps the upload cheap). */
const MODEL_WIDTH = 256;
/** The background is drawn from a copy this many times smaller, then blurred: strong and cheap. */
const SHRINK = 8;
/** ... by this many pixels of that copy (a Gaussian's standard deviation), ... */
const BLUR_PX = 2;
/** ... with its edge pixels repeated this many times around, so that the blur is as strong at the frame's edges. */
const PAD = 6;
/** The mask and the background layer cut out by it are this many times smaller than the frame. */
const LAYER = 2;
/** The mask's edge is softened by this many pixels of the layer (LAYER times as many in the frame). */
const FEATHER_PX = 4;
/** Average milliseconds to draw one output frame above which the device counts as too slow. */
const DRAW_LIMIT_MS = 100;

/** @typedef {"none"|"off"|"loading"|"on"|"slow"|"failed"} BlurState */

/** @type {Promise<any>|null} */
let runtime = null;

/**
 * Loads the segmentation runtime (a classic script that defines `SelfieSegmentation`) from this origin.
 * @returns {Promise<any>}
 */
function loadRuntime() {
  if (!runtime) {
    runtime = new Promise((resolve, reject) => {
      const g = /** @type {any} */ (window);
      if (g.SelfieSegmentation) { resolve(g.SelfieSegmentation); return; }
      const script = document.createElement("script");
      script.src = `${BASE}selfie_segmentation.js`;
      script.addEventListener("load", () => {
        if (g.SelfieSegmentation) resolve(g.SelfieSegmentation);
        else reject(new Error("the blur runtime did not load"));
      });
      script.addEventListener("error", () => reject(new Error("the blur runtime is missing")));
      document.head.append(script);
    });
    runtime.catch(() => { runtime = null; });
  }
  return runtime;
}

/** @type {Promise<any>|null} */
let segmenter = null;

/**
 * The page's one segmenter, made once and kept (the runtime does not come back from close() in the same page):
 * each processor sets its own result handler while it runs.
 * @returns {Promise<any>}
 */
function getSegmenter() {
  if (!segmenter) {
    segmenter = (async () => {
      const SelfieSegmentation = await loadRuntime();
      const seg = new SelfieSegmentation({ locateFile: (/** @type {string} */ f) => `${BASE}${f}` });
      // The general model (256×256): the landscape one is cheaper but takes a busy floor for part of the person.
      // The model runs on the CPU (the runtime's WebAssembly SIMD), not in WebGL: this small model costs a few tens
      // of milliseconds there, while WebGL on a device without a usable GPU (software rendering, as in many
      // virtual machines and on blocklisted GPUs) took ten times as long, and one path is the one tested.
      seg.setOptions({ modelSelection: 0, useCpuInference: true });
      await seg.initialize();
      return seg;
    })();
    segmenter.catch(() => { segmenter = null; });
  }
  return segmenter;
}

/**
 * Test hook: milliseconds added to each *measured* frame time, so a test can make the device look slow (or, on a
 * loaded test machine, keep a test about something else from tripping the fallback with a negative value). Only
 * a script the test harness injects before the page loads can set it (the CSP allows no inline script); it
 * changes nothing but the measurement, and a page that never sets it measures the real time.
 * @returns {number}
 */
function measuredExtraMs() {
  const v = /** @type {any} */ (globalThis).__alcoveBlurTestExtraMs;
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

/** @param {number} w @param {number} h */
function canvas(w, h) {
  const c = document.createElement("canvas");
  c.width = Math.max(1, Math.round(w));
  c.height = Math.max(1, Math.round(h));
  return c;
}

/** @param {HTMLCanvasElement} c */
function ctx2d(c) {
  return /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"));
}

/** One camera track in, one blurred track out. */
class BlurProcessor {
  /**
   * @param {MediaStreamTrack} camera
   * @param {() => void} onSlow
   */
  constructor(camera, onSlow) {
    this.camera = camera;
    this.onSlow = onSlow;
    const s = camera.getSettings();
    // The output has the camera's size (never upscaled) and frame rate.
    this.w = s.width || 640;
    this.h = s.height || 480;
    this.frameMs = 1000 / Math.min(30, Math.max(5, s.frameRate || 24));
    this.video = /** @type {HTMLVideoElement} */ (document.createElement("video"));
    this.video.muted = true;
    this.video.playsInline = true;
    this.small = canvas(MODEL_WIDTH, (MODEL_WIDTH * this.h) / this.w);
    this.tw = Math.max(1, Math.round(this.w / SHRINK));
    this.th = Math.max(1, Math.round(this.h / SHRINK));
    // The shrunk frame with its edge pixels repeated PAD times around (a blur fades to transparent past a
    // canvas's edges: the sharp frame under the layer would show through there), and its blurred copy.
    this.tiny = canvas(this.tw + 2 * PAD, this.th + 2 * PAD);
    this.blurred = canvas(this.tw + 2 * PAD, this.th + 2 * PAD);
    this.mask = canvas(this.w / LAYER, this.h / LAYER);
    this.soft = canvas(this.w / LAYER, this.h / LAYER);
    this.layer = canvas(this.w / LAYER, this.h / LAYER);
    this.out = canvas(this.w, this.h);
    this.cSmall = ctx2d(this.small);
    this.cTiny = ctx2d(this.tiny);
    this.cBlurred = ctx2d(this.blurred);
    this.cBlurred.globalCompositeOperation = "copy";
    this.cBlurred.filter = `blur(${BLUR_PX}px)`;
    this.cMask = ctx2d(this.mask);
    this.cSoft = ctx2d(this.soft);
    this.cLayer = ctx2d(this.layer);
    this.cOut = ctx2d(this.out);
    this.track = this.out.captureStream().getVideoTracks()[0];
    /** What decides "too slow": the measured segmentation times. */
    this.meter = new FrameMeter();
    /** ... and the measured time to draw one output frame. */
    this.drawMeter = new FrameMeter({ limitMs: DRAW_LIMIT_MS });
    /** The real segmentation and drawing times, for the page's diagnostics, the schedule and the benchmark. */
    this.real = new FrameMeter();
    this.realDraw = new FrameMeter();
    this.running = false;
    /** Output frames drawn so far, and segmentations. */
    this.frames = 0;
    this.segments = 0;
    /** Whether a mask exists yet (nothing is drawn before: the output stays blank, never the camera's picture). */
    this.hasMask = false;
    /** A segmentation is under way; the next may start at this time (performance.now()). */
    this.segmenting = false;
    this.nextSegAt = 0;
    /** @type {any} */
    this.seg = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.timer = null;
  }

  async start() {
    const seg = await getSegmenter();
    seg.onResults((/** @type {any} */ r) => this._mask(r.segmentationMask));
    this.seg = seg;
    this.video.srcObject = new MediaStream([this.camera]);
    await this.video.play();
    this.running = true;
    // A mask and one frame before the swap, so the receiver's first frame is already blurred. This first run also
    // sets the model's graph up (seconds, once): it is not measured.
    await this._segment(false);
    if (!this.running) return;
    this._draw();
    this._tick();
  }

  /** One output frame on the camera's clock; a segmentation now and then (at most SEG_MAX_PER_S, adaptive). */
  _tick() {
    if (!this.running) return;
    const t0 = performance.now();
    if (this.track.enabled && this.video.readyState >= 2) {
      if (!this.segmenting && t0 >= this.nextSegAt) {
        this._segment().catch(() => this._fail());
      }
      const ms = this._draw();
      if (this.drawMeter.add(ms + measuredExtraMs())) { this._fail(); return; }
    }
    // camera off: nothing is sent, nothing to blur (the timer keeps the camera's clock)
    this.timer = setTimeout(() => this._tick(), Math.max(0, this.frameMs - (performance.now() - t0)));
  }

  _fail() {
    if (!this.running) return;
    this.running = false;
    this.onSlow();
  }

  /**
   * Segments the camera's current picture (a small copy); the mask arrives in _mask (inside send).
   * @param {boolean} [measure] whether its time counts (for the schedule and the "too slow" rule)
   */
  async _segment(measure = true) {
    this.segmenting = true;
    const t0 = performance.now();
    try {
      this.cSmall.drawImage(this.video, 0, 0, this.small.width, this.small.height);
      await this.seg.send({ image: this.small });
    } finally {
      this.segmenting = false;
    }
    this.segments += 1;
    if (!measure) return;
    const ms = performance.now() - t0;
    this.real.add(ms);
    this.nextSegAt = t0 + segmentInterval(this.real.average);
    if (this.meter.add(Math.max(0, ms + measuredExtraMs()))) this._fail();
  }

  /** @param {CanvasImageSource} mask the person's confidence in its alpha channel */
  _mask(mask) {
    if (!this.running) return;
    const { width: mw, height: mh } = this.mask;
    // The model's mask, once, on a small canvas; its edge softened, then multiplied by the mask again, so the
    // softening only reaches inward: unsure pixels fade out and the room never shows as a sharp halo, even when
    // the person has moved a little since the mask was made.
    const raw = this.cMask;
    raw.globalCompositeOperation = "copy";
    raw.drawImage(mask, 0, 0, mw, mh);
    const soft = this.cSoft;
    soft.globalCompositeOperation = "copy";
    soft.filter = `blur(${FEATHER_PX}px)`;
    soft.drawImage(this.mask, 0, 0);
    soft.filter = "none";
    soft.globalCompositeOperation = "destination-in";
    soft.drawImage(this.mask, 0, 0);
    soft.drawImage(this.mask, 0, 0);
    this.hasMask = true;
  }

  /**
   * One output frame: the camera's picture, and over it the blurred background outside the last mask.
   * @returns {number} the time it took, in ms
   */
  _draw() {
    if (!this.hasMask) return 0;
    const t0 = performance.now();
    const { w, h } = this;
    const out = this.cOut;
    out.globalCompositeOperation = "copy";
    out.drawImage(this.video, 0, 0, w, h);
    // The background: the frame shrunk, blurred, on a small layer with the person cut out, stretched back over.
    const { tw, th, tiny: t } = this;
    const tiny = this.cTiny;
    tiny.drawImage(this.out, PAD, PAD, tw, th);
    tiny.drawImage(t, PAD, PAD, 1, th, 0, PAD, PAD, th); // left edge
    tiny.drawImage(t, PAD + tw - 1, PAD, 1, th, PAD + tw, PAD, PAD, th); // right edge
    tiny.drawImage(t, 0, PAD, t.width, 1, 0, 0, t.width, PAD); // top edge, corners included
    tiny.drawImage(t, 0, PAD + th - 1, t.width, 1, 0, PAD + th, t.width, PAD); // bottom edge
    this.cBlurred.drawImage(t, 0, 0);
    const layer = this.cLayer;
    layer.globalCompositeOperation = "copy";
    layer.drawImage(this.blurred, PAD, PAD, tw, th, 0, 0, this.layer.width, this.layer.height);
    layer.globalCompositeOperation = "destination-out";
    layer.drawImage(this.soft, 0, 0);
    out.globalCompositeOperation = "source-over";
    out.imageSmoothingEnabled = true;
    out.drawImage(this.layer, 0, 0, w, h);
    this.frames += 1;
    const ms = performance.now() - t0;
    this.realDraw.add(ms);
    return ms;
  }

  stop() {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.track.stop();
    this.video.srcObject = null;
    this.seg = null; // the page's segmenter stays for the next time
  }
}

/**
 * The blur of one camera stream: swaps the stream's video track for the blurred one and back. Events:
 * `state` {state: BlurState} whenever it changes.
 */
export class BackgroundBlur extends EventTarget {
  constructor() {
    super();
    /** @type {MediaStream|null} */
    this.stream = null;
    /** @type {MediaStreamTrack|null} the camera's own track */
    this.camera = null;
    /** @type {BlurProcessor|null} */
    this.proc = null;
    /** @type {BlurState} */
    this.state = "none";
    /** The moving average when the blur last stopped (why it stopped, if it was too slow). */
    this.lastAverage = 0;
    /** Called after the stream's video track changed (the session replaces it in its senders). */
    /** @type {((from: MediaStreamTrack, to: MediaStreamTrack) => Promise<void>)|null} */
    this.onSwap = null;
  }

  /** Whether this browser chose to blur (remembered in localStorage; off by default). */
  get wanted() { return prefs.blur; }

  /** The moving average of the frame time, in ms (while blurring; the last one measured after). */
  get frameMs() { return this.proc ? this.proc.meter.average : this.lastAverage; }

  /**
   * For the diagnostics, while blurring: the real moving averages (ms) of a segmentation (`realMs`) and of drawing
   * one output frame (`drawMs`), the output frames drawn and the segmentations made.
   */
  get stats() {
    const p = this.proc;
    return p ? { realMs: p.real.average, drawMs: p.realDraw.average, frames: p.frames, segments: p.segments }
      : { realMs: 0, drawMs: 0, frames: 0, segments: 0 };
  }

  /**
   * A new camera stream (the preview started, or a reload): blurs it at once if this browser wants it. Resolves
   * when the stream carries what will be sent (the blurred track, or the camera if the blur is off or failed).
   * @param {MediaStream|null} stream
   */
  async attach(stream) {
    this._drop();
    this.stream = stream;
    this.camera = stream ? stream.getVideoTracks()[0] || null : null;
    if (!this.camera) { this._set("none"); return; }
    if (this.wanted) await this._start();
    else this._set("off");
  }

  /**
   * The switch: turns the blur on or off and remembers the choice for this browser.
   * @param {boolean} on
   */
  async set(on) {
    prefs.blur = on;
    if (on) await this._start();
    else await this._stopBlur("off");
  }

  async _start() {
    if (!this.camera || this.proc) return;
    const camera = this.camera;
    const proc = new BlurProcessor(camera, () => { if (this.proc === proc) this._stopBlur("slow"); });
    this.proc = proc;
    this._set("loading");
    try {
      await proc.start();
    } catch {
      if (this.proc === proc) {
        this.proc = null;
        proc.stop();
        this._set("failed");
      }
      return;
    }
    if (this.proc !== proc || this.camera !== camera) { proc.stop(); return; } // turned off meanwhile
    await this._swap(camera, proc.track);
    this._set("on");
  }

  /** @param {BlurState} state */
  async _stopBlur(state) {
    const proc = this.proc;
    this.proc = null;
    if (proc) this.lastAverage = proc.meter.average;
    if (proc && this.camera && this.state === "on") await this._swap(proc.track, this.camera);
    if (proc) proc.stop();
    this._set(this.camera ? state : "none");
  }

  /** @param {MediaStreamTrack} from @param {MediaStreamTrack} to */
  async _swap(from, to) {
    const stream = this.stream;
    if (!stream) return;
    to.enabled = from.enabled;
    if (!stream.getTracks().includes(to)) stream.addTrack(to);
    stream.removeTrack(from);
    if (this.onSwap) await this.onSwap(from, to);
  }

  /** Forgets the current stream without touching its tracks (the page stops those). */
  _drop() {
    const proc = this.proc;
    this.proc = null;
    if (proc) proc.stop();
    this.stream = null;
    this.camera = null;
  }

  /** Stops the blur and the camera under it (the session ended or the preview was replaced). */
  stop() {
    const camera = this.camera;
    this._drop();
    if (camera) camera.stop();
    this._set("none");
  }

  /** @param {BlurState} state */
  _set(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }
}
