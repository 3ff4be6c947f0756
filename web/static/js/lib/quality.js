// Connection quality and the video governor: what getStats says about a link, and how much video it can carry.
// No DOM here. The view polls `LinkMonitor` (or feeds `VideoGovernor` samples itself) and shows the result.
//
// A sample is one second of one peer connection, from the deltas of two getStats reports:
//   availableOutgoingBitrate  the sender's bandwidth estimate (bits/s) of the selected candidate pair
//   lossOut                   fraction of our packets the other side reports lost (remote-inbound-rtp)
//   lossIn                    fraction of the packets we expected that never came (inbound-rtp)
//   freezes                   video freezes we saw on what we receive (inbound-rtp freezeCount)
//   rtt                       round-trip time in seconds (candidate pair)
//   state                     the connection's connectionState
//
// Video levels: 0 full, 1 low (half resolution, at most LOW_BITRATE), 2 paused (audio only). The governor steps
// down after two bad seconds in a row and up only after a run of good ones; while paused it probes with the low
// level from time to time (a paused link sends too little for the estimate to recover on its own).

export const FULL = 0;
export const LOW = 1;
export const PAUSED = 2;

/** Bits per second a level needs (the estimate must stay above it). */
export const NEEDS = Object.freeze({ [FULL]: 300_000, [LOW]: 120_000 });
/** Highest loss fraction a level tolerates. */
export const MAX_LOSS = Object.freeze({ [FULL]: 0.08, [LOW]: 0.15 });
/** Encoder limit at the low level. */
export const LOW_BITRATE = 150_000;

const DOWN_AFTER = 2;
const UP_AFTER = 5;
const PROBE_FIRST_S = 8;
const PROBE_MAX_S = 60;
/** Seconds after the start and after a probe begins in which only loss counts: the estimate is still ramping. */
const RAMP_S = 6;

/**
 * @typedef {{availableOutgoingBitrate: number|null, lossOut: number|null, lossIn: number|null,
 *            freezes: number, rtt: number|null, state: string}} LinkSample
 * @typedef {"good"|"weak"|"reconnecting"} Quality
 */

/**
 * A getStats report as a plain list (RTCStatsReport, a Map, or an array of stats objects).
 * @param {any} report
 * @returns {any[]}
 */
function entries(report) {
  if (Array.isArray(report)) return report;
  /** @type {any[]} */
  const out = [];
  report.forEach((/** @type {any} */ s) => out.push(s));
  return out;
}

/**
 * Counters of one report that the next one is compared with.
 * @param {any} report
 */
export function countersOf(report) {
  const list = entries(report);
  let sentOut = 0, lostOut = 0, received = 0, lostIn = 0, freezes = 0;
  /** @type {any} */
  let pair = null;
  const transport = list.find((s) => s.type === "transport" && s.selectedCandidatePairId);
  for (const s of list) {
    if (s.type === "outbound-rtp") sentOut += s.packetsSent || 0;
    else if (s.type === "remote-inbound-rtp") lostOut += Math.max(0, s.packetsLost || 0);
    else if (s.type === "inbound-rtp") {
      received += s.packetsReceived || 0;
      lostIn += Math.max(0, s.packetsLost || 0);
      if (s.kind === "video") freezes += s.freezeCount || 0;
    } else if (s.type === "candidate-pair") {
      const selected = transport ? s.id === transport.selectedCandidatePairId : (s.nominated && s.state === "succeeded");
      if (selected) pair = s;
    }
  }
  return {
    sentOut, lostOut, received, lostIn, freezes,
    bitrate: pair && typeof pair.availableOutgoingBitrate === "number" ? pair.availableOutgoingBitrate : null,
    rtt: pair && typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime : null,
  };
}

/**
 * One sample from two consecutive counters (`countersOf`) of the same connection.
 * @param {ReturnType<typeof countersOf>|null} before
 * @param {ReturnType<typeof countersOf>} now
 * @param {string} state
 * @returns {LinkSample}
 */
export function sampleOf(before, now, state) {
  /** @param {number} lost @param {number} total */
  const fraction = (lost, total) => (total > 0 ? Math.min(1, Math.max(0, lost / total)) : null);
  if (!before) {
    return { availableOutgoingBitrate: now.bitrate, lossOut: null, lossIn: null, freezes: 0, rtt: now.rtt, state };
  }
  const sent = now.sentOut - before.sentOut;
  const lostOut = now.lostOut - before.lostOut;
  const got = now.received - before.received;
  const lostIn = now.lostIn - before.lostIn;
  return {
    availableOutgoingBitrate: now.bitrate,
    lossOut: fraction(lostOut, sent),
    lossIn: fraction(lostIn, got + lostIn),
    freezes: Math.max(0, now.freezes - before.freezes),
    rtt: now.rtt,
    state,
  };
}

/**
 * good / weak / reconnecting, for the small indicator of one participant.
 * @param {LinkSample} s
 * @returns {Quality}
 */
export function qualityOf(s) {
  if (s.state === "disconnected" || s.state === "failed" || s.state === "connecting" || s.state === "new") {
    return "reconnecting";
  }
  const loss = Math.max(s.lossOut ?? 0, s.lossIn ?? 0);
  const weak = loss > 0.05 || s.freezes > 0 || (s.rtt !== null && s.rtt > 0.4)
    || (s.availableOutgoingBitrate !== null && s.availableOutgoingBitrate < NEEDS[FULL]);
  return weak ? "weak" : "good";
}

/**
 * Whether a sample can carry `level` (0 or 1); `margin` > 1 asks for headroom (before stepping up).
 * @param {LinkSample} s @param {number} level @param {number} margin
 */
function carries(s, level, margin) {
  if (s.state !== "connected") return false;
  const rate = s.availableOutgoingBitrate;
  const loss = s.lossOut ?? 0;
  const rateOk = rate === null || rate >= NEEDS[/** @type {0|1} */ (level)] * margin;
  return rateOk && loss <= MAX_LOSS[/** @type {0|1} */ (level)] / margin;
}

/** Decides the video level of what we send from one sample a second. Time comes in as `now` (seconds). */
export class VideoGovernor {
  constructor() {
    this.level = FULL;
    this._bad = 0;
    this._good = 0;
    this._probeAt = 0;
    this._probeWait = PROBE_FIRST_S;
    this._probing = false;
    /** @type {number|null} until when only loss counts (the bandwidth estimate is ramping up) */
    this._rampUntil = null;
  }

  /**
   * @param {LinkSample} s
   * @param {number} now seconds
   * @returns {number} the level to send at
   */
  step(s, now) {
    if (s.state !== "connected") { this._bad = 0; this._good = 0; return this.level; } // reconnecting: wait
    if (this._rampUntil === null) this._rampUntil = now + RAMP_S;
    if (this.level < PAUSED) {
      const ramping = now < this._rampUntil;
      const ok = ramping ? (s.lossOut ?? 0) <= MAX_LOSS[/** @type {0|1} */ (this.level)] : carries(s, this.level, 1);
      if (!ok) {
        this._good = 0;
        if (++this._bad >= DOWN_AFTER) {
          this._bad = 0;
          if (this._probing) { this._probeWait = Math.min(PROBE_MAX_S, this._probeWait * 2); this._probing = false; }
          this.level += 1;
          if (this.level === PAUSED) this._probeAt = now + this._probeWait;
        }
        return this.level;
      }
      this._bad = 0;
      if (this.level === LOW && carries(s, FULL, 1.5)) {
        if (++this._good >= UP_AFTER) { this._good = 0; this.level = FULL; this._probing = false; this._probeWait = PROBE_FIRST_S; }
      } else {
        this._good = 0;
      }
      return this.level;
    }
    // Paused: only audio flows, so the estimate says little; loss on audio and a probe now and then decide.
    const lossOk = (s.lossOut ?? 0) <= MAX_LOSS[LOW] / 2;
    if (!lossOk) { this._probeAt = Math.max(this._probeAt, now + this._probeWait); return this.level; }
    if (now >= this._probeAt) {
      this.level = LOW;
      this._probing = true;
      this._rampUntil = now + RAMP_S;
      this._bad = 0;
      this._good = 0;
    }
    return this.level;
  }
}

/**
 * The encodings of a video sender for a level (`base` is what the call would use at full level).
 * @param {RTCRtpEncodingParameters} e
 * @param {number} level
 * @param {{scale: number, maxBitrate: number}} base
 */
export function encodingFor(e, level, base) {
  e.active = level !== PAUSED;
  e.scaleResolutionDownBy = level === LOW ? Math.max(2, base.scale * 2) : base.scale;
  e.maxBitrate = level === LOW ? Math.min(LOW_BITRATE, base.maxBitrate) : base.maxBitrate;
  return e;
}

/**
 * Polls the connections of a call once a second: a quality per connection, and one video level for what we send.
 * `connections()` returns `[[key, RTCPeerConnection], …]` (a pid for mesh, "sfu" for the SFU connection).
 * `onChange({level, quality, peers})` runs when the level, our quality or a peer connection's quality changes.
 */
export class LinkMonitor {
  /**
   * @param {() => [string, RTCPeerConnection][]} connections
   * @param {(state: {level: number, quality: Quality, peers: Record<string, Quality>}) => void} onChange
   * @param {{interval?: number, clock?: () => number, bitrate?: boolean}} [options] `bitrate: false` ignores
   *   the bandwidth estimate (the far end is the aiortc SFU: its REMB follows what it receives, so the estimate
   *   stays low on a healthy link); loss and freezes still count
   */
  constructor(connections, onChange, options = {}) {
    this.connections = connections;
    this.useBitrate = options.bitrate !== false;
    this.onChange = onChange;
    this.governor = new VideoGovernor();
    this.clock = options.clock || (() => performance.now() / 1000);
    /** @type {Map<string, ReturnType<typeof countersOf>>} */
    this._last = new Map();
    /** @type {Record<string, Quality>} */
    this.peers = {};
    /** @type {Quality} */
    this.quality = "good";
    this.level = FULL;
    this._timer = setInterval(() => { this.poll().catch(() => {}); }, options.interval || 1000);
  }

  async poll() {
    /** @type {Record<string, Quality>} */
    const peers = {};
    /** @type {LinkSample|null} */
    let worst = null;
    const now = this.clock();
    for (const [key, pc] of this.connections()) {
      let report;
      try { report = await pc.getStats(); } catch { continue; }
      const counters = countersOf(report);
      const sample = sampleOf(this._last.get(key) || null, counters, pc.connectionState);
      if (!this.useBitrate) sample.availableOutgoingBitrate = null;
      this._last.set(key, counters);
      peers[key] = qualityOf(sample);
      if (!worst || rank(sample) > rank(worst)) worst = sample;
    }
    for (const key of [...this._last.keys()]) if (!(key in peers)) this._last.delete(key);
    const level = worst ? this.governor.step(worst, now) : this.level;
    const quality = worst ? qualityOf(worst) : "good";
    const changed = level !== this.level || quality !== this.quality
      || JSON.stringify(peers) !== JSON.stringify(this.peers);
    this.level = level;
    this.quality = quality;
    this.peers = peers;
    if (changed) this.onChange({ level, quality, peers });
  }

  stop() { clearInterval(this._timer); }
}

/** How bad a sample is, to pick the connection that limits what we can send. @param {LinkSample} s */
function rank(s) {
  if (s.state !== "connected") return 3;
  if (!carries(s, LOW, 1)) return 2;
  if (!carries(s, FULL, 1)) return 1;
  return 0;
}
