// Entry point of /j/: reads the link, shows the join step (preview, devices, name), then hands over to the
// session (waiting room, session view, console). A reload with a stored resume credential goes straight back.

import { requestSession } from "../lib/protocol.js";
import { t, formatTime, formatDate, isToday } from "../lib/i18n.js";
import { store, takeToken } from "../lib/store.js";
import { Session } from "./session.js";
import { exposeDiagnostics } from "./diagnostics.js";
import { showView, showError, $, applyTranslations, onLocaleChange } from "./dom.js";
import { encodedTransformSupported } from "../lib/e2ee-flow.js";
import { e2eeWanted } from "./e2ee-view.js";
import { PrejoinCheck } from "./prejoin.js";
import { BackgroundBlur } from "./blur.js";

/** @typedef {"full"|"audio"|"none"} Mode */

/** @type {MediaStream|null} */
let stream = null;
/** @type {Mode} */
let mode = "full";
/** @type {AudioContext|null} */
let audioCtx = null;
let meterFrame = 0;
/** @type {any} */
let room = null;
/** The preview being started: Join waits for it, so the session never starts without the chosen media. */
/** @type {Promise<unknown>} */
let previewReady = Promise.resolve();
let role = "client";
/** The media problem shown, if any (its texts follow the language). @type {"denied"|"none"|null} */
let problem = null;
/** @type {PrejoinCheck|null} */
let check = null;
/** "Blur my background": the preview shows what will be sent; the session takes it over. */
const blur = new BackgroundBlur();

/** Capture size: small rooms get VGA, larger meshes a quarter of it (CPU and bandwidth grow with each peer). */
function videoConstraints() {
  const big = room && (room.type === "family" || room.type === "group");
  return big
    ? { width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { ideal: 15, max: 20 } }
    : { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 } };
}

/**
 * @param {Mode} m
 * @returns {Promise<MediaStream|null>}
 */
async function getMedia(m) {
  if (m === "none") return null;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const e = new Error("no mediaDevices");
    e.name = "NotFoundError";
    throw e;
  }
  const cam = store.camera;
  const mic = store.mic;
  /** @type {MediaStreamConstraints} */
  const constraints = {
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, ...(mic ? { deviceId: { ideal: mic } } : {}) },
    video: m === "full" ? { ...videoConstraints(), ...(cam ? { deviceId: { ideal: cam } } : {}) } : false,
  };
  return navigator.mediaDevices.getUserMedia(constraints);
}

function stopStream() {
  blur.stop();
  if (stream) stream.getTracks().forEach((tr) => tr.stop());
  stream = null;
}

/** @param {MediaStream|null} s */
function startMeter(s) {
  cancelAnimationFrame(meterFrame);
  const bar = $("join-level");
  const meter = /** @type {HTMLElement} */ (bar.parentElement);
  if (!s || !s.getAudioTracks().length) {
    bar.style.transform = "scaleX(0)";
    meter.setAttribute("aria-valuenow", "0");
    return;
  }
  try {
    if (!audioCtx) audioCtx = new AudioContext();
    if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
    const source = audioCtx.createMediaStreamSource(s);
    const analyser = audioCtx.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const data = new Uint8Array(analyser.fftSize);
    let lastAria = 0;
    const step = () => {
      analyser.getByteTimeDomainData(data);
      let sum = 0;
      for (const v of data) { const x = (v - 128) / 128; sum += x * x; }
      const rms = Math.sqrt(sum / data.length);
      const level = Math.min(1, rms * 4);
      bar.style.transform = `scaleX(${level.toFixed(3)})`;
      const pct = Math.round(level * 100);
      if (Math.abs(pct - lastAria) >= 10) { meter.setAttribute("aria-valuenow", String(pct)); lastAria = pct; }
      meterFrame = requestAnimationFrame(step);
    };
    step();
  } catch { /* no WebAudio: no meter */ }
}

/** Fills the camera and microphone lists (labels are available once permission was given). */
async function fillDevices() {
  const camSel = /** @type {HTMLSelectElement} */ ($("join-camera"));
  const micSel = /** @type {HTMLSelectElement} */ ($("join-mic"));
  /** @type {MediaDeviceInfo[]} */
  let devices;
  try { devices = await navigator.mediaDevices.enumerateDevices(); } catch { devices = []; }
  const current = {
    video: stream?.getVideoTracks()[0]?.getSettings().deviceId || store.camera,
    audio: stream?.getAudioTracks()[0]?.getSettings().deviceId || store.mic,
  };
  /**
   * @param {HTMLSelectElement} sel
   * @param {MediaDeviceKind} kind
   * @param {string|null|undefined} selected
   * @param {boolean} enabled
   */
  const fill = (sel, kind, selected, enabled) => {
    sel.replaceChildren();
    const list = devices.filter((d) => d.kind === kind && d.deviceId);
    list.forEach((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || t(kind === "videoinput" ? "join.camera.numbered" : "join.microphone.numbered", { n: i + 1 });
      if (d.deviceId === selected) o.selected = true;
      sel.append(o);
    });
    const none = document.createElement("option");
    none.value = "";
    none.textContent = t("join.device.none");
    if (!enabled || !list.length) none.selected = true;
    sel.append(none);
    sel.disabled = !list.length;
  };
  fill(camSel, "videoinput", current.video, mode === "full");
  fill(micSel, "audioinput", current.audio, mode !== "none");
  // Without access there is nothing to choose from: hide the lists rather than show dead ones.
  $("join-form").classList.toggle("no-devices", !stream && document.body.dataset.state === "join-denied");
}

/** @param {Mode} m */
function showPreview(m) {
  const video = /** @type {HTMLVideoElement} */ ($("join-preview"));
  const hasVideo = !!(stream && stream.getVideoTracks().length);
  video.srcObject = hasVideo ? stream : null;
  if (hasVideo) video.play().catch(() => {});
  video.hidden = !hasVideo;
  $("join-preview-off").hidden = hasVideo;
  startMeter(stream);
  document.body.dataset.media = m;
  $("media-mode").hidden = m === "full";
  renderMode();
}

/** The media choice's line (its visibility is set by whoever changes the choice). */
function renderMode() {
  const m = document.body.dataset.media || "full";
  $("media-mode").textContent = m === "audio" ? t("join.media.mode.audio") : m === "none" ? t("join.media.mode.none") : "";
}

/** The blur switch and its line under the preview (hidden without a camera). */
function renderBlur() {
  const state = blur.state;
  $("blur-row").hidden = state === "none";
  const box = /** @type {HTMLInputElement} */ ($("join-blur"));
  box.checked = state === "on" || state === "loading";
  box.disabled = state === "loading";
  $("join-blur-hint").textContent = t(role === "therapist" ? "blur.hint.therapist" : "blur.hint.client");
  const status = $("join-blur-status");
  status.dataset.state = state;
  status.textContent = state === "loading" ? t("blur.loading") : state === "slow" ? t("blur.slow")
    : state === "failed" ? t("blur.failed") : "";
  document.body.dataset.blur = state;
}

/** @param {"denied"|"none"} kind */
function showMediaProblem(kind) {
  problem = kind;
  $("media-problem-title").textContent = t(`join.media.${kind}.title`);
  $("media-problem-body").textContent = t(`join.media.${kind}.body`);
  $("media-problem").hidden = false;
  document.body.dataset.state = kind === "denied" ? "join-denied" : "join-nodevice";
}

/** @param {Mode} wanted */
async function startPreview(wanted) {
  stopStream();
  $("media-problem").hidden = true;
  try {
    stream = await getMedia(wanted);
    mode = wanted;
  } catch (e) {
    const name = /** @type {Error} */ (e).name;
    stream = null;
    if (wanted === "full") {
      // A microphone alone may still work (no camera, or the camera is busy).
      try {
        stream = await getMedia("audio");
        mode = "audio";
      } catch {
        stream = null;
      }
    }
    if (!stream) {
      mode = wanted === "full" ? "full" : wanted;
      showMediaProblem(name === "NotAllowedError" || name === "SecurityError" ? "denied" : "none");
      showPreview("none");
      $("media-mode").hidden = true; // the notice above already says it
      await fillDevices();
      return false;
    }
  }
  if (document.body.dataset.state !== "join") document.body.dataset.state = "join";
  showPreview(mode);
  await fillDevices();
  // Joining waits for this too: with the blur on, the session never starts on the unblurred camera.
  await blur.attach(stream);
  return true;
}

function renderWhen() {
  const start = room.starts_at ? new Date(room.starts_at) : null;
  const end = room.ends_at ? new Date(room.ends_at) : null;
  if (!start || !end) { $("join-when").textContent = ""; return; }
  const params = {
    host: room.host || t("join.host.default"),
    start: formatTime(start),
    end: formatTime(end),
    date: formatDate(start),
    type: t(`type.${room.type}`),
  };
  const key = role === "therapist"
    ? (isToday(start) ? "join.when.therapist" : "join.when.therapist.other")
    : (isToday(start) ? "join.when.today" : "join.when.other");
  $("join-when").textContent = t(key, params);
  // the words for the role: who sees the name
  const hint = $("join-name-hint");
  hint.dataset.i18n = role === "therapist" ? "join.name.hint.therapist" : "join.name.hint";
  hint.textContent = t(hint.dataset.i18n);
}

/**
 * @param {string} token
 * @param {string|null} name
 */
async function enterSession(token, name) {
  cancelAnimationFrame(meterFrame);
  if (audioCtx) { audioCtx.close().catch(() => {}); audioCtx = null; }
  store.mode = mode;
  const session = new Session({ token, role, room, name, stream, blur, check: check ? check.result : null });
  exposeDiagnostics(session);
  await session.start();
}

/** The join page's texts again, in the language just chosen. */
function relabelJoin() {
  if (document.getElementById("view-join")?.hidden) return;
  renderWhen();
  document.title = `${t("join.heading")} – Alcove`;
  if (problem && !$("media-problem").hidden) showMediaProblem(problem);
  renderMode();
  renderBlur();
  fillDevices();
  const err = $("join-name-error");
  if (!err.hidden) err.textContent = t("join.name.required");
  if ($("join-status").textContent) $("join-status").textContent = t("join.connecting");
}

/** @param {string} token */
function showJoin(token) {
  onLocaleChange(relabelJoin);
  const nameInput = /** @type {HTMLInputElement} */ ($("join-name"));
  nameInput.value = store.name || (role === "therapist" ? room.host || "" : "");
  nameInput.required = role !== "therapist";
  renderWhen();
  document.body.dataset.state = "join";
  document.title = `${t("join.heading")} – Alcove`;
  showView("view-join", false);
  // End-to-end encryption needs encoded transforms: say so here, before anyone waits in vain.
  if (!encodedTransformSupported()) {
    $("e2ee-unsupported").hidden = false;
    document.body.dataset.e2ee = "unsupported";
    if (e2eeWanted(role === "therapist" ? "therapist" : "client", room && room.id)) {
      /** @type {HTMLButtonElement} */ ($("join-submit")).disabled = true;
    }
  }

  blur.addEventListener("state", () => { if (!$("view-join").hidden) renderBlur(); });
  renderBlur();
  $("join-blur").onchange = (ev) => {
    const on = /** @type {HTMLInputElement} */ (ev.target).checked;
    const ready = previewReady;
    previewReady = ready.then(() => blur.set(on));
  };
  $("media-audio-only").onclick = () => { previewReady = startPreview("audio"); };
  $("media-neither").onclick = async () => {
    stopStream();
    mode = "none";
    $("media-problem").hidden = true;
    showPreview("none");
    await fillDevices();
  };
  $("media-retry").onclick = () => { previewReady = startPreview("full"); };
  // The "will this work?" check (clients only: the therapist's console has its own view of the clients).
  if (role !== "therapist") {
    check = new PrejoinCheck({
      token,
      getStream: () => stream,
      audioOnly: store.mode === "audio",
      onAudioOnly: (on) => { previewReady = startPreview(on ? "audio" : "full"); },
    });
  }
  $("join-camera").onchange = (ev) => {
    const v = /** @type {HTMLSelectElement} */ (ev.target).value;
    store.camera = v || null;
    previewReady = startPreview(v ? "full" : (stream && stream.getAudioTracks().length ? "audio" : "none"));
  };
  $("join-mic").onchange = (ev) => {
    const v = /** @type {HTMLSelectElement} */ (ev.target).value;
    store.mic = v || null;
    if (!v && stream) {
      stream.getAudioTracks().forEach((tr) => { tr.stop(); stream?.removeTrack(tr); });
      startMeter(null);
    } else {
      previewReady = startPreview(mode === "none" ? "audio" : mode);
    }
  };

  const form = /** @type {HTMLFormElement} */ ($("join-form"));
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    if (/** @type {HTMLButtonElement} */ ($("join-submit")).disabled) return;
    // Control and bidirectional-override characters are dropped from the name.
    // eslint-disable-next-line no-control-regex
    const name = nameInput.value.replace(/[\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069]/g, "").trim();
    const err = $("join-name-error");
    if (role !== "therapist" && !name) {
      err.textContent = t("join.name.required");
      err.hidden = false;
      nameInput.setAttribute("aria-invalid", "true");
      nameInput.focus();
      return;
    }
    err.hidden = true;
    nameInput.removeAttribute("aria-invalid");
    const submit = /** @type {HTMLButtonElement} */ ($("join-submit"));
    submit.disabled = true;
    $("join-status").textContent = t("join.connecting");
    store.name = name || null;
    await previewReady;
    // The mode the user ended up with: a camera the user turned off by choosing "None" is not sent.
    if (mode !== "none" && !stream) mode = "none";
    if (stream && !stream.getVideoTracks().length && mode === "full") mode = "audio";
    await enterSession(token, name || null);
    submit.disabled = false;
    $("join-status").textContent = "";
  };
  previewReady = startPreview(/** @type {Mode} */ (store.mode === "none" ? "none" : store.mode === "audio" ? "audio" : "full"));
  // Focus the name field: the first thing to do on this page.
  if (!nameInput.value) nameInput.focus();
}

/**
 * The call controls' height in a CSS variable (--toolbar-height): the page keeps what the keyboard focuses clear of
 * them (scroll-padding-bottom) however many rows they wrap onto.
 */
function followToolbarHeight() {
  const bar = document.querySelector(".toolbar");
  if (!bar || typeof ResizeObserver !== "function") return;
  new ResizeObserver(() => {
    const height = bar.getBoundingClientRect().height;
    if (height > 0) document.documentElement.style.setProperty("--toolbar-height", `${Math.ceil(height)}px`);
  }).observe(bar);
}

async function main() {
  applyTranslations();
  followToolbarHeight();
  const { token, malformed } = takeToken();
  if (malformed || !token) {
    showError(malformed ? "token-invalid" : "missing");
    return;
  }
  await begin(token);
}

/**
 * Exchanges the token and shows the join page, or the page that says why not. Too early, that page counts down
 * and comes back here at the opening (again a few seconds later if this device's clock ran ahead of the server's).
 * @param {string} token @param {number} [attempt]
 */
async function begin(token, attempt = 0) {
  let grant;
  try {
    grant = await requestSession(token);
  } catch (e) {
    const err = /** @type {import("../lib/protocol.js").SessionError} */ (e);
    if (err.code === "device-in-use" && store.resume) {
      // A reload: the old page's socket may not be closed yet. The signaling client retries with the resume.
      grant = null;
    } else {
      if (err.final) store.forgetSession();
      const onOpen = () => { setTimeout(() => { begin(token, attempt + 1); }, Math.min(30_000, 5_000 * attempt)); };
      showError(err.code || "generic", { opensAt: err.opensAt, role: err.role, onOpen });
      return;
    }
  }
  if (grant) {
    room = grant.room;
    role = grant.role;
  } else {
    role = "client";
    room = {};
  }
  if (store.resume) {
    // A reload inside a session: back where we were, with the same media choice.
    mode = /** @type {Mode} */ (store.mode);
    try {
      stream = await getMedia(mode);
    } catch {
      stream = null;
      mode = "none";
    }
    await blur.attach(stream);
    await enterSession(token, store.name);
    return;
  }
  showJoin(token);
}

// A new link opened in this tab (same page, new fragment): start afresh with it.
window.addEventListener("hashchange", () => { if (location.hash.length > 1) location.reload(); });

main();
