// One RTCPeerConnection to the forwarding SFU (sfu.js makes a new one after `media-ended` or a failure): the two
// sendonly publish transceivers with the group send profile, the recvonly pairs, the codec preference
// (codecs.js) and the E2EE transforms, put on before anything is negotiated (fail closed: a transceiver that
// cannot get them makes the connection unusable and reports a security failure). Negotiation is sfu.js's.

import { preferCodecs, limitHeaderExtensions, setLimitedLocalDescription } from "./codecs.js";
import { SHARE_PROFILE, shareStreamOf } from "./share.js";

/** Wait at most this long for ICE gathering before sending the first offer (the rest is trickled). */
const GATHER_WAIT_MS = 1500;
const AUDIO_MAX_BITRATE = 32_000;

/**
 * @typedef {{width: number, maxBitrate: number, maxFramerate: number}} SendProfile
 * @typedef {{framesDecoded: number, audioSamples: number}} MidCounters
 * @typedef {{iceServers: RTCIceServer[], localStream: MediaStream|null, profile: SendProfile,
 *            e2ee: import("./call.js").E2eeHooks|null, onSecurityFailure: (error: unknown) => void,
 *            log: (...args: any[]) => void}} ConnOptions
 */

export class Conn {
  /** @param {ConnOptions} options */
  constructor(options) {
    this.e2ee = options.e2ee;
    this._onSecurityFailure = options.onSecurityFailure;
    this._log = options.log;
    /** @type {RTCConfiguration & {encodedInsertableStreams?: boolean}} */
    const config = { iceServers: options.iceServers, bundlePolicy: "max-bundle" };
    // Older Chromium without RTCRtpScriptTransform: the legacy encoded streams (E2EE) need this flag.
    if (this.e2ee && typeof RTCRtpScriptTransform !== "function") config.encodedInsertableStreams = true;
    this.pc = new RTCPeerConnection(config);
    /** @type {{video: RTCRtpTransceiver|null, audio: RTCRtpTransceiver|null}} */
    this.publish = { video: null, audio: null };
    /** @type {{video: RTCRtpTransceiver, audio: RTCRtpTransceiver}[]} */
    this.pairs = [];
    /** Our screen share's sendonly transceivers (the SFU takes a second sendonly m-line of a kind as a share). */
    /** @type {{video: RTCRtpTransceiver|null, audio: RTCRtpTransceiver|null}} */
    this.share = { video: null, audio: null };
    /** The share (SfuCall.share) the last offer carried. @type {MediaStream|null} */
    this.shareSent = null;
    this.negotiations = 0;
    this.closed = false;
    this.offerSent = false;
    /** @type {((sdp: string|null) => void)|null} */
    this.answerWaiter = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.disconnectTimer = null;
    /** mid -> {pid, base}: frames decoded on that mid before the current publisher got it (stats) */
    /** @type {Map<string, {pid: string, base: MidCounters|null}>} */
    this.owners = new Map();
    const stream = options.localStream;
    const profile = options.profile;
    for (const kind of /** @type {const} */ (["video", "audio"])) {
      const track = stream ? stream.getTracks().find((tr) => tr.kind === kind) || null : null;
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: "sendonly", streams: stream ? [stream] : [] };
      if (kind === "video") {
        const width = (track && track.getSettings().width) || 640;
        init.sendEncodings = [{ maxBitrate: profile.maxBitrate, maxFramerate: profile.maxFramerate,
          scaleResolutionDownBy: Math.max(1, width / profile.width) }];
      } else {
        init.sendEncodings = [{ maxBitrate: AUDIO_MAX_BITRATE }];
      }
      const t = this.pc.addTransceiver(track || kind, init);
      this.publish[kind] = t;
      try {
        this._codecs(t, kind);
      } catch (e) {
        this.pc.close();
        throw e;
      }
    }
    /** @type {Promise<unknown>} the publish senders' E2EE transforms (the negotiation awaits them) */
    this.ready = Promise.all([
      this._protectSender(/** @type {RTCRtpTransceiver} */ (this.publish.video).sender, "video"),
      this._protectSender(/** @type {RTCRtpTransceiver} */ (this.publish.audio).sender, "audio"),
    ]);
  }

  /** @returns {RTCRtpTransceiver[]} */
  receivers() {
    return this.pairs.flatMap((p) => [p.video, p.audio]);
  }

  /** One more recvonly video + audio pair (for one more publisher), transforms on before the offer. */
  async addReceivePair() {
    const video = this.pc.addTransceiver("video", { direction: "recvonly" });
    const audio = this.pc.addTransceiver("audio", { direction: "recvonly" });
    this._codecs(video, "video");
    this._codecs(audio, "audio");
    this.pairs.push({ video, audio });
    await this._protectReceiver(video, "video");
    await this._protectReceiver(audio, "audio");
  }

  /**
   * Sends our screen share (or stops it: null): its own sendonly m-lines, encrypted under the share's SFrame
   * stream, kept inactive between shares. The caller renegotiates.
   * @param {MediaStream|null} stream
   */
  async setShare(stream) {
    for (const kind of /** @type {const} */ (["video", "audio"])) {
      const track = stream ? stream.getTracks().find((tr) => tr.kind === kind) || null : null;
      let t = this.share[kind];
      if (!track) {
        if (t) { await t.sender.replaceTrack(null); t.direction = "inactive"; }
        continue;
      }
      if (t) {
        t.direction = "sendonly";
        await t.sender.replaceTrack(track);
        continue;
      }
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: "sendonly", streams: stream ? [stream] : [] };
      if (kind === "video") init.sendEncodings = [{ maxBitrate: SHARE_PROFILE.maxBitrate, maxFramerate: SHARE_PROFILE.maxFramerate }];
      t = this.pc.addTransceiver(track, init);
      this.share[kind] = t;
      this._codecs(t, kind);
      await this._protectSender(t.sender, kind, shareStreamOf(kind));
    }
  }

  /** Waits for ICE gathering (bounded): the first offer carries our candidates, later ones are trickled. */
  async gathered() {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); clearTimeout(timer); resolve(null); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, GATHER_WAIT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  /** Video frames decoded and audio samples received so far, per mid. */
  async midCounters() {
    /** @type {Map<string, MidCounters>} */
    const out = new Map();
    try {
      const report = await this.pc.getStats();
      report.forEach((s) => {
        if (s.type !== "inbound-rtp" || !s.mid) return;
        const e = out.get(s.mid) || { framesDecoded: 0, audioSamples: 0 };
        if (s.kind === "video") e.framesDecoded += s.framesDecoded || 0;
        if (s.kind === "audio") e.audioSamples += s.totalSamplesReceived || 0;
        out.set(s.mid, e);
      });
    } catch { /* closed meanwhile */ }
    return out;
  }

  /** The offer: with E2EE, Opus CBR and no clear header extensions but the transport's (codecs.js). */
  async setLocalOffer() {
    if (this.e2ee) await setLimitedLocalDescription(this.pc);
    else await this.pc.setLocalDescription(await this.pc.createOffer());
  }

  /** Closes for good; a pending answer wait ends with null. */
  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.disconnectTimer) clearTimeout(this.disconnectTimer);
    if (this.answerWaiter) this.answerWaiter(null);
    try { this.pc.close(); } catch { /* ignore */ }
  }

  /**
   * VP8/Opus only. Without them E2EE cannot run (SFrame's clear prefixes are defined for VP8 and Opus): fail
   * closed. Without E2EE, offer what the browser has (the SFU refuses what it cannot forward).
   * @param {RTCRtpTransceiver} t @param {string} kind
   */
  _codecs(t, kind) {
    try {
      preferCodecs(t, kind);
      if (this.e2ee) limitHeaderExtensions(t); // no audio level or other clear metadata the transport does not need
    } catch (e) {
      if (this.e2ee) {
        this._onSecurityFailure(e);
        throw e;
      }
      this._log("codecs", e);
    }
  }

  /** @param {RTCRtpSender} sender @param {string} kind @param {number} [stream] SFrame KID stream (a share) */
  async _protectSender(sender, kind, stream) {
    if (!this.e2ee) return;
    try {
      await this.e2ee.prepareSender(sender, kind, stream);
    } catch (e) {
      this._onSecurityFailure(e);
      throw e;
    }
  }

  /** @param {RTCRtpTransceiver} t @param {string} kind */
  async _protectReceiver(t, kind) {
    if (!this.e2ee) return;
    try {
      await this.e2ee.prepareReceiver(t.receiver, kind, null);
    } catch (e) {
      this._onSecurityFailure(e);
      throw e;
    }
  }
}
