// Screen sharing, the view (DOM): the Share button, the sharer's "You are sharing your screen — Stop" bar, the
// others' "<name> is sharing" notice with the share shown large and the speakers small, and who may share.
//
// Who may share: the therapist always; a client only while the therapist allows it for that client (off by
// default). The permission is an end-to-end encrypted, therapist-signed app message (lib/e2ee-flow.js
// `sendApp`, kind "share"): `{"k": "share", "allow": [pid, …]}` to everyone, the complete list each time (sent
// again when the roster changes, so a newcomer learns it). Every receiver keeps the newest list it got from the
// therapist and shows a share only from the therapist or a pid in it; a share from anybody else is refused
// (not shown, and the person is told). Without end-to-end encryption no permission can be proven: only the
// therapist shares.

import { t } from "../lib/i18n.js";
import { captureScreen } from "../lib/share.js";
import { $ } from "./dom.js";

/** At most this many pids in a permission list (a room has at most 16 members). */
const MAX_ALLOWED = 16;

export class ShareView {
  /** @param {import("./session.js").Session} session */
  constructor(session) {
    this.session = session;
    /** @type {import("../lib/call.js").MediaCall|null} */
    this.call = null;
    /** Our own share while we send one. @type {MediaStream|null} */
    this.local = null;
    /** pid -> the share that peer sends (as the media says; shown only when that peer may share). */
    /** @type {Map<string, MediaStream>} */
    this.remote = new Map();
    /** The clients the therapist allows to share (the therapist's own list, or the newest signed one). */
    /** @type {Set<string>} */
    this.allowed = new Set();
    /** Refused shares (pid), for the person and for tests. @type {string[]} */
    this.refused = [];
    /** pid shown now, or null. @type {string|null} */
    this.shown = null;
    this._appWired = false;
    $("share-stop").onclick = () => this.stop();
  }

  get isTherapist() { return this.session.isTherapist; }

  /** The pid of the therapist: from the grant and signed roster with E2EE, else the server's roster. */
  get therapistPid() {
    const e2ee = this.session.e2ee;
    if (this.isTherapist) return this.session.pid;
    const signed = e2ee && e2ee.keys ? e2ee.keys.therapistPid : null;
    if (signed) return signed;
    if (e2ee) return null;
    const th = this.session.roster.find((p) => p.role === "therapist");
    return th ? th.pid : null;
  }

  /** Whether `pid` may share now. @param {string|null} pid */
  mayShare(pid) {
    if (!pid) return false;
    if (pid === this.therapistPid) return true;
    return !!this.session.e2ee && this.allowed.has(pid);
  }

  /** The session's media call (a new one after every admission). @param {import("../lib/call.js").MediaCall} call */
  attach(call) {
    this.call = call;
    this.remote.clear();
    call.addEventListener("share", (ev) => {
      const d = /** @type {CustomEvent} */ (ev).detail;
      if (d.stream) this.remote.set(d.pid, d.stream);
      else this.remote.delete(d.pid);
      this.render();
    });
    this._wireApp();
    this.render();
  }

  _wireApp() {
    const e2ee = this.session.e2ee;
    if (this._appWired || !e2ee || typeof e2ee.addEventListener !== "function") return;
    this._appWired = true;
    e2ee.addEventListener("app", (/** @type {Event} */ ev) => {
      const d = /** @type {CustomEvent} */ (ev).detail;
      if (d && d.body && d.body.k === "share") this.onPermission(d.from, d.body);
    });
    // App messages are sealed under the current epoch: a client that just got its first key learns the list.
    let epoch = e2ee.epoch;
    e2ee.addEventListener("change", () => {
      if (e2ee.epoch === epoch) return;
      epoch = e2ee.epoch;
      if (this.isTherapist && this.allowed.size) this._sendPermission();
    });
  }

  /**
   * A permission list (app message of kind "share"). Only the therapist's counts; anything malformed changes
   * nothing.
   * @param {string} from @param {any} body
   */
  onPermission(from, body) {
    if (this.isTherapist || !from || from !== this.therapistPid) return;
    const list = body.allow;
    if (!Array.isArray(list) || list.length > MAX_ALLOWED || !list.every((p) => typeof p === "string" && p.length <= 64)) return;
    const me = this.session.pid;
    const had = !!me && this.allowed.has(me);
    this.allowed = new Set(list);
    const has = !!me && this.allowed.has(me);
    if (has && !had) this.session.banner("share", () => t("share.allowed"), "info", 8000);
    if (had && !has) {
      if (this.local) this.session.banner("share", () => t("share.revoked"), "info", 8000);
      this.stop();
    }
    this.render();
  }

  // ---- the therapist's permission ------------------------------------------------------------------------

  /** @param {string} pid */
  isAllowed(pid) { return this.allowed.has(pid); }

  /** The therapist allows or stops allowing a client to share. @param {string} pid */
  toggle(pid) {
    if (!this.isTherapist) return;
    if (this.allowed.has(pid)) this.allowed.delete(pid);
    else this.allowed.add(pid);
    this._sendPermission();
    this.render();
    if (this.session.console) this.session.console.onRoster(this.session.roster);
  }

  _sendPermission() {
    const e2ee = this.session.e2ee;
    if (!this.isTherapist || !e2ee || typeof e2ee.sendApp !== "function") return false;
    return e2ee.sendApp({ k: "share", allow: [...this.allowed] }, null);
  }

  /** @param {any[]} participants */
  onRoster(participants) {
    const present = new Set(participants.map((p) => p.pid));
    for (const pid of [...this.remote.keys()]) if (!present.has(pid)) this.remote.delete(pid);
    if (this.isTherapist) {
      // Someone who left (sent back, removed) loses the permission; a newcomer learns the list.
      for (const pid of [...this.allowed]) if (!present.has(pid)) this.allowed.delete(pid);
      if (this.allowed.size) this._sendPermission();
    }
    this.render();
  }

  // ---- sharing ---------------------------------------------------------------------------------------------

  async start() {
    if (!this.call || this.local || !this.mayShare(this.session.pid)) return;
    let stream;
    try {
      stream = await captureScreen();
    } catch (e) {
      this.session.banner("share", () => t(this.isTherapist ? "share.failed" : "share.failed.client"), "warn", 8000);
      return;
    }
    if (!this.call || !this.mayShare(this.session.pid)) { stream.getTracks().forEach((tr) => tr.stop()); return; }
    this.local = stream;
    // The browser's own "Stop sharing" ends the track.
    for (const tr of stream.getVideoTracks()) tr.addEventListener("ended", () => { if (this.local === stream) this.stop(); });
    this.call.startShare(stream); // the bar (a status region) says so
    this.render();
  }

  /** Stops our share (also on send-back, removal, the end, a withdrawn permission). */
  stop() {
    const stream = this.local;
    if (!stream) return;
    this.local = null;
    if (this.call) this.call.stopShare();
    stream.getTracks().forEach((tr) => tr.stop());
    this.render();
  }

  /** The call ended (sent back, left, ended): our share stops and nobody's is shown any more. */
  detach() {
    this.stop();
    this.call = null;
    this.remote.clear();
    if (!this.isTherapist) this.allowed.clear();
    this.render();
  }

  relabel() { this.render(); }

  /** The name the screen shows for pid (the signed roster's with E2EE). @param {string} pid */
  _nameOf(pid) {
    const e2ee = this.session.e2ee;
    const signed = e2ee && typeof e2ee.signedName === "function" ? e2ee.signedName(pid) : null;
    if (signed) return signed;
    const p = this.session.roster.find((r) => r.pid === pid);
    return p ? p.name : "";
  }

  render() {
    const btn = /** @type {HTMLButtonElement} */ ($("btn-share"));
    const canShare = !!this.call && this.mayShare(this.session.pid) && typeof navigator.mediaDevices?.getDisplayMedia === "function";
    btn.hidden = !canShare && !this.local;
    btn.textContent = this.local ? t("share.stop.button") : t(this.isTherapist ? "share.start" : "share.start.client");
    btn.setAttribute("aria-pressed", String(!!this.local));
    btn.onclick = () => { if (this.local) this.stop(); else this.start(); };
    const bar = $("share-bar");
    bar.hidden = !this.local;
    $("share-bar-text").textContent = t(this.isTherapist ? "share.you" : "share.you.client");
    $("share-stop").textContent = t("share.stop");
    document.body.dataset.sharing = this.local ? "self" : "";

    // The share shown: the therapist's first, else the first allowed one; refused ones are reported once each.
    let pick = null;
    const th = this.therapistPid;
    for (const [pid] of this.remote) {
      if (!this.mayShare(pid)) {
        if (!this.refused.includes(pid)) {
          this.refused.push(pid);
          const name = this._nameOf(pid);
          this.session.banner(`share-refused-${pid}`,
            () => t(this.isTherapist ? "share.refused.therapist" : "share.refused", { name }), "warn", 0);
        }
        continue;
      }
      if (pick === null || pid === th) pick = pid;
    }
    for (const pid of [...this.refused]) {
      if (!this.remote.has(pid) || this.mayShare(pid)) {
        this.refused.splice(this.refused.indexOf(pid), 1);
        this.session.removeBanner(`share-refused-${pid}`);
      }
    }
    const view = $("share-view");
    const video = /** @type {HTMLVideoElement} */ ($("share-video"));
    const stage = /** @type {HTMLElement} */ (view.parentElement);
    if (pick === null) {
      if (this.shown !== null) { video.srcObject = null; }
      this.shown = null;
      view.hidden = true;
      stage.classList.remove("sharing");
      this.session.tiles.setSharing(false);
      return;
    }
    const stream = /** @type {MediaStream} */ (this.remote.get(pick));
    const name = this._nameOf(pick);
    this.shown = pick;
    if (video.srcObject !== stream) {
      // The shared tab's sound plays too; where the browser wants a gesture first, the "Turn on sound" button
      // (ui/tiles.js) unmutes it with the others.
      video.srcObject = stream;
      video.muted = false;
      video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
    }
    view.dataset.pid = pick;
    view.setAttribute("aria-label", t("share.label", { name }));
    $("share-notice").textContent = t(this.isTherapist ? "share.viewing.therapist" : "share.viewing", { name });
    view.hidden = false;
    stage.classList.add("sharing");
    this.session.tiles.setSharing(true);
  }
}
