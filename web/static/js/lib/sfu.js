// Media for one participant of an SFU room (family and group sessions, docs/sfu.md §2): ONE RTCPeerConnection
// to the forwarding SFU. The client always offers (`to: "sfu"`): its camera and microphone (sendonly) plus one
// recvonly video + one recvonly audio transceiver per other admitted member; the SFU answers. Which publisher
// a recvonly m-line carries comes from `tracks {from: "sfu", mids: {mid: {pid, kind}}}`.
//
// Same constructor options, events and methods as `Call` (call.js), so the UI needs no change:
//  - `stream`  {pid, stream}   the media of a publisher (a new MediaStream whenever its tracks change)
//  - `peer-closed` {pid}       a publisher is gone (left the roster or the mapping, or we left)
//  - `state`   {pid, state}    connectionState of the SFU connection (pid "sfu")
//  - `levels`  {levels}        {pid: audioLevel 0..1} every ~400 ms, from getStats (active speaker)
//  - `share`   {pid, stream}   a publisher's screen share started (stream) or stopped (null); lib/share.js. The
//                              client offers one spare recvonly pair for it; with E2EE a slot carries a share
//                              when its frames decrypt under the share's SFrame KID stream (not the SFU's say)
//  - `video-paused` {pid, paused}  the SFU stopped (or resumed) this publisher's video to us because our link
//                                 cannot carry even its lowest layer; the sound goes on (the view says "video
//                                 paused to keep the sound clear"). A hint from the server, never about keys.
//
// E2EE (options.e2ee, the interface of call.js): prepareSender/prepareReceiver are called on every transceiver
// right after it is created and BEFORE createOffer (receivers with pid null: the decrypt side accepts any
// roster member's key, since a recvonly slot may carry different publishers over time). The SFU connection's
// SDP is neither signed nor verified (the SFU holds no keys; SFrame protects the media). If a transform cannot be
// attached, nothing is offered (fail closed) and onSecurityFailure(null, err) is called.

import { MediaCall } from "./call.js";
import { SFU } from "./protocol.js";
import { Conn } from "./sfu-conn.js";
import { encodingFor } from "./quality.js";
import { applyShareEncoding, SCREEN_AUDIO_STREAM, SCREEN_VIDEO_STREAM } from "./share.js";

/** @typedef {import("./protocol.js").Signaling} Signaling */
/** @typedef {import("./protocol.js").RosterEntry} RosterEntry */

/** Wait for the answer this long before giving up on the connection and building a new one. */
const ANSWER_TIMEOUT_MS = 15000;
/** After a signaling reconnect, a connection that receives no packet for this long is replaced. */
const KEEP_CHECK_MS = 500;
/** Coalesce roster/ice-servers bursts into one offer. */
const DEBOUNCE_MS = 40;
/** Group send profile (docs/sfu.md §3): one encoding with three VP8 temporal layers (L1T3, so the SFU can give
 * a weak link a lower frame rate instead of a frozen picture), small picture, capped bitrate. */
const PROFILE = {
  small: { width: 640, maxBitrate: 500_000, maxFramerate: 15 },
  large: { width: 480, maxBitrate: 350_000, maxFramerate: 15 }, // above 4 members
};

export class SfuCall extends MediaCall {
  /**
   * @param {Signaling} signaling
   * @param {{pid: string, localStream?: MediaStream|null, iceServers?: RTCIceServer[], debug?: boolean,
   *          e2ee?: any}} options
   */
  constructor(signaling, options) {
    super(signaling, options, "sfu");
    /** Publishers we currently show: pid -> {pid, stream}. */
    /** @type {Map<string, {pid: string, stream: MediaStream, tracks: Record<string, MediaStreamTrack>}>} */
    this.peers = new Map();
    /** @type {Set<string>} other admitted members */
    this.others = new Set();
    /** @type {Conn|null} */
    this.conn = null;
    /** @type {Record<string, {pid: string, kind: string, paused?: boolean, share?: boolean}>} the latest `tracks` mapping */
    this.mapping = {};
    /** @type {Set<string>} publishers whose video the SFU paused to us */
    this.paused = new Set();
    /** Publishers' screen shares we receive: pid -> {stream, tracks}. */
    /** @type {Map<string, {stream: MediaStream, tracks: Record<string, MediaStreamTrack>}>} */
    this.shares = new Map();
    this._running = false;
    this._again = false;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this._timer = null;
    this._retryDelay = 1000;
    /** A transform could not be attached: never send media (fail closed). */
    this.securityFailed = false;
    this._listen("answer", (m) => { if (m.from === SFU) this._onAnswer(m.sdp); });
    this._listen("tracks", (m) => { if (m.from === SFU) this._onTracks(m.mids || {}); });
    this._listen("media-ended", () => this._onMediaEnded());
    this._listen("error", (m) => this._onError(m));
    // With E2EE a slot's publisher is the authenticated sender of the frames it carries (SFrame KID -> the
    // therapist-signed roster, reported by the worker), not the SFU's `tracks` mapping: re-place on every report.
    const e2ee = this.e2ee;
    if (e2ee && e2ee.addEventListener) e2ee.addEventListener("stats", () => this._refresh());
    this._schedule();
  }

  // ---- the public interface of Call ---------------------------------------------------------------------

  /** @param {RTCIceServer[]} servers */
  setIceServers(servers) {
    super.setIceServers(servers);
    const c = this.conn;
    if (c && !c.closed) {
      try { c.pc.setConfiguration({ ...c.pc.getConfiguration(), iceServers: this.iceServers }); } catch (e) { this._log("setConfiguration", e); }
    }
  }

  /**
   * Follows the roster: one recvonly pair per other admitted member (renegotiates when it grows).
   * @param {RosterEntry[]} participants
   */
  updateRoster(participants) {
    if (!this.active) return;
    const others = new Set(participants.filter((p) => p.pid !== this.pid).map((p) => p.pid));
    const bigBefore = this.others.size + 1 > 4;
    this.others = others;
    for (const pid of [...this.peers.keys()]) {
      if (!others.has(pid)) this._dropPublisher(pid);
    }
    if (bigBefore !== this.others.size + 1 > 4) this._applyProfile();
    this._schedule();
  }

  /**
   * After the signaling reconnected (or the network came back). When only our socket went away, the SFU dropped
   * our connection, and aiortc cannot restart ICE: it is replaced by a new one. When the signaling process was
   * restarted, the SFU kept forwarding (its workers outlive it, docs/sfu.md §4): a connection that still
   * receives media is kept, so the media never stops.
   */
  restartAll() {
    const c = this.conn;
    if (!c || c.closed || !c.offerSent) return;
    if (c.pc.connectionState !== "connected") {
      this._rebuild("restart");
      return;
    }
    this._stillReceiving(c).then((alive) => {
      if (!alive && this.conn === c && !c.closed) this._rebuild("restart");
    });
  }

  /**
   * Whether RTP keeps arriving on `c` (inbound packets counted twice, KEEP_CHECK_MS apart).
   * @param {Conn} c
   */
  async _stillReceiving(c) {
    const count = async () => {
      let n = 0;
      (await c.pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp") n += s.packetsReceived || 0; });
      return n;
    };
    try {
      const before = await count();
      await new Promise((resolve) => setTimeout(resolve, KEEP_CHECK_MS));
      if (this.conn !== c || c.closed) return true;
      return (await count()) > before;
    } catch {
      return false;
    }
  }

  /** Closes the SFU connection (sent back to the waiting room, left, ended). Media stops at once. */
  closeAll() {
    this._closeConn();
    for (const pid of [...this.peers.keys()]) this._dropPublisher(pid);
    for (const pid of [...this.shares.keys()]) { this.shares.delete(pid); this._emit("share", { pid, stream: null }); }
    this.mapping = {};
  }

  /**
   * For tests and diagnostics: per publisher whose share we receive, its video's decoded frames and frame size.
   * @returns {Promise<Record<string, {framesDecoded: number, width: number, height: number}>>}
   */
  async shareStats() {
    /** @type {Record<string, {framesDecoded: number, width: number, height: number}>} */
    const out = {};
    const c = this.conn;
    if (!c || c.closed) return out;
    for (const [pid, share] of this.shares) {
      const t = c.receivers().find((x) => x.receiver.track === share.tracks.video);
      if (!t) continue;
      try {
        const report = await t.receiver.getStats();
        report.forEach((s) => {
          if (s.type === "inbound-rtp") out[pid] = { framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0 };
        });
      } catch { /* closed meanwhile */ }
    }
    return out;
  }

  /** Stops for good. */
  stop() {
    if (this._timer) { clearTimeout(this._timer); this._timer = null; }
    super.stop();
  }

  // ---- negotiation --------------------------------------------------------------------------------------

  /** @param {number} [delay] */
  _schedule(delay = DEBOUNCE_MS) {
    if (!this.active || this._timer) return;
    this._timer = setTimeout(() => {
      this._timer = null;
      this._negotiate();
    }, delay);
  }

  async _negotiate() {
    if (this._running) { this._again = true; return; }
    this._running = true;
    try {
      do {
        this._again = false;
        await this._negotiateOnce();
      } while (this._again && this.active);
    } catch (e) {
      this._log("negotiation failed", e);
      this._closeConn();
      if (this.securityFailed) return;
      const delay = this._retryDelay;
      this._retryDelay = Math.min(this._retryDelay * 2, 10000);
      this._schedule(delay);
    } finally {
      this._running = false;
    }
  }

  async _negotiateOnce() {
    if (!this.active || this.securityFailed) return;
    let c = this.conn;
    if (!c || c.closed) c = this.conn = this._newConn();
    await c.ready;
    const need = this.others.size + 1; // one spare pair: a share (any member's) has a slot to come in on
    const shareChanged = c.shareSent !== this.share;
    if (c.negotiations > 0 && c.pairs.length >= need && !shareChanged) return;
    while (c.pairs.length < need) await c.addReceivePair();
    if (shareChanged) {
      c.shareSent = this.share;
      await c.setShare(this.share);
    }
    if (c.closed) return;
    await c.setLocalOffer();
    if (!c.offerSent) await c.gathered();
    if (c.closed || !c.pc.localDescription) return;
    const answer = new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), ANSWER_TIMEOUT_MS);
      c.answerWaiter = (sdp) => { clearTimeout(timer); resolve(sdp); };
    });
    this.signaling.offer(SFU, c.pc.localDescription.sdp);
    c.offerSent = true;
    const sdp = /** @type {string|null} */ (await answer);
    c.answerWaiter = null;
    if (c.closed) return;
    if (sdp === null) throw new Error("no answer from the SFU");
    await c.pc.setRemoteDescription({ type: "answer", sdp });
    c.negotiations += 1;
    this._retryDelay = 1000;
    this._applyProfile();
    if (c.share.video && c.share.video.sender.track) applyShareEncoding(c.share.video.sender, (...a) => this._log(...a));
    this._refresh();
    if (c.pairs.length < this.others.size + 1 || c.shareSent !== this.share) this._again = true;
  }

  _newConn() {
    const c = new Conn({
      iceServers: this.iceServers, localStream: this.localStream, profile: this._profile(), e2ee: this.e2ee,
      onSecurityFailure: (e) => this._securityFailure(e), log: (...args) => this._log(...args),
    });
    const pc = c.pc;
    pc.addEventListener("icecandidate", (ev) => {
      if (this.conn !== c || c.closed || !ev.candidate || !c.offerSent) return;
      this.signaling.candidate(SFU, ev.candidate.toJSON());
    });
    pc.addEventListener("track", () => { if (this.conn === c) this._refresh(); });
    pc.addEventListener("connectionstatechange", () => {
      if (this.conn !== c || c.closed) return;
      const state = pc.connectionState;
      this._emit("state", { pid: SFU, state });
      if (c.disconnectTimer) { clearTimeout(c.disconnectTimer); c.disconnectTimer = null; }
      if (state === "failed") {
        this._rebuild("failed");
      } else if (state === "disconnected") {
        c.disconnectTimer = setTimeout(() => {
          if (this.conn === c && pc.connectionState === "disconnected") this._rebuild("disconnected");
        }, 4000);
      }
    });
    return c;
  }

  /** @param {unknown} err */
  _securityFailure(err) {
    this.securityFailed = true;
    this._log("E2EE transform refused", err);
    try { this.e2ee && this.e2ee.onSecurityFailure && this.e2ee.onSecurityFailure(null, err); } catch { /* ignore */ }
  }

  /** @param {string} sdp */
  _onAnswer(sdp) {
    const c = this.conn;
    if (c && c.answerWaiter) c.answerWaiter(sdp);
  }

  /** @param {any} m */
  _onError(m) {
    // The SFU has no address this browser could send media to: say so (the retries below cannot fix it).
    if (m && m.code === "media-unreachable") this._emit("media-unreachable", {});
    // An offer the SFU refused or could not answer (no live worker, not yet a member, bad offer): start over.
    const c = this.conn;
    if (m && m.ref === "offer" && c && c.answerWaiter) c.answerWaiter(null);
  }

  _onMediaEnded() {
    this._log("media ended: the SFU worker of this session stopped");
    this._rebuild("media-ended");
  }

  /** @param {string} why */
  _rebuild(why) {
    if (!this.active) return;
    this._log("new SFU connection:", why);
    this._closeConn();
    this.mapping = {};
    this._schedule();
  }

  _closeConn() {
    const c = this.conn;
    this.conn = null;
    if (c) c.close();
  }

  // ---- mapping: mids -> publishers ----------------------------------------------------------------------

  /** @param {Record<string, {pid: string, kind: string, paused?: boolean, share?: boolean}>} mids */
  _onTracks(mids) {
    this.mapping = mids;
    this._onPaused(mids);
    const c = this.conn;
    if (c) {
      let changed = false;
      for (const mid of [...c.owners.keys()]) {
        const now = mids[mid];
        if (!now || now.pid !== /** @type {any} */ (c.owners.get(mid)).pid) { c.owners.delete(mid); changed = true; }
      }
      const zero = { framesDecoded: 0, audioSamples: 0 };
      for (const [mid, ref] of Object.entries(mids)) {
        // before the first answer nothing was received yet: count from zero; later, from now
        if (!c.owners.has(mid)) { c.owners.set(mid, { pid: ref.pid, base: c.negotiations ? null : zero }); changed = true; }
      }
      if (changed && c.negotiations > 0) this._captureBases(c);
    }
    this._refresh();
  }

  /** @param {Record<string, {pid: string, kind: string, paused?: boolean, share?: boolean}>} mids */
  _onPaused(mids) {
    const now = new Set();
    for (const ref of Object.values(mids)) if (ref.kind === "video" && ref.paused === true) now.add(ref.pid);
    for (const pid of now) if (!this.paused.has(pid)) this._emit("video-paused", { pid, paused: true });
    for (const pid of this.paused) if (!now.has(pid)) this._emit("video-paused", { pid, paused: false });
    this.paused = now;
  }

  /** Counters of a mid that changed hands start from the moment it did (stats per publisher). */
  async _captureBases(/** @type {Conn} */ c) {
    const now = await c.midCounters();
    for (const [mid, owner] of c.owners) {
      if (owner.base === null) owner.base = now.get(mid) || { framesDecoded: 0, audioSamples: 0 };
    }
  }

  /** @param {MediaStream} _stream */
  _addShare(_stream) { this._schedule(); }

  _removeShare() { this._schedule(); }

  /**
   * Whether a slot carries a share: with E2EE, the SFrame KID stream its frames decrypt under; without, the SFU's
   * mapping.
   * @param {RTCRtpTransceiver} t @param {{share?: boolean}} ref
   */
  _isShare(t, ref) {
    const e2ee = /** @type {any} */ (this.e2ee);
    if (e2ee && e2ee.streamOfReceiver) {
      const st = e2ee.streamOfReceiver(t.receiver);
      return st === SCREEN_VIDEO_STREAM || st === SCREEN_AUDIO_STREAM;
    }
    return ref.share === true;
  }

  /** Rebuilds each publisher's MediaStream from the mapping and the receivers' tracks. */
  _refresh() {
    const c = this.conn;
    /** @type {Map<string, Record<string, MediaStreamTrack>>} */
    const wanted = new Map();
    /** @type {Map<string, Record<string, MediaStreamTrack>>} */
    const shares = new Map();
    if (c && !c.closed) {
      const senderOf = this.e2ee && this.e2ee.senderOfReceiver;
      for (const t of c.receivers()) {
        const ref = t.mid ? this.mapping[t.mid] : undefined;
        if (!ref || !t.receiver.track) continue; // the SFU routes nothing to this slot now
        // E2EE: the slot's publisher is the sender whose key decrypted its frames (the SFU's mapping only says the
        // slot is in use); nothing before its first frame decrypts, and never someone who is not in the room
        const pid = senderOf ? senderOf.call(this.e2ee, t.receiver) : ref.pid;
        const kind = t.receiver.track.kind;
        if (!pid || pid === this.pid || (senderOf && !this.others.has(pid))) continue;
        const into = this._isShare(t, ref) ? shares : wanted;
        const entry = into.get(pid) || {};
        entry[kind] = t.receiver.track;
        into.set(pid, entry);
      }
    }
    for (const pid of [...this.shares.keys()]) {
      if (shares.get(pid)?.video) continue;
      this.shares.delete(pid);
      this._emit("share", { pid, stream: null });
    }
    for (const [pid, tracks] of shares) {
      if (!tracks.video) continue;
      const have = this.shares.get(pid);
      if (have && ["audio", "video"].every((k) => have.tracks[k] === tracks[k])) continue;
      const stream = new MediaStream(Object.values(tracks));
      this.shares.set(pid, { stream, tracks });
      this._emit("share", { pid, stream });
    }
    for (const pid of [...this.peers.keys()]) {
      if (!wanted.has(pid) && !this.others.has(pid)) this._dropPublisher(pid);
    }
    for (const [pid, tracks] of wanted) {
      const have = this.peers.get(pid);
      const same = have && ["audio", "video"].every((k) => have.tracks[k] === tracks[k]);
      if (same) continue;
      const stream = new MediaStream(Object.values(tracks));
      this.peers.set(pid, { pid, stream, tracks });
      this._emit("stream", { pid, stream });
    }
  }

  /** @param {string} pid */
  _dropPublisher(pid) {
    if (!this.peers.delete(pid)) return;
    this._emit("peer-closed", { pid });
  }

  // ---- send profile -------------------------------------------------------------------------------------

  _profile() {
    return this.others.size + 1 > 4 ? PROFILE.large : PROFILE.small;
  }

  /** Group profile on the video sender: one encoding, ≤ 640 (or 480) wide, ≤ 500 (350) kbps, ≤ 15 fps. */
  _applyProfile() {
    const c = this.conn;
    const t = c && !c.closed ? c.publish.video : null;
    if (!t || !t.sender.track) return;
    const profile = this._profile();
    try {
      const params = t.sender.getParameters();
      if (!params.encodings || !params.encodings.length) return;
      const width = t.sender.track.getSettings().width || 640;
      const base = { scale: Math.max(1, width / profile.width), maxBitrate: profile.maxBitrate };
      for (const e of params.encodings) {
        encodingFor(e, this.videoLevel, base);
        e.maxFramerate = profile.maxFramerate;
      }
      t.sender.setParameters(params)
        .then(() => this._temporalLayers(t.sender))
        .catch((e) => this._log("setParameters", e));
    } catch (e) {
      this._log("encoding", e);
    }
  }

  /** VP8 L1T3 on the one encoding, on its own: a browser that cannot keeps the profile above. */
  async _temporalLayers(/** @type {RTCRtpSender} */ sender) {
    const params = sender.getParameters();
    const encodings = /** @type {Array<RTCRtpEncodingParameters & {scalabilityMode?: string}>} */ (params.encodings || []);
    if (!encodings.length || encodings.every((e) => e.scalabilityMode === "L1T3")) return;
    for (const e of encodings) e.scalabilityMode = "L1T3";
    try {
      await sender.setParameters(params);
    } catch (e) {
      this._log("scalabilityMode L1T3 refused", e);
    }
  }

  _applyVideo() { this._applyProfile(); }

  /** aiortc's REMB follows what the SFU receives: the estimate stays low on a healthy link, so only loss counts. */
  get trustsBandwidthEstimate() { return false; }

  /** @returns {[string, RTCPeerConnection][]} */
  connections() {
    const c = this.conn;
    return c && !c.closed ? [["sfu", c.pc]] : [];
  }

  // ---- levels and stats ---------------------------------------------------------------------------------

  async _pollLevels() {
    const c = this.conn;
    if (!c || c.closed || !c.negotiations) return;
    /** @type {Record<string, number>} */
    const levels = {};
    try {
      const report = await c.pc.getStats();
      report.forEach((s) => {
        if (s.type !== "inbound-rtp" || s.kind !== "audio" || typeof s.audioLevel !== "number" || !s.mid) return;
        const ref = this.mapping[s.mid];
        if (ref) levels[ref.pid] = Math.max(levels[ref.pid] || 0, s.audioLevel);
      });
    } catch { return; }
    this._emit("levels", { levels });
  }

  /**
   * For tests and diagnostics: per publisher, the video frames decoded and audio samples received over the
   * current SFU connection (counted from when its m-line was assigned to it), and the connection state.
   * @returns {Promise<Record<string, {framesDecoded: number, audioSamples: number, state: string}>>}
   */
  async stats() {
    /** @type {Record<string, {framesDecoded: number, audioSamples: number, state: string}>} */
    const out = {};
    const c = this.conn;
    if (!c || c.closed) return out;
    const counters = await c.midCounters();
    // after the await: a publisher may have been added (or dropped) meanwhile
    const state = c.pc.connectionState;
    for (const pid of this.peers.keys()) out[pid] = { framesDecoded: 0, audioSamples: 0, state };
    const senderOf = this.e2ee && this.e2ee.senderOfReceiver;
    const byMid = new Map(c.receivers().map((t) => [t.mid, t.receiver]));
    for (const [mid, owner] of c.owners) {
      // E2EE: counted for the authenticated sender of the slot's frames, as the tiles are
      const receiver = byMid.get(mid);
      const pid = senderOf ? (receiver ? senderOf.call(this.e2ee, receiver) : null) : owner.pid;
      if (!pid || !this.peers.has(pid)) continue;
      const now = counters.get(mid) || { framesDecoded: 0, audioSamples: 0 };
      if (owner.base === null) owner.base = now;
      const e = out[pid];
      e.framesDecoded += Math.max(0, now.framesDecoded - owner.base.framesDecoded);
      e.audioSamples += Math.max(0, now.audioSamples - owner.base.audioSamples);
    }
    return out;
  }
}
