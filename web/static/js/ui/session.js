// Waiting room and session view (DOM). Drives lib/protocol.js (signaling) and lib/call.js / lib/sfu.js (media).

import { Signaling } from "../lib/protocol.js";
import { Call } from "../lib/call.js";
import { SfuCall } from "../lib/sfu.js";
import { t, tn, formatTime, formatTimeZoned, formatDuration } from "../lib/i18n.js";
import { store } from "../lib/store.js";
import { SessionState } from "../lib/session-state.js";
import { $, showView, announce, showError, showEnded, onLocaleChange } from "./dom.js";
import { TileGrid } from "./tiles.js";
import { QualityView } from "./quality-view.js";
import { WaitingNoteView } from "./waiting-note.js";
import { ShareView } from "./share-view.js";
import { ChatView } from "./chat-view.js";
import { SafetyCheck } from "./safety-check.js";
import { Manners } from "./manners.js";
import { Presence } from "./presence.js";
import { startE2ee, e2eeAdmitted, e2eeResumed, renderSafety, renderStatus, renderHealth, renderNames } from "./e2ee-view.js";

/**
 * @typedef {{token: string, role: string, room: any, name: string|null, stream: MediaStream|null,
 *            blur?: import("./blur.js").BackgroundBlur|null,
 *            check?: "direct"|"relay"|"blocked"|null}} SessionOptions
 */

export class Session {
  /** @param {SessionOptions} options */
  constructor(options) {
    this.token = options.token;
    this.name = options.name;
    this.stream = options.stream;
    /** The background blur of the camera (ui/blur.js): it swaps the stream's video track; we swap the senders'. */
    this.blur = options.blur || null;
    if (this.blur) this._wireBlur(this.blur);
    /** The join page's connection test result, sent to the therapist as a hint. */
    this.check = options.check || null;
    this.signaling = new Signaling({ token: this.token, resume: store.resume });
    /** What the server says about the session (wired first: the handlers below see it up to date). */
    this.state = new SessionState(this.signaling, { role: options.role, room: options.room });
    /** @type {Call|SfuCall|null} */
    this.call = null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.clockTimer = null;
    this.tiles = new TileGrid();
    this.audioOn = true;
    this.videoOn = true;
    /** @type {import("./console.js").Console|null} */
    this.console = null;
    /** End-to-end encryption (lib/e2ee-flow.js); null = none. @type {any} */
    this.e2ee = null;
    this._reconnecting = false;
    /** The banners' texts, re-rendered when the language changes. @type {Map<string, () => string>} */
    this._bannerText = new Map();
    /** @type {(() => void)|null} */
    this._renderControls = null;
    /** Connection quality and the audio fallback (ui/quality-view.js). */
    this.quality = new QualityView(this);
    /** The therapist's word to the waiting room (clients only; gone once admitted). */
    this.waitingNote = new WaitingNoteView();
    /** Screen sharing (ui/share-view.js). */
    this.shareView = new ShareView(this);
    /** The end-to-end encrypted chat (ui/chat-view.js): page memory only, cleared on every way out. */
    this.chat = new ChatView(this);
    /** The safety check at the start (clients; ui/safety-check.js). */
    this.safetyCheck = new SafetyCheck(this);
    /** Group manners and the safety answers, over end-to-end encrypted app messages (ui/manners.js). */
    this.manners = new Manners(this);
    /** "<name> joined / left / is back" notices. */
    this.presence = new Presence(this);
    /** The key epoch our own microphone/camera state was last sent under (a new epoch: sent again). */
    /** @type {number|null|undefined} */
    this._stateEpoch = undefined;
    this._wire();
    onLocaleChange(() => this._relabel());
  }

  /** Everything this view wrote, again in the new language. */
  _relabel() {
    if (this.status === "waiting") this._renderWaitingTexts();
    if (this._renderControls) this._renderControls();
    this.tiles.relabel(this.name);
    for (const [key, text] of this._bannerText) {
      const span = document.querySelector(`#banners .banner[data-key="${key}"] span`);
      if (span) span.textContent = text();
      const action = document.querySelector(`#banners .banner[data-key="${key}"] button[data-i18n]`);
      if (action instanceof HTMLElement && action.dataset.i18n) action.textContent = t(action.dataset.i18n);
    }
    if (this.status === "admitted") {
      this._tick();
      renderSafety(this);
      renderStatus(this);
      renderHealth(this);
      if (!this.isTherapist) document.title = `${t("session.heading")} – Alcove`;
      this.safetyCheck.relabel();
      this.manners.render();
    }
    if (this.console) this.console.relabel();
    this.shareView.relabel();
    this.chat.relabel();
  }

  get pid() { return this.state.pid; }
  get role() { return this.state.role; }
  get room() { return this.state.room; }
  get roster() { return this.state.roster; }
  get therapist() { return this.state.therapist; }
  get endsAt() { return this.state.endsAt; }
  /** "connecting" | "waiting" | "admitted" | "ended" */
  get status() { return this.state.status; }
  set status(value) { this.state.status = value; }

  get isTherapist() { return this.role === "therapist"; }

  async start() {
    if (this.isTherapist) {
      const mod = await import("./console.js");
      this.console = new mod.Console(this);
    }
    try {
      this.e2ee = await startE2ee(this);
      if (this.e2ee) this._wireApp(this.e2ee);
      const intro = this.e2ee && !this.isTherapist ? await this.e2ee.intro() : null;
      const welcome = await this.signaling.connect({ name: this.name, intro, check: this.check });
      return welcome;
    } catch (e) {
      return null; // the "closed" handler shows the page
    }
  }

  /**
   * The end-to-end encrypted app messages this view uses: each participant's own microphone/camera state, sent to
   * everyone when it changes and under each new key epoch, shown on their tile. Other kinds are left to others.
   * @param {any} flow
   */
  _wireApp(flow) {
    flow.addEventListener("app", (/** @type {Event} */ ev) => {
      const d = /** @type {CustomEvent} */ (ev).detail;
      const body = d && d.body;
      if (!body || body.k !== "state" || typeof body.mic !== "boolean" || typeof body.cam !== "boolean") return;
      if (d.private) return; // one's state is for everyone: a private "state" is not what a participant sends
      this.tiles.setState(String(d.from), { mic: body.mic, cam: body.cam });
    });
    flow.addEventListener("change", () => {
      this.presence.flush();
      if (flow.epoch !== null && flow.epoch !== this._stateEpoch) this._sendState();
    });
  }

  /** Our microphone/camera state to everyone in the session (end-to-end encrypted, signed). */
  _sendState() {
    const flow = this.e2ee;
    if (!flow || typeof flow.sendApp !== "function" || this.status !== "admitted") return;
    const mic = this.audioOn && !!(this.stream && this.stream.getAudioTracks().length);
    const cam = this.videoOn && !!(this.stream && this.stream.getVideoTracks().length);
    if (flow.sendApp({ k: "state", mic, cam })) this._stateEpoch = flow.epoch;
  }

  _wire() {
    const s = this.signaling;
    /** @param {string} type @param {(m: any) => void} fn */
    const on = (type, fn) => s.addEventListener(type, (ev) => fn(/** @type {CustomEvent} */ (ev).detail));
    on("welcome", (m) => this._onWelcome(m));
    on("waiting", (m) => this._onWaiting(m));
    on("admitted", (m) => { e2eeAdmitted(this, m); this._enterSession(); });
    this.state.addEventListener("roster", (ev) => {
      const d = /** @type {CustomEvent} */ (ev).detail;
      this._onRoster(d.participants);
    });
    on("therapist", (m) => this._onTherapist(m.status));
    on("time", (m) => this._onTime(m));
    on("warning", (m) => this._onWarning(m));
    on("session-ended", (m) => this._onEnded(m.reason || "time"));
    on("note", (m) => { if (!this.isTherapist) this.waitingNote.show(m); });
    on("declined", (m) => this._finish("declined", m.message || null, m.blocked === true));
    on("removed", (m) => this._finish("removed", m.message || null, m.blocked === true));
    on("reconnecting", () => this._onReconnecting());
    on("closed", (d) => this._onClosed(d));
  }

  /** @param {any} m */
  _onWelcome(m) {
    const wasReconnecting = this._reconnecting;
    this._reconnecting = false;
    if (store.name === null && this.name) store.name = this.name;
    this.removeBanner("reconnecting");
    if (wasReconnecting) this.banner("reconnected", () => t("session.reconnected"), "info", 4000);
    if (!this.isTherapist && m.status === "admitted") e2eeResumed(this);
    if (this.isTherapist || m.status === "admitted") {
      if (wasReconnecting && this.call) this.call.hold();  // the others may not have resumed yet
      this._enterSession();
      if (this.call) this.call.restartAll();
    } else {
      this._enterWaiting(null);
    }
  }

  /** @param {any} m */
  _onWaiting(m) {
    if (this.isTherapist) return;
    this._enterWaiting(m.reason);
  }

  /** @param {string|null|undefined} why the waiting message's reason */
  _enterWaiting(why) {
    const wasIn = this.status === "admitted";
    if (this.call) {
      // Sent back: every remote connection closes at once, so no media flows either way; a share stops.
      this.shareView.detach();
      this.call.stop();
      this.call = null;
      this.quality.stopMonitor();
      this.tiles.clearRemote();
    }
    this.chat.clear(); // sent back: the session's messages are gone from this page
    this.presence.reset();
    this._stateEpoch = undefined;
    this.status = "waiting";
    this._attachPreview("waiting-preview", "waiting-preview-off");
    const notice = $("waiting-notice");
    const reason = why || (wasIn ? "sent-back" : null);
    if (reason === "sent-back" || reason === "therapist-away") {
      notice.dataset.key = reason === "sent-back" ? "waiting.sent-back" : "waiting.therapist-away";
      notice.hidden = false;
    } else if (!wasIn && document.getElementById("view-waiting")?.hidden) {
      notice.hidden = true;
    }
    this._renderWaitingTexts();
    const leave = $("waiting-leave");
    leave.onclick = () => this.leave();
    document.body.dataset.state = "waiting";
    if (document.getElementById("view-waiting")?.hidden) showView("view-waiting");
  }

  /** The waiting room's texts: session time, notice, facts, page title. */
  _renderWaitingTexts() {
    const start = this.room && this.room.starts_at ? formatTime(this.room.starts_at) : "";
    const end = this.endsAt ? formatTime(this.endsAt) : "";
    $("waiting-time").textContent = start && end ? t("waiting.session-time", { start, end }) : "";
    const notice = $("waiting-notice");
    if (notice.dataset.key) notice.textContent = t(notice.dataset.key);
    document.title = `${t("waiting.heading")} – Alcove`;
    this.waitingNote.render();
    this._renderWaitingFacts();
  }

  _renderWaitingFacts() {
    const th = ["present", "reconnecting", "stepped-out"].includes(this.therapist) ? this.therapist : "absent";
    $("waiting-therapist").textContent = t(`waiting.therapist.${th}`);
    const pos = this.state.position;
    $("waiting-position").textContent = typeof pos === "number" && pos > 0
      ? (pos === 1 ? t("waiting.position.first") : tn("waiting.ahead", pos - 1))
      : "";
  }

  /**
   * @param {string} videoId
   * @param {string} offId
   */
  _attachPreview(videoId, offId) {
    const video = /** @type {HTMLVideoElement} */ ($(videoId));
    const hasVideo = !!(this.stream && this.stream.getVideoTracks().length) && this.videoOn;
    if (hasVideo && video.srcObject !== this.stream) {
      video.srcObject = this.stream;
      video.play().catch(() => {});
    }
    video.hidden = !hasVideo;
    $(offId).hidden = hasVideo;
  }

  _enterSession() {
    if (this.status === "ended") return;
    const first = this.status !== "admitted";
    this.status = "admitted";
    this.waitingNote.clear();
    // The hidden previews (join page, waiting room) must not keep rendering the camera: on some systems a
    // capture device shared by hidden consumers stalls for about a second just as the video senders start.
    for (const id of ["join-preview", "waiting-preview"]) {
      const v = /** @type {HTMLVideoElement|null} */ (document.getElementById(id));
      if (v && v.srcObject) { v.pause(); v.srcObject = null; }
    }
    if (!this.call && this.pid) {
      // Family and group rooms: one connection to the forwarding SFU (docs/sfu.md) instead of the mesh.
      const CallClass = this.room && this.room.topology === "sfu" ? SfuCall : Call;
      this.call = new CallClass(this.signaling, { pid: this.pid, localStream: this.stream, iceServers: [], e2ee: this.e2ee });
      /** @param {Event} ev */
      const detail = (ev) => /** @type {CustomEvent} */ (ev).detail;
      this.call.addEventListener("stream", (ev) => this.tiles.showStream(detail(ev).pid, detail(ev).stream));
      this.call.addEventListener("peer-closed", (ev) => this.tiles.remove(detail(ev).pid));
      this.call.addEventListener("levels", (ev) => this.tiles.setLevels(detail(ev).levels));
      this.call.addEventListener("video-paused", (ev) => this.quality.onSfuPaused(detail(ev).pid, detail(ev).paused));
      this.call.addEventListener("media-unreachable", () => this.banner("media", () => t("session.media-unreachable"), "warn", 0));
      if (this.roster.length) this.call.updateRoster(this.roster);
      this.shareView.attach(this.call);
      this.quality.start();
    }
    if (first) {
      $("waiting-notice").hidden = true;
      this._setupControls();
      this.tiles.ensureSelf(this.name, this.stream);
      this._updateSelf();
      this._startClock();
      $("console").hidden = !this.isTherapist;
      if (this.console) this.console.show();
      document.body.dataset.state = this.isTherapist ? "console" : "session";
      const alone = $("session-alone");
      alone.dataset.i18n = this.isTherapist ? "session.alone.therapist" : "session.alone";
      alone.textContent = t(alone.dataset.i18n);
      if (!this.isTherapist) document.title = `${t("session.heading")} – Alcove`;
      showView("view-session");
      // The focus moves to the (hidden) heading; the live region says what happened.
      if (!this.isTherapist) announce(t("session.admitted"));
    }
    this.chat.attach();
    renderSafety(this);
    renderStatus(this);
    this.manners.attach();
    if (!this.isTherapist) this.safetyCheck.start();
    if (first) this._sendState();
  }

  /** Turns this page's microphone on or off (its own sender: the button, or the therapist's mute). @param {boolean} on */
  setMicrophone(on) {
    this.audioOn = on;
    this.stream?.getAudioTracks().forEach((tr) => { tr.enabled = on; });
    if (this._renderControls) this._renderControls();
    this._updateSelf();
    this._sendState();
  }

  /** @param {import("./blur.js").BackgroundBlur} blur */
  _wireBlur(blur) {
    blur.onSwap = async (from, to) => {
      if (this.call) await this.call.replaceVideoTrack(from, to);
      this._updateSelf();
    };
    blur.addEventListener("state", () => {
      const state = blur.state;
      if (this._renderControls) this._renderControls();
      if (state === "slow") this.banner("blur", () => t("blur.slow"), "warn", 0);
      else if (state === "failed") this.banner("blur", () => t("blur.failed"), "warn", 0);
      else this.removeBanner("blur");
    });
  }

  _setupControls() {
    const mute = /** @type {HTMLButtonElement} */ ($("btn-mute"));
    const cam = /** @type {HTMLButtonElement} */ ($("btn-camera"));
    const blurBtn = /** @type {HTMLButtonElement} */ ($("btn-blur"));
    const hasAudio = !!(this.stream && this.stream.getAudioTracks().length);
    const hasVideo = !!(this.stream && this.stream.getVideoTracks().length);
    const render = this._renderControls = () => {
      mute.textContent = this.audioOn && hasAudio ? t("session.mute") : t("session.unmute");
      mute.setAttribute("aria-pressed", String(!(this.audioOn && hasAudio)));
      cam.textContent = this.videoOn && hasVideo ? t("session.camera.off") : t("session.camera.on");
      cam.setAttribute("aria-pressed", String(!(this.videoOn && hasVideo)));
      mute.disabled = !hasAudio;
      cam.disabled = !hasVideo;
      const state = this.blur ? this.blur.state : "none";
      blurBtn.hidden = state === "none";
      // Its full name, and a short one that phones show instead (only the one shown is in the accessible name).
      const long = document.createElement("span");
      long.className = "tool-long";
      long.textContent = t("blur.button");
      const short = document.createElement("span");
      short.className = "tool-short";
      short.textContent = t("blur.button.short");
      blurBtn.replaceChildren(long, short);
      blurBtn.setAttribute("aria-pressed", String(state === "on" || state === "loading"));
      blurBtn.disabled = state === "loading";
      document.body.dataset.blur = state;
    };
    mute.onclick = () => {
      this.setMicrophone(!this.audioOn);
      if (this.audioOn) { this.removeBanner("manners-mute"); this.removeBanner("manners-unmute"); }
    };
    cam.onclick = () => {
      this.videoOn = !this.videoOn;
      this.stream?.getVideoTracks().forEach((tr) => { tr.enabled = this.videoOn; });
      render();
      this._updateSelf();
      this._sendState();
    };
    blurBtn.onclick = () => {
      const blur = this.blur;
      if (!blur) return;
      blur.set(!(blur.state === "on" || blur.state === "loading")).catch(() => {});
    };
    const leave = $("btn-leave");
    if (this.isTherapist) {
      // The therapist steps out (the clients wait for them); "End session" in the console is the only ending.
      leave.dataset.i18n = "session.step-out";
      leave.textContent = t("session.step-out");
      const dialog = /** @type {HTMLDialogElement} */ ($("stepout-dialog"));
      leave.onclick = () => {
        dialog.returnValue = "";
        dialog.onclose = () => { if (dialog.returnValue === "confirm") this.stepOut(); else leave.focus(); };
        dialog.showModal();
        $("stepout-confirm").focus();
      };
    } else {
      leave.onclick = () => this.leave();
    }
    render();
  }

  /** @param {any[]} participants */
  _onRoster(participants) {
    this.tiles.setRoster(participants.filter((p) => p.pid !== this.pid));  // first: a held peer's stream finds its tile
    if (this.call) this.call.updateRoster(participants);
    if (this.status === "admitted") this.presence.onRoster(participants.filter((p) => p.pid !== this.pid));
    this.quality.onRoster(participants);
    renderNames(this);
    renderHealth(this);
    this.manners.onRoster(participants);
    this.shareView.onRoster(participants);
    if (this.console) this.console.onRoster(participants);
    this.chat.render();
  }

  _updateSelf() {
    this.tiles.updateSelf(this.stream, this.audioOn, this.videoOn);
  }

  // ---- time ---------------------------------------------------------------------------------------------

  _tick() {
    if (!this.endsAt) return;
    const left = this.endsAt.getTime() - Date.now();
    $("session-clock").textContent = left > 0 ? formatDuration(left) : t("session.clock.over");
    $("session-endtime").textContent = t("session.clock.end", { time: formatTime(this.endsAt) });
    // the warning follows the clock: its text changes in place when the minute left changes
    const warning = this._bannerText.get("warning");
    const span = document.querySelector('#banners .banner[data-key="warning"] span');
    if (warning && span && span.textContent !== warning()) span.textContent = warning();
  }

  _startClock() {
    this._tick();
    if (this.clockTimer) clearInterval(this.clockTimer);
    this.clockTimer = setInterval(() => this._tick(), 1000);
  }

  /** @param {any} m */
  _onTime(m) {
    if (m.extended_minutes && this.status === "admitted") {
      const n = m.extended_minutes;
      this.removeBanner("warning");
      delete document.body.dataset.warning;
      this.banner("time", () => tn("session.extended", n, { end: formatTime(this.endsAt || new Date()) }), "info", 10000);
    }
    this._startClock();
    if (this.console) this.console.onTime(m);
  }

  /** @param {any} m */
  _onWarning(m) {
    // At the last minute the therapist's banner itself offers more time: no looking for Extend in the console.
    const console = this.console;
    const action = console && m.minutes <= 1
      ? { key: "console.extend5", run: () => console.s.extend(5) } : undefined;
    this.banner("warning", () => this._warningText(m.minutes), "warn", 0, action);
    document.body.dataset.warning = String(m.minutes);
  }

  /**
   * "Ends at 13:04 CET — 5 minutes left": from the time actually left (the threshold only if the end is unknown).
   * @param {number} threshold minutes, from the server's warning
   */
  _warningText(threshold) {
    if (!this.endsAt) return tn("session.warning", threshold);
    const n = Math.max(1, Math.ceil((this.endsAt.getTime() - Date.now()) / 60000));
    return tn("session.warning.at", n, { end: formatTimeZoned(this.endsAt) });
  }

  /** @param {string} status */
  _onTherapist(status) {
    if (this.isTherapist) return;
    if (this.status === "waiting") {
      this._renderWaitingFacts();
      return;
    }
    if (status === "stepped-out") {
      this.banner("therapist", () => t("session.therapist.stepped-out"), "info", 0);
      document.body.dataset.therapist = status;
    } else if (status === "reconnecting" || status === "absent") {
      this.banner("therapist", () => t("session.therapist.reconnecting"), "warn", 0);
      document.body.dataset.therapist = status;
    } else {
      this.removeBanner("therapist");
      delete document.body.dataset.therapist;
      this.banner("therapist-back", () => t("session.therapist.back"), "info", 4000);
    }
  }

  /**
   * A calm banner in the session's status region (a live region: screen readers read it out), one per key.
   * @param {string} key
   * @param {() => string} text the text in the current language (called again when the language changes)
   * @param {"info"|"warn"} kind
   * @param {number} ttl ms, 0 = until replaced or dismissed
   * @param {{key: string, run: () => void}} [action] a button in the banner (its label a catalog key)
   * @returns {HTMLElement}
   */
  banner(key, text, kind, ttl, action) {
    this.removeBanner(key);
    const box = $("banners");
    const div = document.createElement("div");
    div.className = `banner ${kind}`;
    div.dataset.key = key;
    const span = document.createElement("span");
    span.textContent = text();
    div.append(span);
    if (action) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "btn secondary banner-action";
      btn.dataset.i18n = action.key;
      btn.textContent = t(action.key);
      btn.onclick = () => { btn.disabled = true; action.run(); };
      div.append(btn);
    }
    box.append(div);
    this._bannerText.set(key, text);
    if (ttl) setTimeout(() => { if (div.isConnected) { div.remove(); this._bannerText.delete(key); } }, ttl);
    if (this.status !== "admitted") announce(text());
    return div;
  }

  /** @param {string} key */
  removeBanner(key) {
    this._bannerText.delete(key);
    document.querySelectorAll(`#banners .banner[data-key="${key}"]`).forEach((el) => el.remove());
  }

  _onReconnecting() {
    if (this.status === "ended") return;
    if (!this._reconnecting) {
      this._reconnecting = true;
      if (this.status === "admitted") this.banner("reconnecting", () => t("session.reconnecting"), "warn", 0);
      if (this.console) this.console.onLocked(true);
    }
  }

  // ---- the end ------------------------------------------------------------------------------------------

  /** Stops everything at once (connections, E2EE, media, clock, console); the page shows whatever comes next. */
  teardown() {
    this.waitingNote.clear();
    this.status = "ended";
    this.shareView.detach();
    if (this.call) { this.call.stop(); this.call = null; }
    this.quality.stop();
    if (this.e2ee) { this.e2ee.stop(); }
    this.tiles.clearRemote();
    this.chat.clear();
    this.safetyCheck.stop();
    this.manners.stop();
    if (this.clockTimer) clearInterval(this.clockTimer);
    if (this.blur) this.blur.stop();
    this.stream?.getTracks().forEach((tr) => tr.stop());
    if (this.console) this.console.stop();
  }

  /** @param {string} reason */
  _onEnded(reason) {
    this.teardown();
    store.forgetSession();
    const r = ["time", "therapist", "admin"].includes(reason) ? reason : "time";
    const body = r === "therapist" && this.isTherapist ? "ended.body.therapist.self" : `ended.body.${r}`;
    showEnded("ended.title", body, { state: "ended" });
  }

  /**
   * @param {"declined"|"removed"|"replaced"} kind
   * @param {string|null} message
   * @param {boolean} [blocked] the therapist closed the link (declined, removed); otherwise it still opens
   */
  _finish(kind, message, blocked = false) {
    if (this.status === "ended") return;
    this.teardown();
    store.forgetSession();
    const body = kind === "replaced" ? "ended.replaced.body" : blocked ? "ended.link.blocked" : "ended.link.open";
    showEnded(`ended.${kind}.title`, body, { message, state: blocked ? `${kind}-blocked` : kind });
  }

  /** @param {{code: number, reason: string, error: any}} d */
  _onClosed(d) {
    if (this.status === "ended") return;
    const reason = d.reason;
    if (reason === "replaced") { this._finish("replaced", null); return; }
    if (reason === "declined" || reason === "removed") { this._finish(reason, null); return; }
    if (reason === "room-ended" || reason === "session-ended") { this._onEnded("time"); return; }
    if (reason === "closed") return; // our own close (leave)
    this.teardown();
    if (reason === "token-revoked" || reason === "token-invalid" || reason === "room-full") store.forgetSession();
    showError(reason, { opensAt: d.error && d.error.opensAt });
  }

  /** The therapist steps out: the clients stay for the grace and see that the therapist will be back. */
  stepOut() {
    this.signaling.leave();
    this.teardown();
    store.forgetSession();
    showEnded("ended.stepped-out.title", "ended.stepped-out.body", { rejoin: true, state: "stepped-out" });
  }

  /** Leaves on purpose: the seat is free at once. From the waiting room no session took place: the page says so. */
  leave() {
    const waiting = this.status === "waiting";
    this.signaling.leave();
    this.teardown();
    store.forgetSession();
    if (waiting) showEnded("ended.waiting.title", "ended.waiting.body", { rejoin: true, state: "left-waiting" });
    else showEnded("ended.title", "ended.body.left", { rejoin: true, state: "left" });
  }
}
