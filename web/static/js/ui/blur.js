// Background blur on the device (the join page's "Blur my background" switch and the session's button).
//
// The camera's picture goes through a person-segmentation model (MediaPipe Selfie Segmentation, an npm package
// that carries its model and WebAssembly runtime; make and the Dockerfile copy it into static/vendor/, so it is
// served from Alcove's own origin and nothing is fetched from anyone else) and is drawn onto a canvas: the person
// sharp, everything else strongly blurred. The canvas's captured track replaces the camera's track in the local
// stream and in every sender (lib/call.js replaceVideoTrack), so the SFrame sender transform only ever sees
// blurred frames: the unblurred picture never leaves the device. Until the first blurred frame the canvas is
// blank, never the camera's picture.
//
// Each frame's time (copy, segment, draw) goes into a moving average (lib/frame-meter.js); when the device is
// too slow the blur turns itself off and says so ("slow"), and the plain camera is sent again.

import { FrameMeter } from "../lib/frame-meter.js";
import { prefs } from "../lib/store.js";

const BASE = "/static/vendor/selfie_segmentation/";
/** The model's input width (it takes 256×256; a small copy keeps the upload cheap). */
const MODEL_WIDTH = 256;
/** The background is drawn from a copy this many times smaller, then blurred: strong and cheap. */
const SHRINK = 8;

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
      seg.setOptions({ modelSelection: 0 });
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

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
    this.w = s.width || 640;
    this.h = s.height || 480;
    this.frameMs = 1000 / Math.min(30, Math.max(5, s.frameRate || 24));
    this.video = /** @type {HTMLVideoElement} */ (document.createElement("video"));
    this.video.muted = true;
    this.video.playsInline = true;
    this.frame = canvas(this.w, this.h);
    this.small = canvas(MODEL_WIDTH, (MODEL_WIDTH * this.h) / this.w);
    this.tiny = canvas(this.w / SHRINK, this.h / SHRINK);
    this.person = canvas(this.w, this.h);
    this.out = canvas(this.w, this.h);
    this.track = this.out.captureStream().getVideoTracks()[0];
    /** What decides "too slow" (the measured frame times). */
    this.meter = new FrameMeter();
    /** The real frame times, for the page's diagnostics and the benchmark (the test hook never touches it). */
    this.real = new FrameMeter();
    this.running = false;
    /** The last frame's measured time in ms. */
    this.lastMs = 0;
    /** Frames blurred so far. */
    this.frames = 0;
    /** @type {any} */
    this.seg = null;
  }

  async start() {
    const seg = await getSegmenter();
    seg.onResults((/** @type {any} */ r) => this._draw(r.segmentationMask));
    this.seg = seg;
    this.video.srcObject = new MediaStream([this.camera]);
    await this.video.play();
    this.running = true;
    // One frame before the swap, so the receiver's first frame is already blurred.
    await this._step();
    this._loop();
  }

  async _loop() {
    while (this.running) {
      const t0 = performance.now();
      if (!this.track.enabled || this.video.readyState < 2) {
        await sleep(100); // camera off: nothing is sent, nothing to blur
        continue;
      }
      try {
        await this._step();
      } catch {
        this.running = false;
        this.onSlow();
        return;
      }
      if (this.meter.add(this.lastMs)) {
        this.running = false;
        this.onSlow();
        return;
      }
      await sleep(Math.max(0, this.frameMs - (performance.now() - t0)));
    }
  }

  /** One frame: copy the camera's picture, segment it, draw (onResults runs inside send). */
  async _step() {
    const t0 = performance.now();
    ctx2d(this.frame).drawImage(this.video, 0, 0, this.w, this.h);
    ctx2d(this.small).drawImage(this.frame, 0, 0, this.small.width, this.small.height);
    await this.seg.send({ image: this.small });
    const ms = performance.now() - t0;
    this.real.add(ms);
    this.lastMs = Math.max(0, ms + measuredExtraMs());
    this.frames += 1;
  }

  /** @param {CanvasImageSource} mask the person's confidence in its alpha channel */
  _draw(mask) {
    if (!this.running) return;
    const { w, h } = this;
    // The background: the frame shrunk, blurred, stretched back.
    const tiny = ctx2d(this.tiny);
    tiny.filter = "blur(2px)";
    tiny.drawImage(this.frame, 0, 0, this.tiny.width, this.tiny.height);
    const out = ctx2d(this.out);
    out.globalCompositeOperation = "copy";
    out.imageSmoothingEnabled = true;
    out.drawImage(this.tiny, 0, 0, w, h);
    // The person: the sharp frame where the mask is. The edge is softened a little, then multiplied by the mask
    // once more, so the softening never reaches outward and unsure pixels fade out (no sharp halo of the room).
    const person = ctx2d(this.person);
    person.globalCompositeOperation = "copy";
    person.filter = "blur(2px)";
    person.drawImage(mask, 0, 0, w, h);
    person.filter = "none";
    person.globalCompositeOperation = "destination-in";
    person.drawImage(mask, 0, 0, w, h);
    person.globalCompositeOperation = "source-in";
    person.drawImage(this.frame, 0, 0, w, h);
    out.globalCompositeOperation = "source-over";
    out.drawImage(this.person, 0, 0);
  }

  stop() {
    this.running = false;
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

  /** For the diagnostics: the real moving average (ms) and the frames blurred, while blurring. */
  get stats() {
    return this.proc ? { realMs: this.proc.real.average, frames: this.proc.frames } : { realMs: 0, frames: 0 };
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
