// Connection quality in the session: a small indicator per participant (good / weak / reconnecting) and the
// "video paused to keep the sound clear" notice, on both sides. The measuring and deciding is lib/quality.js;
// this view applies the video level to the call, tells the others through `media-state` (docs/protocol.md) and
// shows what they report.

import { t } from "../lib/i18n.js";
import { LinkMonitor, PAUSED } from "../lib/quality.js";
import { SELF_TILE } from "./tiles.js";
import { announce } from "./dom.js";

/**
 * @typedef {import("../lib/quality.js").Quality} Quality
 * @typedef {{video: "on"|"paused", quality: Quality}} Reported
 */

export class QualityView {
  /** @param {import("./session.js").Session} session */
  constructor(session) {
    this.session = session;
    /** @type {Map<string, Reported>} what each other participant reported */
    this.reported = new Map();
    /** @type {Record<string, Quality>} what our own connections measure (mesh: per pid) */
    this.measured = {};
    /** @type {Reported} what we last told the others */
    this.sent = { video: "on", quality: "good" };
    this.paused = false;
    /** @type {Set<string>} publishers whose video the SFU paused to us (our link cannot carry it) */
    this.sfuPaused = new Set();
    /** @type {LinkMonitor|null} */
    this.monitor = null;
    /** @type {Set<string>} the roster's pids when we last looked */
    this._known = new Set();
    /** @type {EventListener} */
    this._onReport = (ev) => this.onReport(/** @type {CustomEvent} */ (ev).detail);
    session.signaling.addEventListener("media-state", this._onReport);
  }

  /** Starts measuring the current call (after admission). */
  start() {
    this.stopMonitor();
    const call = this.session.call;
    if (!call) return;
    this.monitor = new LinkMonitor(() => call.connections(), (state) => this.onMeasured(state),
      { bitrate: call.trustsBandwidthEstimate });
  }

  /** @param {{level: number, quality: Quality, peers: Record<string, Quality>}} state */
  onMeasured(state) {
    const s = this.session;
    if (!s.call) return;
    s.call.setVideoLevel(state.level);
    this.measured = state.peers;
    const paused = state.level === PAUSED;
    if (paused !== this.paused) {
      this.paused = paused;
      if (paused) {
        s.removeBanner("video-resumed");
        s.banner("video-paused", () => t("quality.paused.self"), "warn", 0);
      } else {
        s.removeBanner("video-paused");
        s.banner("video-resumed", () => t("quality.resumed.self"), "info", 5000);
      }
    }
    s.tiles.setLink(SELF_TILE, { quality: state.quality, paused });
    /** @type {Reported} */
    const mine = { video: paused ? "paused" : "on", quality: state.quality };
    if (mine.video !== this.sent.video || mine.quality !== this.sent.quality) {
      if (s.signaling.send("media-state", mine)) this.sent = mine;
    }
    this.render();
  }

  /** @param {{from: string, video: "on"|"paused", quality: Quality}} m */
  onReport(m) {
    if (!m || !m.from) return;
    const before = this.reported.get(m.from);
    this.reported.set(m.from, { video: m.video, quality: m.quality });
    this.render();
    // Screen readers hear it too (the note on the tile is not in a live region).
    if ((before ? before.video : "on") !== m.video) {
      const who = this.session.roster.find((p) => p.pid === m.from);
      if (who) announce(t(m.video === "paused" ? "quality.paused.peer.named" : "quality.resumed.peer.named", { name: who.name }));
    }
  }

  /**
   * The roster changed: forget the reports of those who left (a new page of theirs starts afresh), and tell
   * newcomers our own state if it is not the default (they missed it).
   * @param {{pid: string}[]} participants
   */
  onRoster(participants) {
    const pids = new Set(participants.map((p) => p.pid));
    for (const pid of [...this.reported.keys()]) if (!pids.has(pid)) this.reported.delete(pid);
    const newcomers = [...pids].some((pid) => pid !== this.session.pid && !this._known.has(pid));
    this._known = pids;
    if (newcomers && (this.sent.video !== "on" || this.sent.quality !== "good")) {
      this.session.signaling.send("media-state", this.sent);
    }
    this.render();
  }

  /** Each remote tile: the worse of what we measure on our connection to it and what it reports. */
  render() {
    const order = ["good", "weak", "reconnecting"];
    for (const [pid] of this.session.tiles.remote()) {
      const reported = this.reported.get(pid);
      const measured = this.measured[pid] || this.measured.sfu;
      const worst = [reported?.quality, measured].filter(Boolean)
        .sort((a, b) => order.indexOf(String(b)) - order.indexOf(String(a)))[0];
      this.session.tiles.setLink(pid, {
        quality: /** @type {Quality|undefined} */ (worst),
        paused: (reported ? reported.video === "paused" : false) || this.sfuPaused.has(pid),
      });
    }
  }

  /**
   * The SFU paused (or resumed) a publisher's video to us because our own link cannot carry even its lowest layer.
   * @param {string} pid @param {boolean} paused
   */
  onSfuPaused(pid, paused) {
    if (paused) this.sfuPaused.add(pid);
    else this.sfuPaused.delete(pid);
    this.render();
  }

  stopMonitor() {
    if (this.monitor) this.monitor.stop();
    this.monitor = null;
    this.measured = {};
    this.paused = false;
    this.sfuPaused.clear();
    this.sent = { video: "on", quality: "good" };
  }

  stop() {
    this.stopMonitor();
    this.session.signaling.removeEventListener("media-state", this._onReport);
  }
}
