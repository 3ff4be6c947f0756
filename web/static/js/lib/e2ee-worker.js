// Alcove media E2EE worker: SFrame (sframe.js) on encoded frames.
//
// Start ONE per page, as a module worker, shared by every transform of every
// RTCPeerConnection, so SFrame counters continue across transform rebuilds:
//   const worker = new Worker("/static/js/lib/e2ee-worker.js", {type: "module"});
//
// Two ways to attach it (use exactly one per RTCPeerConnection):
//   - RTCRtpScriptTransform (preferred):
//       sender.transform = new RTCRtpScriptTransform(worker, {operation: "encrypt", kind: "video"});
//       receiver.transform = new RTCRtpScriptTransform(worker, {operation: "decrypt", kind: "video", peer: pid});
//     Receiver transforms must be attached BEFORE negotiation (see webrtc-notes §5).
//   - Legacy Chrome createEncodedStreams (PC created with {encodedInsertableStreams: true}):
//       const {readable, writable} = sender.createEncodedStreams();
//       worker.postMessage({type: "transform", readable, writable, options: {...}}, [readable, writable]);
//
// options: {operation: "encrypt" | "decrypt", kind: "audio" | "video", peer?: pid (string) | sender idx (number),
//           slot?: number (an SFU receiver: the pid whose key decrypts its frames is reported in stats.slots),
//           stream?: SFrame KID stream (docs/security.md §5): a sender encrypts under it (2 = screen video,
//           3 = screen audio; default 0 mic / 1 camera); a receiver given one decrypts only frames of that stream}.
//
// Key updates (normally posted by e2ee.js KeyState's `post`):
//   {type: "keys", epoch, sendIdx, baseKeys: {idx: Uint8Array(16)}, roster?: {pid: idx}, expiresAt?: ms}
//                              install decrypt-only; at its signed expiry the epoch is dropped (not sent with,
//                              not decrypted with) even if the page says nothing more
//   {type: "switch", epoch}    start sending with epoch (older epochs dropped 5 s later)
//   {type: "retire", epoch}    drop an epoch now
//   {type: "clear"}            drop everything (nothing is sent or decrypted any more)
//
// Fail closed: no sending key -> the frame is dropped (never sent in clear); a frame that does not
// decrypt is dropped (never enqueued). Empty frames pass unchanged.
// Every second the worker posts {type: "stats", sendEpoch, epochs, peers: {peer: {encrypted,
// decrypted, failed, dropped}}, streams: {KID stream: {encrypted, decrypted}} (transforms given a `stream`)}
// to the page (for the health badge).

import { FrameDecryptor, FrameEncryptor, clearPrefixLen, decodeHeader, parseKid } from "./sframe.js";

const RETIRE_AFTER_MS = 5000;

const encryptor = new FrameEncryptor();
const decryptor = new FrameDecryptor();
/** @type {Map<number, {sendIdx: number | null, baseKeys: Map<number, Uint8Array>, roster: Record<string, number>, expiresAt: number | null}>} */
const epochs = new Map();
/** @type {number | null} */
let sendEpoch = null;
/** The sending epoch expired and no newer one was switched to: nothing is sent ("reconnecting encryption"). */
let sendExpired = false;
/** @type {Map<string, {encrypted: number, decrypted: number, failed: number, dropped: number}>} */
const stats = new Map();
/** @type {Map<number, {encrypted: number, decrypted: number}>} screen-share frames per KID stream (2 video, 3 audio) */
const streamStats = new Map();
/** @param {number} stream */
function streamCounts(stream) {
  let c = streamStats.get(stream);
  if (!c) { c = { encrypted: 0, decrypted: 0 }; streamStats.set(stream, c); }
  return c;
}
/** @type {Map<number, string>} SFU receiver slot -> the pid whose key decrypted its newest frame (authenticated) */
const slotOwners = new Map();
/** @type {Map<number, number>} SFU receiver slot -> the KID stream of its newest decrypted frame (camera or share) */
const slotStreams = new Map();
/** @type {Set<any>} live encrypt transformers (RTCRtpScriptTransform), for keyframe requests */
const senders = new Set();
/** @type {Promise<void>} key updates are applied in order */
let chain = Promise.resolve();

/** @param {string} peer */
function statsFor(peer) {
  let s = stats.get(peer);
  if (!s) {
    s = { encrypted: 0, decrypted: 0, failed: 0, dropped: 0 };
    stats.set(peer, s);
  }
  return s;
}

/** @param {any} v @returns {Uint8Array} */
function bytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError("expected bytes");
}

/** The bytes as an ArrayBuffer of their own, without a copy when they already fill one. @param {Uint8Array} u */
function ownBuffer(u) {
  if (u.byteOffset === 0 && u.byteLength === u.buffer.byteLength) return u.buffer;
  return u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength);
}

/** Sender indices that `peer` (pid or idx) may use, newest epoch first. @param {any} peer @returns {number[] | null} */
function indicesOf(peer) {
  if (peer === undefined || peer === null) return null; // any roster member
  if (typeof peer === "number") return [peer];
  /** @type {number[]} */
  const out = [];
  for (const e of [...epochs.keys()].sort((a, b) => b - a)) {
    const idx = /** @type {any} */ (epochs.get(e)).roster[peer];
    if (idx !== undefined && !out.includes(idx)) out.push(idx);
  }
  return out;
}

/**
 * For a receiver that takes any roster member (SFU: a recvonly slot carries different publishers over time):
 * the pid and sender index named by the frame's SFrame header, so the counters (health badges) are per
 * publisher. Only a hint: the frame is then decrypted with that sender index's key, so "decrypted" is
 * authenticated. Null when the header names no roster member.
 * @param {"audio" | "video"} kind @param {Uint8Array} data @returns {{pid: string, idx: number} | null}
 */
function publisherOf(kind, data) {
  let idx;
  try {
    idx = parseKid(decodeHeader(data.subarray(clearPrefixLen(kind, data))).kid).senderIndex;
  } catch {
    return null;
  }
  for (const e of [...epochs.keys()].sort((a, b) => b - a)) {
    for (const [pid, i] of Object.entries(/** @type {any} */ (epochs.get(e)).roster)) if (i === idx) return { pid, idx };
  }
  return null;
}

/** The KID stream a protected frame names, or null. @param {"audio" | "video"} kind @param {Uint8Array} data */
function streamOf(kind, data) {
  try {
    return parseKid(decodeHeader(data.subarray(clearPrefixLen(kind, data))).kid).stream;
  } catch {
    return null;
  }
}

/** @param {number} epoch */
function retire(epoch) {
  decryptor.removeEpoch(epoch);
  epochs.delete(epoch);
  if (epoch === sendEpoch) encryptor.clear();
}

/** Drops every epoch past its signed expiry (a withheld switch must not keep a removed member's key alive). */
function expireDue() {
  const now = Date.now();
  for (const [epoch, e] of [...epochs]) {
    if (e.expiresAt === null || e.expiresAt > now) continue;
    if (epoch === sendEpoch) sendExpired = true;
    retire(epoch);
  }
}

/** @param {any} msg */
async function applyKeys(msg) {
  switch (msg.type) {
    case "keys": {
      const epoch = Number(msg.epoch);
      if (epochs.has(epoch)) return;
      /** @type {Map<number, Uint8Array>} */
      const baseKeys = new Map();
      for (const [idx, key] of Object.entries(msg.baseKeys ?? {})) baseKeys.set(Number(idx), bytes(key));
      for (const [idx, key] of baseKeys) await decryptor.addKey(epoch, idx, key);
      const expiresAt = Number.isFinite(msg.expiresAt) ? Number(msg.expiresAt) : null;
      epochs.set(epoch, { sendIdx: msg.sendIdx ?? null, baseKeys, roster: { ...(msg.roster ?? {}) }, expiresAt });
      return;
    }
    case "switch": {
      const epoch = Number(msg.epoch);
      const entry = epochs.get(epoch);
      if (!entry || (sendEpoch !== null && epoch <= sendEpoch)) return;
      const key = entry.sendIdx === null ? undefined : entry.baseKeys.get(entry.sendIdx);
      if (entry.sendIdx === null || !key) encryptor.clear();
      else await encryptor.setKey(epoch, entry.sendIdx, key);
      sendEpoch = epoch;
      sendExpired = false;
      for (const old of [...epochs.keys()]) {
        if (old < epoch) setTimeout(() => retire(old), RETIRE_AFTER_MS);
      }
      for (const t of senders) {
        try {
          await t.generateKeyFrame?.();
        } catch {
          // not supported for this kind / no frames yet
        }
      }
      return;
    }
    case "retire":
      retire(Number(msg.epoch));
      return;
    case "clear":
      encryptor.clear();
      for (const e of [...epochs.keys()]) retire(e);
      sendEpoch = null;
      sendExpired = false;
      return;
    default:
      return;
  }
}

/**
 * @param {ReadableStream} readable @param {WritableStream} writable
 * @param {{operation: string, kind: "audio" | "video", peer?: string | number, slot?: number, stream?: number}} options
 * @param {any} [transformer]
 */
function handle(readable, writable, options, transformer) {
  const kind = options.kind === "audio" ? "audio" : "video";
  const stream = typeof options.stream === "number" ? options.stream : undefined;
  if (options.operation === "encrypt") {
    const s = statsFor("self");
    if (transformer) senders.add(transformer);
    const ts = new TransformStream({
      async transform(frame, controller) {
        const data = new Uint8Array(frame.data);
        if (data.length === 0) {
          controller.enqueue(frame);
          return;
        }
        expireDue();
        if (sendExpired) {
          s.dropped++; // the epoch expired: never send under a key a removed member may hold
          return;
        }
        let out;
        try {
          out = await encryptor.protect(kind, data, stream);
        } catch {
          s.dropped++; // no key (or counter exhausted): never send in clear
          return;
        }
        frame.data = ownBuffer(out);
        s.encrypted++;
        if (stream !== undefined) streamCounts(stream).encrypted++;
        controller.enqueue(frame);
      },
    });
    readable
      .pipeThrough(ts)
      .pipeTo(writable)
      .catch(() => {})
      .finally(() => senders.delete(transformer));
    return;
  }
  const peer = options.peer === undefined || options.peer === null ? "any" : String(options.peer);
  const s = statsFor(peer);
  const ts = new TransformStream({
    async transform(frame, controller) {
      const data = new Uint8Array(frame.data);
      if (data.length === 0) {
        controller.enqueue(frame);
        return;
      }
      expireDue();
      if (stream !== undefined && streamOf(kind, data) !== stream) {
        s.failed++; // a receiver of one stream (a screen share) takes no frame of another
        return;
      }
      if (epochs.size === 0) {
        s.dropped++; // no key yet
        return;
      }
      const idxs = indicesOf(options.peer);
      let out = null;
      let counts = s;
      if (idxs === null) {
        const from = publisherOf(kind, data);
        if (from) out = await decryptor.unprotect(kind, data, from.idx);
        if (from && out !== null) {
          counts = statsFor(from.pid);
          if (typeof options.slot === "number") {
            slotOwners.set(options.slot, from.pid);
            const st = streamOf(kind, data);
            if (st !== null) slotStreams.set(options.slot, st);
          }
        } else {
          out = await decryptor.unprotect(kind, data, null);
          if (from && out === null) counts = statsFor(from.pid); // its failure, shown on its tile
        }
      } else {
        for (const idx of idxs) {
          out = await decryptor.unprotect(kind, data, idx);
          if (out !== null) break;
        }
      }
      if (out === null) {
        counts.failed++; // drop: never enqueue a frame that did not authenticate
        return;
      }
      frame.data = ownBuffer(out);
      counts.decrypted++;
      const st = stream ?? streamOf(kind, data); // SFU slots take any stream: a share's frames say so in their KID
      if (st !== null && st >= 2) streamCounts(st).decrypted++;
      controller.enqueue(frame);
    },
  });
  readable.pipeThrough(ts).pipeTo(writable).catch(() => {});
}

// RTCRtpScriptTransform
// @ts-ignore - worker global
self.onrtctransform = (/** @type {any} */ event) => {
  const t = event.transformer;
  handle(t.readable, t.writable, t.options ?? {}, t);
};

self.onmessage = (/** @type {MessageEvent} */ event) => {
  const msg = event.data ?? {};
  if (msg.type === "transform") {
    // Legacy createEncodedStreams: the page transfers the streams.
    handle(msg.readable, msg.writable, msg.options ?? {});
    return;
  }
  chain = chain.then(() => applyKeys(msg)).catch((e) => {
    self.postMessage({ type: "error", message: String(e?.message ?? e) });
  });
};

setInterval(() => {
  /** @type {Record<string, any>} */
  const peers = {};
  for (const [k, v] of stats) peers[k] = { ...v };
  expireDue();
  self.postMessage({
    type: "stats", sendEpoch, sendExpired, epochs: [...epochs.keys()].sort((a, b) => a - b), peers,
    slots: Object.fromEntries(slotOwners),
    slotStreams: Object.fromEntries(slotStreams),
    streams: Object.fromEntries([...streamStats].map(([k, v]) => [k, { ...v }])),
  });
}, 1000);
