// Waiting room and session view (DOM). Drives lib/protocol.js (signaling) and lib/call.js / lib/sfu.js (media).

import { Signaling } from "../lib/protocol.js";
import { Call } from "../lib/call.js";
import { SfuCall } from "../lib/sfu.js";
import { t, formatTime, formatDuration } from "../lib/i18n.js";
import { store } from "../lib/store.js";
import { $, showView, announce, showError, showEnded } from "./dom.js";
import { startE2ee, e2eeAdmitted, e2eeResumed, renderSafety, renderStatus, renderHealth } from "./e2ee-view.js";

/**
 * Plays a video element; when the browser refuses sound without a user gesture, it plays muted and offers a
 * "Turn on sound" button.
 * @param {HTMLVideoElement} video
 */
function playWithSound(video) {
  video.play().catch(() => {
    video.muted = true;
    video.play().catch(() => {});
    const b = $("btn-sound");
    b.hidden = false;
    b.onclick = () => {
      document.querySelectorAll("video[data-remote]").forEach((v) => {
        const el = /** @type {HTMLVideoElement} */ (v);
        el.muted = false;
        el.play().catch(() => {});
      });
      b.hidden = true;
    };
  });
}

/**
 * @typedef {{token: string, role: string, room: any, name: string|null, stream: MediaStream|null,
 *            mode: string}} SessionOptions
 */

export class Session extends EventTarget {
  /** @param {SessionOptions} options */
  constructor(options) {
    super();
    this.token = options.token;
    this.role = options.role;
    this.room = options.room;
    this.name = options.name;
    this.stream = options.stream;
    this.mode = options.mode;
    this.signaling = new Signaling({ token: this.token, resume: store.resume });
    /** @type {Call|null} */
    this.call = null;
    /** @type {string|null} */
    this.pid = null;
    /** "connecting" | "waiting" | "admitted" | "ended" */
    this.status = "connecting";
    /** @type {any[]} */
    this.roster = [];
    this.therapist = "absent";
    this.endsAt = this.room && this.room.ends_at ? new Date(this.room.ends_at) : null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.clockTimer = null;
    /** @type {Map<string, HTMLElement>} */
    this.tiles = new Map();
    this.audioOn = true;
    this.videoOn = true;
    /** @type {import("./console.js").Console|null} */
    this.console = null;
    /** End-to-end encryption (lib/e2ee-flow.js); null = none. @type {any} */
    this.e2ee = null;
    this._wire();
    // Test and diagnostics hook: only numbers, no media, no names.
    /** @type {any} */ (window).alcove = {
      stats: async () => (this.call ? this.call.stats() : {}),
      status: () => this.status,
      pid: () => this.pid,
      connected: () => this.signaling.connected,
      peers: () => (this.call ? [...this.call.peers] : []),
      // E2EE diagnostics: the safety code, epoch and worker counters (no keys).
      e2ee: () => {
        const e = this.e2ee;
        if (!e) return null;
        const sasOf = e.sasOf ? Object.fromEntries([...e.sasOf].map(([p, v]) => [p, v.indices.join(",") + "|" + v.decimal.join(",")])) : null;
        return { epoch: e.epoch, sas: e.sas ? e.sas.indices.join(",") + "|" + e.sas.decimal.join(",") : null, sasOf,
          peers: e.peerStats, failures: e.failures.map((f) => f.pid), health: Object.fromEntries(this.roster.map((p) => [p.pid, e.health(p.pid)])) };
      },
    };
  }

  get isTherapist() { return this.role === "therapist"; }

  async start() {
    if (this.isTherapist) {
      const mod = await import("./console.js");
      this.console = new mod.Console(this);
    }
    try {
      this.e2ee = await startE2ee(this);
      const intro = this.e2ee && !this.isTherapist ? await this.e2ee.intro() : null;
      const welcome = await this.signaling.connect({ name: this.name, intro });
      return welcome;
    } catch (e) {
      return null; // the "closed" handler shows the page
    }
  }

  _wire() {
    const s = this.signaling;
    /** @param {string} type @param {(m: any) => void} fn */
    const on = (type, fn) => s.addEventListener(type, (ev) => fn(/** @type {CustomEvent} */ (ev).detail));
    on("credential", (d) => { store.resume = d.credential; });
    on("welcome", (m) => this._onWelcome(m));
    on("waiting", (m) => this._onWaiting(m));
    on("admitted", (m) => { e2eeAdmitted(this, m); this._enterSession(); });
    on("roster", (m) => this._onRoster(m.participants || []));
    on("therapist", (m) => this._onTherapist(m.status));
    on("time", (m) => this._onTime(m));
    on("warning", (m) => this._onWarning(m));
    on("session-ended", (m) => this._onEnded(m.reason || "time"));
    on("declined", (m) => this._finish("declined", m.message || null));
    on("removed", () => this._finish("removed", null));
    on("reconnecting", () => this._onReconnecting());
    on("closed", (d) => this._onClosed(d));
  }

  /** @param {any} m */
  _onWelcome(m) {
    const wasReconnecting = this._reconnecting;
    this._reconnecting = false;
    this.pid = m.pid;
    this.role = m.role || this.role;
    if (m.room) {
      this.room = { ...this.room, ...m.room };
      if (m.room.ends_at) this.endsAt = new Date(m.room.ends_at);
    }
    this.therapist = m.therapist || this.therapist;
    if (store.name === null && this.name) store.name = this.name;
    this.removeBanner("reconnecting");
    if (wasReconnecting) this.banner("reconnected", t("session.reconnected"), "info", 4000);
    if (!this.isTherapist && m.status === "admitted") e2eeResumed(this);
    if (this.isTherapist || m.status === "admitted") {
      this._enterSession();
      if (this.call) this.call.restartAll();
    } else {
      this._enterWaiting({ position: m.position, therapist: m.therapist, reason: null });
    }
    this.dispatchEvent(new CustomEvent("welcome", { detail: m }));
  }

  /** @param {any} m */
  _onWaiting(m) {
    if (this.isTherapist) return;
    this._enterWaiting(m);
  }

  /** @param {{position?: number, therapist?: string, reason?: string|null}} m */
  _enterWaiting(m) {
    const wasIn = this.status === "admitted";
    if (this.call) {
      // Sent back: every remote connection closes at once, so no media flows either way.
      this.call.stop();
      this.call = null;
      this._clearRemoteTiles();
    }
    this.status = "waiting";
    if (m.therapist) this.therapist = m.therapist;
    this._attachPreview("waiting-preview", "waiting-preview-off");
    const start = this.room && this.room.starts_at ? formatTime(this.room.starts_at) : "";
    const end = this.endsAt ? formatTime(this.endsAt) : "";
    $("waiting-time").textContent = start && end ? t("waiting.session-time", { start, end }) : "";
    this._renderWaitingFacts(m.position);
    const notice = $("waiting-notice");
    const reason = m.reason || (wasIn ? "sent-back" : null);
    if (reason === "sent-back" || reason === "therapist-away") {
      notice.textContent = t(reason === "sent-back" ? "waiting.sent-back" : "waiting.therapist-away");
      notice.hidden = false;
    } else if (!wasIn && document.getElementById("view-waiting")?.hidden) {
      notice.hidden = true;
    }
    const leave = $("waiting-leave");
    leave.onclick = () => this.leave();
    document.title = `${t("waiting.heading")} – Alcove`;
    document.body.dataset.state = "waiting";
    if (document.getElementById("view-waiting")?.hidden) showView("view-waiting");
  }

  /** @param {number|undefined} position */
  _renderWaitingFacts(position) {
    if (typeof position === "number") this.position = position;
    const th = this.therapist === "present" ? "present" : this.therapist === "reconnecting" ? "reconnecting" : "absent";
    $("waiting-therapist").textContent = t(`waiting.therapist.${th}`);
    const pos = this.position;
    $("waiting-position").textContent = typeof pos === "number" && pos > 0
      ? (pos === 1 ? t("waiting.position.first") : t("waiting.position", { position: pos }))
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
      this.call.addEventListener("stream", (ev) => this._onRemoteStream(/** @type {CustomEvent} */ (ev).detail));
      this.call.addEventListener("peer-closed", (ev) => this._removeTile(/** @type {CustomEvent} */ (ev).detail.pid));
      this.call.addEventListener("levels", (ev) => this._onLevels(/** @type {CustomEvent} */ (ev).detail.levels));
      if (this.roster.length) this.call.updateRoster(this.roster);
    }
    if (first) {
      $("waiting-notice").hidden = true;
      this._setupControls();
      this._ensureSelfTile();
      this._startClock();
      $("console").hidden = !this.isTherapist;
      if (this.console) this.console.show();
      document.body.dataset.state = this.isTherapist ? "console" : "session";
      if (!this.isTherapist) document.title = `${t("session.heading")} – Alcove`;
      showView("view-session");
    }
    renderSafety(this);
    renderStatus(this);
  }

  _setupControls() {
    const mute = /** @type {HTMLButtonElement} */ ($("btn-mute"));
    const cam = /** @type {HTMLButtonElement} */ ($("btn-camera"));
    const hasAudio = !!(this.stream && this.stream.getAudioTracks().length);
    const hasVideo = !!(this.stream && this.stream.getVideoTracks().length);
    const render = () => {
      mute.textContent = this.audioOn && hasAudio ? t("session.mute") : t("session.unmute");
      mute.setAttribute("aria-pressed", String(!(this.audioOn && hasAudio)));
      cam.textContent = this.videoOn && hasVideo ? t("session.camera.off") : t("session.camera.on");
      cam.setAttribute("aria-pressed", String(!(this.videoOn && hasVideo)));
      mute.disabled = !hasAudio;
      cam.disabled = !hasVideo;
    };
    mute.onclick = () => {
      this.audioOn = !this.audioOn;
      this.stream?.getAudioTracks().forEach((tr) => { tr.enabled = this.audioOn; });
      render();
      this._updateSelfBadges();
    };
    cam.onclick = () => {
      this.videoOn = !this.videoOn;
      this.stream?.getVideoTracks().forEach((tr) => { tr.enabled = this.videoOn; });
      render();
      this._updateSelfBadges();
    };
    $("btn-leave").onclick = () => this.leave();
    render();
  }

  // ---- tiles --------------------------------------------------------------------------------------------

  /**
   * @param {string} key
   * @param {string} label
   * @param {boolean} self
   */
  _makeTile(key, label, self) {
    const tile = document.createElement("figure");
    tile.className = self ? "tile self" : "tile";
    tile.dataset.pid = key;
    tile.setAttribute("role", "group");
    tile.setAttribute("aria-label", label);
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    if (self) {
      video.muted = true;
      video.dataset.self = "";
    } else {
      video.dataset.remote = key;
    }
    video.setAttribute("aria-hidden", "true");
    const off = document.createElement("div");
    off.className = "tile-off";
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    off.append(avatar);
    const name = document.createElement("figcaption");
    name.className = "name";
    name.textContent = label;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.hidden = true;
    tile.append(off, video, name, badge);
    return tile;
  }

  _ensureSelfTile() {
    if (this.tiles.has("self")) return;
    const label = this.name ? t("session.you.named", { name: this.name }) : t("session.you");
    const tile = this._makeTile("self", label, true);
    const video = /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
    if (this.stream && this.stream.getVideoTracks().length) {
      video.srcObject = this.stream;
      video.play().catch(() => {});
    } else {
      video.hidden = true;
    }
    this.tiles.set("self", tile);
    $("tiles").append(tile);
    this._layout();
    this._updateSelfBadges();
  }

  _updateSelfBadges() {
    const tile = this.tiles.get("self");
    if (!tile) return;
    const video = /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
    const hasVideo = !!(this.stream && this.stream.getVideoTracks().length);
    video.hidden = !(hasVideo && this.videoOn);
    const badge = /** @type {HTMLElement} */ (tile.querySelector(".badge"));
    const hasAudio = !!(this.stream && this.stream.getAudioTracks().length);
    badge.hidden = hasAudio && this.audioOn;
    badge.textContent = t("session.muted");
  }

  /** @param {any[]} participants */
  _onRoster(participants) {
    const before = new Set(this.roster.map((p) => p.pid));
    this.roster = participants;
    if (this.call) this.call.updateRoster(participants);
    const others = participants.filter((p) => p.pid !== this.pid);
    const now = new Set(others.map((p) => p.pid));
    for (const [key] of this.tiles) {
      if (key !== "self" && !now.has(key)) this._removeTile(key);
    }
    for (const p of others) {
      let tile = this.tiles.get(p.pid);
      if (!tile) {
        tile = this._makeTile(p.pid, p.name, false);
        /** @type {HTMLVideoElement} */ (tile.querySelector("video")).hidden = true;
        this.tiles.set(p.pid, tile);
        const self = this.tiles.get("self");
        $("tiles").insertBefore(tile, self || null);
        if (before.size && !before.has(p.pid)) announce(t("session.joined", { name: p.name }));
      }
      /** @type {HTMLElement} */ (tile.querySelector(".name")).textContent = p.name;
      tile.setAttribute("aria-label", p.name);
      const badge = /** @type {HTMLElement} */ (tile.querySelector(".badge"));
      badge.hidden = p.connected !== false;
      badge.textContent = t("console.offline");
    }
    // Grid order: the roster's order (therapist first), the self-view last.
    const box = $("tiles");
    for (const p of others) { const tile = this.tiles.get(p.pid); if (tile) box.append(tile); }
    const selfTile = this.tiles.get("self");
    if (selfTile) box.append(selfTile);
    this._layout();
    renderHealth(this);
    if (this.console) this.console.onRoster(participants);
  }

  /** @param {{pid: string, stream: MediaStream}} d */
  _onRemoteStream(d) {
    const tile = this.tiles.get(d.pid);
    if (!tile) return;
    const video = /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
    if (video.srcObject !== d.stream) video.srcObject = d.stream;
    video.hidden = d.stream.getVideoTracks().length === 0;
    playWithSound(video);
  }

  /** @param {string} pid */
  _removeTile(pid) {
    const tile = this.tiles.get(pid);
    if (!tile || pid === "self") return;
    const video = /** @type {HTMLVideoElement|null} */ (tile.querySelector("video"));
    if (video) video.srcObject = null;
    tile.remove();
    this.tiles.delete(pid);
    this._layout();
  }

  _clearRemoteTiles() {
    for (const key of [...this.tiles.keys()]) if (key !== "self") this._removeTile(key);
  }

  _layout() {
    const tiles = $("tiles");
    const remote = this.tiles.size - (this.tiles.has("self") ? 1 : 0);
    // One remote peer: it fills the stage and the self-view floats. More: everyone in the grid.
    const pip = remote === 1;
    tiles.classList.toggle("with-pip", pip);
    tiles.dataset.count = String(pip ? 1 : Math.max(1, this.tiles.size));
    $("session-alone").hidden = remote > 0;
  }

  /** @param {Record<string, number>} levels */
  _onLevels(levels) {
    let best = null;
    let bestLevel = 0.02;
    for (const [pid, level] of Object.entries(levels)) {
      if (level > bestLevel) { best = pid; bestLevel = level; }
    }
    for (const [key, tile] of this.tiles) tile.classList.toggle("speaking", key === best);
  }

  // ---- time ---------------------------------------------------------------------------------------------

  _startClock() {
    const tick = () => {
      if (!this.endsAt) return;
      const left = this.endsAt.getTime() - Date.now();
      $("session-clock").textContent = left > 0 ? formatDuration(left) : t("session.clock.over");
      $("session-endtime").textContent = `– ${formatTime(this.endsAt)}`;
    };
    tick();
    if (this.clockTimer) clearInterval(this.clockTimer);
    this.clockTimer = setInterval(tick, 1000);
  }

  /** @param {any} m */
  _onTime(m) {
    if (m.ends_at) this.endsAt = new Date(m.ends_at);
    if (this.room) this.room.ends_at = m.ends_at;
    if (m.extended_minutes && this.status === "admitted") {
      this.banner("time", t("session.extended", { n: m.extended_minutes, end: formatTime(this.endsAt || new Date()) }), "info", 10000);
    }
    this._startClock();
    if (this.console) this.console.onTime(m);
  }

  /** @param {any} m */
  _onWarning(m) {
    if (m.ends_at) this.endsAt = new Date(m.ends_at);
    const text = m.minutes === 1 ? t("session.warning.one") : t("session.warning", { n: m.minutes });
    this.banner("warning", text, "warn", 0);
    document.body.dataset.warning = String(m.minutes);
  }

  /** @param {string} status */
  _onTherapist(status) {
    this.therapist = status;
    if (this.isTherapist) return;
    if (this.status === "waiting") {
      this._renderWaitingFacts(undefined);
      return;
    }
    if (status === "reconnecting" || status === "absent") {
      this.banner("therapist", t("session.therapist.reconnecting"), "warn", 0);
      document.body.dataset.therapist = status;
    } else {
      this.removeBanner("therapist");
      delete document.body.dataset.therapist;
      this.banner("therapist-back", t("session.therapist.back"), "info", 4000);
    }
  }

  /**
   * A calm banner in the session's status region, one per key.
   * @param {string} key
   * @param {string} text
   * @param {"info"|"warn"} kind
   * @param {number} ttl ms, 0 = until replaced or dismissed
   */
  banner(key, text, kind, ttl) {
    this.removeBanner(key);
    const box = $("banners");
    const div = document.createElement("div");
    div.className = `banner ${kind}`;
    div.dataset.key = key;
    const span = document.createElement("span");
    span.textContent = text;
    div.append(span);
    box.append(div);
    if (ttl) setTimeout(() => { if (div.isConnected) div.remove(); }, ttl);
    if (this.status !== "admitted") announce(text);
  }

  /** @param {string} key */
  removeBanner(key) {
    document.querySelectorAll(`#banners .banner[data-key="${key}"]`).forEach((el) => el.remove());
  }

  _onReconnecting() {
    if (this.status === "ended") return;
    if (!this._reconnecting) {
      this._reconnecting = true;
      if (this.status === "admitted") this.banner("reconnecting", t("session.reconnecting"), "warn", 0);
      if (this.console) this.console.onLocked(true);
    }
  }

  // ---- the end ------------------------------------------------------------------------------------------

  /** Stops everything at once (connections, E2EE, media, clock, console); the page shows whatever comes next. */
  teardown() {
    this.status = "ended";
    if (this.call) { this.call.stop(); this.call = null; }
    if (this.e2ee) { this.e2ee.stop(); }
    this._clearRemoteTiles();
    if (this.clockTimer) clearInterval(this.clockTimer);
    this.stream?.getTracks().forEach((tr) => tr.stop());
    if (this.console) this.console.stop();
    this.dispatchEvent(new Event("ended"));
  }

  /** @param {string} reason */
  _onEnded(reason) {
    this.teardown();
    store.forgetSession();
    const r = ["time", "therapist", "admin"].includes(reason) ? reason : "time";
    showEnded(t("ended.title"), t(`ended.body.${r}`), { state: "ended" });
  }

  /**
   * @param {"declined"|"removed"|"replaced"} kind
   * @param {string|null} message
   */
  _finish(kind, message) {
    this.teardown();
    store.forgetSession();
    showEnded(t(`ended.${kind}.title`), t(`ended.${kind}.body`), { message, state: kind });
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

  /** Leaves on purpose: the seat is free at once. */
  leave() {
    this.signaling.leave();
    this.teardown();
    store.forgetSession();
    showEnded(t("ended.title"), t("ended.body.left"), { rejoin: true, state: "left" });
  }
}
