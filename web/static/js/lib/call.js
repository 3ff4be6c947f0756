// Media for one participant: one RTCPeerConnection per remote admitted peer (mesh), perfect negotiation,
// trickle ICE, ICE restart on failure. No DOM here: the UI listens to the events of `Call`.
//
// Events (CustomEvent, detail in braces):
//  - `stream`  {pid, stream}   the remote media of a peer (a new MediaStream when its connection is replaced)
//  - `peer-closed` {pid}       the peer's connection was closed (left the roster, or we left)
//  - `state`   {pid, state}    connectionState of a peer's connection
//  - `levels`  {levels}        {pid: audioLevel 0..1} every ~400 ms, from getStats (active speaker)
//  - `share`   {pid, stream}   a peer's screen share started (stream) or stopped (stream null); lib/share.js

import { preferredCodecs, limitHeaderExtensions, setLimitedLocalDescription } from "./codecs.js";
import { encodingFor, FULL } from "./quality.js";
import { applyShareEncoding, isShareTransceiver, kindOf, shareStreamOf } from "./share.js";

/** @typedef {import("./protocol.js").Signaling} Signaling */
/** @typedef {import("./protocol.js").RosterEntry} RosterEntry */
/**
 * End-to-end encryption hooks (shared with sfu.js; built by ui/e2ee-view.js, see e2ee-flow.js). null = no E2EE.
 * @typedef {{
 *   prepareSender: (sender: RTCRtpSender, kind: string, stream?: number) => void,
 *   prepareReceiver: (receiver: RTCRtpReceiver, kind: string, pid: string|null, stream?: number) => void,
 *   signSdp: (to: string, type: "offer"|"answer", sdp: string) => Promise<string|null>,
 *   verifySdp: (from: string, type: "offer"|"answer", sdp: string, sig: string|null|undefined) => Promise<void>,
 *   ready: (pid: string) => Promise<void>,
 *   onSecurityFailure: (pid: string|null, error: any) => void,
 *   senderOfReceiver?: (receiver: RTCRtpReceiver) => string|null,
 *   addEventListener?: (type: string, listener: () => void) => void,
 * }} E2eeHooks
 */

/** How long the polite side waits for the other side's first offer before making its own. */
const FIRST_OFFER_WAIT_MS = 1500;

const FINGERPRINT = /^a=fingerprint:(.+)$/m;

/**
 * E2EE: VP8/Opus only, and the SFrame transforms on every sender and receiver that has none yet. Must run
 * before createOffer/setRemoteDescription (receiver transforms attached later never see a frame in Chromium).
 * @param {RTCPeerConnection} pc
 * @param {E2eeHooks} e2ee
 * @param {string|null} pid
 * @param {WeakSet<object>} done senders/receivers already prepared
 */
function protectTransceivers(pc, e2ee, pid, done) {
  for (const tr of pc.getTransceivers()) {
    const kind = kindOf(tr);
    if (!kind) continue;
    if (tr.setCodecPreferences) tr.setCodecPreferences(preferredCodecs(kind));
    limitHeaderExtensions(tr); // no audio level or other clear metadata the transport does not need
    // A share has its own SFrame stream (KID `stream`): its receiver takes no camera frame and the reverse.
    const stream = isShareTransceiver(pc, tr) ? shareStreamOf(kind) : undefined;
    if (!done.has(tr.sender)) { done.add(tr.sender); e2ee.prepareSender(tr.sender, kind, stream); }
    if (!done.has(tr.receiver)) { done.add(tr.receiver); e2ee.prepareReceiver(tr.receiver, kind, pid, stream); }
  }
}

/** @param {string|undefined|null} sdp */
function fingerprintOf(sdp) {
  const m = sdp ? FINGERPRINT.exec(sdp) : null;
  return m ? m[1].trim().replace(/\r$/, "") : null;
}

/** One remote peer: its connection and the state of perfect negotiation. */
class Peer {
  /**
   * @param {Call} call
   * @param {string} pid
   */
  constructor(call, pid) {
    this.call = call;
    this.pid = pid;
    // polite = my pid > their pid (as strings); the impolite side wins a glare.
    this.polite = call.pid > pid;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.waitedForOffer = false;
    this.closed = false;
    /** @type {Promise<void>} */
    this.queue = Promise.resolve();
    /** senders/receivers of the current connection that have their E2EE transforms (set by _create) */
    /** @type {WeakSet<object>} */
    this.prepared = new WeakSet();
    this.stream = new MediaStream();
    /** The peer's screen share while it sends one (lib/share.js), else null. @type {MediaStream|null} */
    this.shareStream = null;
    /** @type {MediaStreamTrack[]} the tracks of the peer's share m-lines */
    this.shareTracks = [];
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.disconnectTimer = null;
    /** E2EE: a signed-SDP or key check failed; nothing from this peer is applied any more. */
    this.refused = false;
    this.pc = this._create();
  }

  _create() {
    const call = this.call;
    /** @type {RTCConfiguration & {encodedInsertableStreams?: boolean}} */
    const config = { iceServers: call.iceServers };
    // Older Chromium without RTCRtpScriptTransform: the legacy encoded streams need this flag.
    if (call.e2ee && typeof RTCRtpScriptTransform !== "function") config.encodedInsertableStreams = true;
    const pc = new RTCPeerConnection(config);
    this.prepared = new WeakSet();
    const stream = call.localStream;
    const kinds = new Set();
    if (stream) {
      for (const track of stream.getTracks()) {
        const sender = pc.addTrack(track, stream);
        kinds.add(track.kind);
        if (track.kind === "video") call._applyEncoding(sender);
      }
    }
    for (const kind of ["audio", "video"]) {
      if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    }
    if (call.share) this.addShare(pc, call.share); // after the camera's: a later transceiver is a share
    if (call.e2ee) {
      try {
        protectTransceivers(pc, call.e2ee, this.pid, this.prepared);
      } catch (e) {
        // No VP8/Opus or no encoded transforms: refuse to send or receive anything (fail closed).
        this.refused = true;
        call.e2ee.onSecurityFailure(this.pid, e);
      }
    }
    pc.addEventListener("negotiationneeded", async () => {
      if (this.pc !== pc) return;
      if (this.polite && !pc.remoteDescription && !this.waitedForOffer) {
        // First negotiation: the impolite side offers at once and the polite side gives it a moment, so the
        // usual case needs no rollback (and a peer that cannot roll back, like aiortc, is never asked to).
        this.waitedForOffer = true;
        await new Promise((r) => setTimeout(r, FIRST_OFFER_WAIT_MS));
        if (this.pc !== pc || this.closed || pc.signalingState !== "stable" || pc.remoteDescription) return;
      }
      if (this.refused) return;
      try {
        this.makingOffer = true;
        if (call.e2ee) await setLimitedLocalDescription(pc); // Opus CBR, no clear header extensions
        else await pc.setLocalDescription();
        if (pc.localDescription && pc.localDescription.type === "offer") {
          await call._sendDescription(this.pid, "offer", pc.localDescription.sdp);
        }
      } catch (e) {
        call._log("offer failed", this.pid, e);
      } finally {
        this.makingOffer = false;
      }
    });
    pc.addEventListener("icecandidate", (ev) => {
      if (this.pc !== pc || !ev.candidate) return;
      call.signaling.candidate(this.pid, ev.candidate.toJSON());
    });
    pc.addEventListener("track", (ev) => {
      if (this.pc !== pc) return;
      const track = ev.track;
      if (isShareTransceiver(pc, ev.transceiver)) {
        // Not the camera: kept apart and shown when the negotiation says the peer sends it (_checkShare).
        if (!this.shareTracks.includes(track)) this.shareTracks.push(track);
        this._checkShare();
        return;
      }
      for (const old of this.stream.getTracks()) {
        if (old.kind === track.kind && old !== track) this.stream.removeTrack(old);
      }
      if (!this.stream.getTracks().includes(track)) this.stream.addTrack(track);
      call._emit("stream", { pid: this.pid, stream: this.stream });
    });
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc !== pc) return;
      const state = pc.connectionState;
      call._emit("state", { pid: this.pid, state });
      if (this.disconnectTimer) { clearTimeout(this.disconnectTimer); this.disconnectTimer = null; }
      if (state === "failed") {
        this.restartIce();
      } else if (state === "disconnected") {
        // Give ICE a few seconds to recover by itself before restarting it.
        this.disconnectTimer = setTimeout(() => {
          if (this.pc === pc && pc.connectionState === "disconnected") this.restartIce();
        }, 4000);
      }
    });
    return pc;
  }

  /**
   * Adds our share's tracks to a connection (sendonly; an earlier share's transceiver is reused when there is one).
   * @param {RTCPeerConnection} pc @param {MediaStream} share
   */
  addShare(pc, share) {
    for (const track of share.getTracks()) {
      const idle = pc.getTransceivers().find((tr) => isShareTransceiver(pc, tr) && kindOf(tr) === track.kind
        && !tr.sender.track && tr.direction !== "stopped" && tr.direction !== "recvonly" && tr.direction !== "sendrecv");
      if (idle) {
        idle.direction = "sendonly";
        idle.sender.replaceTrack(track).catch((e) => this.call._log("share replaceTrack", e));
        this.call.shareSenders.add(idle.sender);
      } else {
        const tr = pc.addTransceiver(track, { direction: "sendonly", streams: [share] });
        this.call.shareSenders.add(tr.sender);
      }
    }
    if (this.call.e2ee && pc === this.pc) {
      try { protectTransceivers(pc, this.call.e2ee, this.pid, this.prepared); } catch (e) { this.call._log("share e2ee", e); }
    }
  }

  /** Stops sending our share on this connection (the transceivers stay, inactive, for a later share). */
  removeShare() {
    for (const tr of this.pc.getTransceivers()) {
      if (!this.call.shareSenders.has(tr.sender)) continue;
      this.call.shareSenders.delete(tr.sender);
      tr.sender.replaceTrack(null).catch(() => {});
      if (tr.direction === "sendonly") tr.direction = "inactive";
      else if (tr.direction === "sendrecv") tr.direction = "recvonly";
    }
  }

  /** Whether the peer sends a share now (its m-line's negotiated direction), and tells the UI when that changes. */
  _checkShare() {
    const pc = this.pc;
    const live = pc.getTransceivers().filter((tr) => isShareTransceiver(pc, tr)
      && (tr.currentDirection === "recvonly" || tr.currentDirection === "sendrecv") && tr.receiver.track);
    const tracks = live.map((tr) => tr.receiver.track);
    const on = !this.refused && tracks.some((tr) => tr.kind === "video");
    if (!on) {
      if (this.shareStream) { this.shareStream = null; this.call._emit("share", { pid: this.pid, stream: null }); }
      return;
    }
    const same = this.shareStream && this.shareStream.getTracks().length === tracks.length
      && tracks.every((tr) => this.shareStream?.getTracks().includes(tr));
    if (same) return;
    this.shareStream = new MediaStream(tracks);
    this.call._emit("share", { pid: this.pid, stream: this.shareStream });
  }

  /** ICE restart: a new offer with fresh credentials (negotiationneeded fires after restartIce). */
  restartIce() {
    if (this.closed) return;
    this.call._log("ice restart", this.pid);
    try { this.pc.restartIce(); } catch (e) { this.call._log("restartIce", e); }
  }

  /** Replaces the connection (the remote side restarted, e.g. after a reload). */
  _replace() {
    const old = this.pc;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.waitedForOffer = false;
    this.stream = new MediaStream();
    this.shareTracks = [];
    if (this.shareStream) { this.shareStream = null; this.call._emit("share", { pid: this.pid, stream: null }); }
    this.pc = this._create();
    try { old.close(); } catch { /* ignore */ }
  }

  /** @param {() => Promise<void>} task */
  enqueue(task) {
    this.queue = this.queue.then(task).catch((e) => this.call._log("signaling task", this.pid, e));
    return this.queue;
  }

  /**
   * @param {"offer"|"answer"} type
   * @param {string} sdp
   */
  onDescription(type, sdp, sig = null) {
    return this.enqueue(async () => {
      if (this.closed || this.refused) return;
      const e2ee = this.call.e2ee;
      if (e2ee) {
        // Signed SDP: verified BEFORE setRemoteDescription; a failure is never applied.
        try {
          await e2ee.ready(this.pid);
          if (this.closed) return;
          await e2ee.verifySdp(this.pid, type, sdp, sig);
        } catch (e) {
          this.refused = true;
          this.call._log("security check failed", this.pid, e);
          e2ee.onSecurityFailure(this.pid, e);
          return;
        }
      }
      let pc = this.pc;
      if (type === "offer") {
        const current = pc.remoteDescription ? fingerprintOf(pc.remoteDescription.sdp) : null;
        const incoming = fingerprintOf(sdp);
        if (current && incoming && current !== incoming) {
          // The other side has a new connection (reload, new device): start afresh.
          this._replace();
          pc = this.pc;
        }
      }
      const offerCollision = type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && offerCollision;
      if (this.ignoreOffer) return;
      if (type === "answer" && pc.signalingState !== "have-local-offer") return; // stale answer
      await pc.setRemoteDescription({ type, sdp }); // rolls back our offer on a collision (polite side)
      if (type === "offer") {
        if (e2ee) protectTransceivers(pc, e2ee, this.pid, this.prepared); // m-lines the offer added
        if (e2ee) await setLimitedLocalDescription(pc);
        else await pc.setLocalDescription();
        if (pc.localDescription) await this.call._sendDescription(this.pid, "answer", pc.localDescription.sdp);
      }
      for (const s of pc.getSenders()) if (this.call.shareSenders.has(s)) applyShareEncoding(s, (...a) => this.call._log(...a));
      this._checkShare();
    });
  }

  /** @param {RTCIceCandidateInit} candidate */
  onCandidate(candidate) {
    return this.enqueue(async () => {
      if (this.closed) return;
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (e) {
        if (!this.ignoreOffer) this.call._log("candidate refused", this.pid, e);
      }
    });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.shareStream) { this.shareStream = null; this.call._emit("share", { pid: this.pid, stream: null }); }
    if (this.disconnectTimer) clearTimeout(this.disconnectTimer);
    try { this.pc.close(); } catch { /* ignore */ }
  }
}

/**
 * What the mesh `Call` and the SFU's `SfuCall` (sfu.js) share: the options, the signaling listeners they own,
 * events, the audio-level timer and stopping. Subclasses implement closeAll() and _pollLevels().
 */
export class MediaCall extends EventTarget {
  /**
   * @param {Signaling} signaling
   * @param {{pid: string, localStream?: MediaStream|null, iceServers?: RTCIceServer[], debug?: boolean,
   *          e2ee?: E2eeHooks|null}} options
   * @param {string} label for debug logs
   */
  constructor(signaling, options, label) {
    super();
    this.signaling = signaling;
    this.pid = options.pid;
    /** @type {MediaStream|null} */
    this.localStream = options.localStream || null;
    /** @type {RTCIceServer[]} never a public STUN server: only what the server sends */
    this.iceServers = options.iceServers || [];
    this.debug = !!options.debug;
    this._label = label;
    /** @type {E2eeHooks|null} */
    this.e2ee = options.e2ee || null;
    this.active = true;
    /** lib/quality.js level of the video we send. */
    this.videoLevel = FULL;
    /** Our screen share while we send one (lib/share.js), else null. @type {MediaStream|null} */
    this.share = null;
    /** The senders of our share (skipped by the camera's encodings). @type {WeakSet<RTCRtpSender>} */
    this.shareSenders = new WeakSet();
    /** @type {[string, EventListener][]} */
    this._listeners = [];
    this._listen("ice-servers", (m) => this.setIceServers(m.ice_servers || []));
    /** @type {ReturnType<typeof setInterval>|null} */
    this._levelTimer = setInterval(() => this._pollLevels(), 400);
  }

  /**
   * @param {string} type
   * @param {(msg: any) => void} fn
   */
  _listen(type, fn) {
    /** @type {EventListener} */
    const listener = (ev) => { if (this.active) fn(/** @type {CustomEvent} */ (ev).detail); };
    this.signaling.addEventListener(type, listener);
    this._listeners.push([type, listener]);
  }

  /** @param {...any} args */
  _log(...args) {
    if (this.debug) console.debug(`[${this._label}]`, ...args);
  }

  /** @param {string} type @param {any} detail */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {RTCIceServer[]} servers */
  setIceServers(servers) {
    this.iceServers = servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
  }

  /** Closes every connection (left, sent back to the waiting room, ended). Media stops at once. */
  closeAll() {}

  /** After our own reconnect: keep connections to peers the roster lacks for a while (the mesh does). @param {number} [ms] */
  hold(ms) { void ms; }

  /** This page sent `pid` back or removed it (the mesh closes its connection at once). @param {string} pid */
  forget(pid) { void pid; }

  /** Whether the browser's bandwidth estimate on these connections says what the link can carry (lib/quality.js). */
  get trustsBandwidthEstimate() { return true; }

  /** The peer connections of this call, for the link monitor (lib/quality.js). @returns {[string, RTCPeerConnection][]} */
  connections() { return []; }

  /**
   * Sends another camera track in place of one (the background blur, ui/blur.js, swaps the camera for its
   * blurred picture and back): the same senders with the same E2EE transforms, no renegotiation. Connections
   * made later take the track from the local stream, which the caller has already changed.
   * @param {MediaStreamTrack} from
   * @param {MediaStreamTrack} to
   */
  async replaceVideoTrack(from, to) {
    /** @type {Promise<void>[]} */
    const jobs = [];
    for (const [, pc] of this.connections()) {
      for (const sender of pc.getSenders()) {
        if (sender.track === from) jobs.push(sender.replaceTrack(to).catch(() => {}));
      }
    }
    await Promise.all(jobs);
  }

  /**
   * The video level to send at (lib/quality.js: 0 full, 1 low, 2 paused; audio is never touched).
   * @param {number} level
   */
  setVideoLevel(level) {
    const changed = level !== this.videoLevel;
    this.videoLevel = level;
    // Also when unchanged but lowered: a connection made since then starts at the call's own profile.
    if (changed || level !== FULL) this._applyVideo();
  }

  /** Re-applies the video encodings (the level and the call's own profile). */
  _applyVideo() {}

  /**
   * Sends a screen share (a stream from lib/share.js captureScreen) to everyone this call sends to; replaces a
   * share already sent. The caller decides who may share (the therapist's signed permission).
   * @param {MediaStream} stream
   */
  startShare(stream) {
    if (this.share) this.stopShare();
    this.share = stream;
    this._addShare(stream);
  }

  /** Stops sending the share (its tracks are the caller's to stop). */
  stopShare() {
    if (!this.share) return;
    this.share = null;
    this._removeShare();
  }

  /** @param {MediaStream} _stream */
  _addShare(_stream) {}

  _removeShare() {}

  async _pollLevels() {}

  /** Stops for good. */
  stop() {
    this.active = false;
    this.share = null;
    this.closeAll();
    if (this._levelTimer) clearInterval(this._levelTimer);
    for (const [type, l] of this._listeners) this.signaling.removeEventListener(type, l);
    this._listeners = [];
  }
}

/** Milliseconds after our own reconnect during which mesh connections to peers missing from the roster are kept
 * (as the Python participant's `Mesh.RESUME_HOLD`). */
export const RESUME_HOLD_MS = 10_000;

export class Call extends MediaCall {
  /**
   * @param {Signaling} signaling
   * @param {{pid: string, localStream?: MediaStream|null, iceServers?: RTCIceServer[], debug?: boolean,
   *          e2ee?: E2eeHooks|null}} options
   */
  constructor(signaling, options) {
    super(signaling, options, "call");
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** @type {number} divide the sent video resolution by this (mesh with many peers) */
    this.videoScale = 1;
    /** Until when (ms) connections to peers missing from the roster are kept: after our own reconnect. */
    this._holdUntil = 0;
    /** @type {Set<string>} peers kept through a hold while the roster lacked them */
    this._held = new Set();
    /** @type {Set<string>} peers the server listed since our own reconnect: one it then drops has left (sent back,
     * removed, gone) and is closed at once, hold or not */
    this._listedSinceHold = new Set();
    /** @type {RosterEntry[]} */
    this._roster = [];
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._holdTimer = null;
    this._listen("offer", (m) => this._peerFor(m.from).onDescription("offer", m.sdp, m.sig ?? null));
    this._listen("answer", (m) => { const p = this.peers.get(m.from); if (p) p.onDescription("answer", m.sdp, m.sig ?? null); });
    this._listen("candidate", (m) => {
      if (!m.candidate) return;
      const p = this._peerFor(m.from);
      p.onCandidate({ candidate: m.candidate, sdpMid: m.sdp_mid ?? null, sdpMLineIndex: m.sdp_mline_index ?? null });
    });
  }

  /**
   * Sends an offer/answer, signed when E2EE is on (docs/security.md §6).
   * @param {string} to @param {"offer"|"answer"} type @param {string} sdp
   */
  async _sendDescription(to, type, sdp) {
    const sig = this.e2ee ? await this.e2ee.signSdp(to, type, sdp) : null;
    this.signaling.send(type, { to, sdp, sig });
  }

  /** @param {string} pid */
  _peerFor(pid) {
    let peer = this.peers.get(pid);
    if (!peer) {
      peer = new Peer(this, pid);
      this.peers.set(pid, peer);
    }
    return peer;
  }

  /** @param {RTCIceServer[]} servers */
  setIceServers(servers) {
    super.setIceServers(servers);
    for (const peer of this.peers.values()) {
      try { peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers: this.iceServers }); } catch (e) { this._log("setConfiguration", e); }
    }
  }

  /**
   * Follows the roster: a connection to every other admitted participant, none to anybody else.
   * @param {RosterEntry[]} participants
   */
  updateRoster(participants) {
    if (!this.active) return;
    this._roster = participants;
    const others = participants.filter((p) => p.pid !== this.pid);
    const wanted = new Set(others.map((p) => p.pid));
    const holding = Date.now() < this._holdUntil;
    for (const pid of wanted) this._listedSinceHold.add(pid);
    for (const [pid, peer] of this.peers) {
      const gone = peer.pc.connectionState === "closed" || peer.pc.connectionState === "failed";
      if (!wanted.has(pid) && holding && !gone && !this._listedSinceHold.has(pid)) {
        this._held.add(pid);  // not resumed yet on a restarted server: its media may still flow
      } else if (!wanted.has(pid)) {
        peer.close();
        this.peers.delete(pid);
        this._held.delete(pid);
        this._emit("peer-closed", { pid });
      } else if (this._held.delete(pid) && peer.stream.getTracks().length) {
        this._emit("stream", { pid, stream: peer.stream });  // its tile was dropped meanwhile: show it again
      }
    }
    const scale = others.length >= 2 ? 2 : 1;
    const rescale = scale !== this.videoScale;
    this.videoScale = scale;
    for (const p of others) this._peerFor(p.pid);
    if (rescale) for (const peer of this.peers.values()) for (const s of peer.pc.getSenders()) this._applyEncoding(s);
  }

  /** @param {MediaStream} stream */
  _addShare(stream) { for (const peer of this.peers.values()) peer.addShare(peer.pc, stream); }

  _removeShare() { for (const peer of this.peers.values()) peer.removeShare(); }

  /** @param {RTCRtpSender} sender */
  _applyEncoding(sender) {
    if (!sender.track || sender.track.kind !== "video") return;
    if (this.shareSenders.has(sender)) { applyShareEncoding(sender, (...a) => this._log(...a)); return; }
    try {
      const params = sender.getParameters();
      if (!params.encodings || !params.encodings.length) return; // before negotiation; applied at rescale
      // With two or more peers every picture is small on screen: send at most about 320 pixels wide.
      const width = sender.track.getSettings().width || 640;
      const scale = this.videoScale > 1 ? Math.max(1, width / 320) : 1;
      const base = { scale, maxBitrate: scale > 1 || width <= 320 ? 350_000 : 900_000 };
      for (const e of params.encodings) encodingFor(e, this.videoLevel, base);
      sender.setParameters(params).catch((e) => this._log("setParameters", e));
    } catch (e) {
      this._log("encoding", e);
    }
  }

  /** @returns {[string, RTCPeerConnection][]} */
  connections() { return [...this.peers].map(([pid, peer]) => /** @type {[string, RTCPeerConnection]} */ ([pid, peer.pc])); }

  _applyVideo() { for (const peer of this.peers.values()) for (const s of peer.pc.getSenders()) this._applyEncoding(s); }

  /**
   * After our own reconnect (e.g. a restart of the server), the roster may lack peers that have not resumed yet:
   * keep their connections for `ms` instead of cutting media that still flows, then follow the roster again.
   * Keys are the therapist's signed membership, not this: a peer removed meanwhile gets no newer key.
   */
  hold(ms = RESUME_HOLD_MS) {
    this._holdUntil = Date.now() + ms;
    this._listedSinceHold = new Set();
    if (this._holdTimer) clearTimeout(this._holdTimer);
    this._holdTimer = setTimeout(() => { this._holdTimer = null; this.updateRoster(this._roster); }, ms + 10);
  }

  /** This page sent `pid` back or removed it: its connection closes now, whatever the roster says. @param {string} pid */
  forget(pid) {
    const peer = this.peers.get(pid);
    this._held.delete(pid);
    if (!peer) return;
    peer.close();
    this.peers.delete(pid);
    this._emit("peer-closed", { pid });
  }

  /** Restarts ICE on every connection (e.g. after the network came back). */
  restartAll() {
    for (const peer of this.peers.values()) {
      if (peer.pc.connectionState !== "connected") peer.restartIce();
    }
  }

  /** Closes every connection (left, sent back to the waiting room, ended). Media stops at once. */
  closeAll() {
    this._holdUntil = 0;
    this._held.clear();
    if (this._holdTimer) { clearTimeout(this._holdTimer); this._holdTimer = null; }
    for (const [pid, peer] of this.peers) {
      peer.close();
      this._emit("peer-closed", { pid });
    }
    this.peers.clear();
  }

  async _pollLevels() {
    if (!this.peers.size) return;
    /** @type {Record<string, number>} */
    const levels = {};
    for (const [pid, peer] of this.peers) {
      try {
        const report = await peer.pc.getStats();
        report.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "audio" && typeof s.audioLevel === "number") {
            levels[pid] = Math.max(levels[pid] || 0, s.audioLevel);
          }
        });
      } catch { /* closed meanwhile */ }
    }
    this._emit("levels", { levels });
  }

  /**
   * For tests and diagnostics: per remote peer sending a share, its video's decoded frames and frame size.
   * @returns {Promise<Record<string, {framesDecoded: number, width: number, height: number}>>}
   */
  async shareStats() {
    /** @type {Record<string, {framesDecoded: number, width: number, height: number}>} */
    const out = {};
    for (const [pid, peer] of this.peers) {
      const pc = peer.pc;
      for (const tr of pc.getTransceivers()) {
        if (kindOf(tr) !== "video" || !isShareTransceiver(pc, tr)) continue;
        if (tr.currentDirection !== "recvonly" && tr.currentDirection !== "sendrecv") continue;
        try {
          const report = await tr.receiver.getStats();
          report.forEach((s) => {
            if (s.type !== "inbound-rtp") return;
            out[pid] = { framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0 };
          });
        } catch { /* closed meanwhile */ }
      }
    }
    return out;
  }

  /**
   * For tests and diagnostics: per remote peer, the video frames decoded so far and the connection state.
   * @returns {Promise<Record<string, {framesDecoded: number, audioSamples: number, state: string}>>}
   */
  async stats() {
    /** @type {Record<string, {framesDecoded: number, audioSamples: number, state: string}>} */
    const out = {};
    for (const [pid, peer] of this.peers) {
      const entry = { framesDecoded: 0, audioSamples: 0, state: peer.pc.connectionState };
      try {
        const report = await peer.pc.getStats();
        report.forEach((s) => {
          if (s.type !== "inbound-rtp") return;
          if (s.kind === "video") entry.framesDecoded += s.framesDecoded || 0;
          if (s.kind === "audio") entry.audioSamples += s.totalSamplesReceived || 0;
        });
      } catch { /* closed meanwhile */ }
      out[pid] = entry;
    }
    return out;
  }
}
