// SFrame (RFC 9605) for Alcove media frames, on WebCrypto.
//
// Vanilla ES module: no imports, no DOM. Works in a page, in a (dedicated)
// Worker and in Node >= 20 (globalThis.crypto.subtle).
//
// Two layers, mirroring peer/sframe.py:
//  - RFC 9605: header encode/decode (KID/CTR as BigInt, up to 2^64-1),
//    cipher suites 1-5, deriveKeySalt, protect/unprotect (Appendix C vectors).
//  - Alcove (suite 4 only): epochBaseKey, makeKid, the VP8/Opus clear-prefix
//    rule and the FrameEncryptor/FrameDecryptor classes.
//
// Wire format of a protected frame: clear_prefix || header || ciphertext+tag,
// with AAD = header || clear_prefix. See docs/design e2ee.md section 3.

/** @typedef {"audio" | "video"} FrameKind */
/** @typedef {number | bigint} IntLike */

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();

const MAX_U64 = (1n << 64n) - 1n;
/** The sender refuses to encrypt once CTR reaches this value (asks for a rekey). */
export const MAX_SEND_CTR = 2 ** 32;
/** Size of the per-KID anti-replay window, in frames. */
export const REPLAY_WINDOW = 128;
/** The only suite Alcove negotiates: AES_128_GCM_SHA256_128. */
export const ALCOVE_SUITE = 4;

export const STREAM_MIC = 0;
export const STREAM_CAMERA = 1;
export const STREAM_SCREEN_VIDEO = 2;
export const STREAM_SCREEN_AUDIO = 3;
/** @type {Record<number, FrameKind>} */
const STREAM_KIND = { 0: "audio", 1: "video", 2: "video", 3: "audio" };
/** @type {Record<FrameKind, number>} */
const DEFAULT_STREAM = { audio: STREAM_MIC, video: STREAM_CAMERA };

const KEY_LABEL = te.encode("SFrame 1.0 Secret key ");
const SALT_LABEL = te.encode("SFrame 1.0 Secret salt ");
const BASE_KEY_LABEL = te.encode("SFrame 1.0 Base Key");
const ALCOVE_SALT = te.encode("alcove-e2ee v1");

/** Any SFrame failure: malformed header, bad parameters, authentication failure. */
export class SFrameError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "SFrameError";
  }
}

/** The sender's counter reached its limit; a new epoch (rekey) is required. */
export class SFrameCounterExhausted extends SFrameError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "SFrameCounterExhausted";
  }
}

// ---------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------

/** @param {string} hex @returns {Uint8Array} */
export function hexToBytes(hex) {
  if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) throw new SFrameError("bad hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

/** @param {Uint8Array} bytes @returns {string} */
export function bytesToHex(bytes) {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** @param {...Uint8Array} parts @returns {Uint8Array} */
export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Big-endian encoding of a non-negative integer into exactly `len` bytes.
 * @param {bigint} value @param {number} len @returns {Uint8Array} */
function toBE(value, len) {
  const out = new Uint8Array(len);
  let v = value;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (v !== 0n) throw new SFrameError("value does not fit");
  return out;
}

/** @param {Uint8Array} bytes @returns {bigint} */
function fromBE(bytes) {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

/** @param {IntLike} v @param {string} what @returns {bigint} */
function toU64(v, what) {
  let b;
  try {
    b = BigInt(v);
  } catch {
    throw new SFrameError(`${what} is not an integer`);
  }
  if (b < 0n || b > MAX_U64) throw new SFrameError(`${what} out of range: ${b}`);
  return b;
}

/** @param {bigint} v @returns {number} */
function minLen(v) {
  let n = 1;
  while (v >> BigInt(8 * n) !== 0n) n++;
  return n;
}

// ---------------------------------------------------------------------------
// Header (RFC 9605 section 4.3)
// ---------------------------------------------------------------------------

/**
 * Minimal SFrame header for (kid, ctr).
 * @param {IntLike} kid @param {IntLike} ctr @returns {Uint8Array}
 */
export function encodeHeader(kid, ctr) {
  const k = toU64(kid, "KID");
  const c = toU64(ctr, "CTR");
  let config = 0;
  /** @type {Uint8Array[]} */
  const tail = [];
  if (k < 8n) {
    config |= Number(k) << 4;
  } else {
    const n = minLen(k);
    config |= 0x80 | ((n - 1) << 4);
    tail.push(toBE(k, n));
  }
  if (c < 8n) {
    config |= Number(c);
  } else {
    const n = minLen(c);
    config |= 0x08 | (n - 1);
    tail.push(toBE(c, n));
  }
  return concat(Uint8Array.of(config), ...tail);
}

/**
 * Decode the header at the start of `data`.
 * @param {Uint8Array} data
 * @returns {{kid: bigint, ctr: bigint, length: number}}
 */
export function decodeHeader(data) {
  if (data.length < 1) throw new SFrameError("empty SFrame header");
  const config = data[0];
  let pos = 1;
  let kid, ctr;
  if (config & 0x80) {
    const n = ((config >> 4) & 0x07) + 1;
    if (data.length < pos + n) throw new SFrameError("truncated SFrame header (KID)");
    kid = fromBE(data.subarray(pos, pos + n));
    pos += n;
  } else {
    kid = BigInt((config >> 4) & 0x07);
  }
  if (config & 0x08) {
    const n = (config & 0x07) + 1;
    if (data.length < pos + n) throw new SFrameError("truncated SFrame header (CTR)");
    ctr = fromBE(data.subarray(pos, pos + n));
    pos += n;
  } else {
    ctr = BigInt(config & 0x07);
  }
  return { kid, ctr, length: pos };
}

// ---------------------------------------------------------------------------
// Cipher suites (RFC 9605 section 4.5)
// ---------------------------------------------------------------------------

/**
 * @typedef {{id: number, hash: "SHA-256" | "SHA-512", nh: number, nk: number, nn: number,
 *            nt: number, ctrHmac: boolean, encKeyLen: number}} CipherSuite
 */

/** @type {Record<number, CipherSuite>} */
export const SUITES = {
  1: { id: 1, hash: "SHA-256", nh: 32, nk: 48, nn: 12, nt: 10, ctrHmac: true, encKeyLen: 16 },
  2: { id: 2, hash: "SHA-256", nh: 32, nk: 48, nn: 12, nt: 8, ctrHmac: true, encKeyLen: 16 },
  3: { id: 3, hash: "SHA-256", nh: 32, nk: 48, nn: 12, nt: 4, ctrHmac: true, encKeyLen: 16 },
  4: { id: 4, hash: "SHA-256", nh: 32, nk: 16, nn: 12, nt: 16, ctrHmac: false, encKeyLen: 16 },
  5: { id: 5, hash: "SHA-512", nh: 64, nk: 32, nn: 12, nt: 16, ctrHmac: false, encKeyLen: 32 },
};

/** @param {number} suite @returns {CipherSuite} */
export function getSuite(suite) {
  const cs = SUITES[suite];
  if (!cs) throw new SFrameError(`unsupported cipher suite ${suite}`);
  return cs;
}

/** @param {"SHA-256"|"SHA-512"} hash @param {Uint8Array} key @param {Uint8Array} data */
async function hmacSign(hash, key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/**
 * HKDF-Extract (RFC 5869). An empty salt means HashLen zero bytes.
 * @param {"SHA-256"|"SHA-512"} hash @param {Uint8Array} salt @param {Uint8Array} ikm
 * @returns {Promise<Uint8Array>}
 */
export async function hkdfExtract(hash, salt, ikm) {
  const s = salt.length ? salt : new Uint8Array(hash === "SHA-256" ? 32 : 64);
  return hmacSign(hash, s, ikm);
}

/**
 * HKDF-Expand (RFC 5869).
 * @param {"SHA-256"|"SHA-512"} hash @param {Uint8Array} prk @param {Uint8Array} info @param {number} length
 * @returns {Promise<Uint8Array>}
 */
export async function hkdfExpand(hash, prk, info, length) {
  const k = await subtle.importKey("raw", prk, { name: "HMAC", hash }, false, ["sign"]);
  const out = new Uint8Array(length);
  let prev = new Uint8Array(0);
  let off = 0;
  for (let i = 1; off < length; i++) {
    if (i > 255) throw new SFrameError("HKDF-Expand length too large");
    prev = new Uint8Array(await subtle.sign("HMAC", k, concat(prev, info, Uint8Array.of(i))));
    const take = Math.min(prev.length, length - off);
    out.set(prev.subarray(0, take), off);
    off += take;
  }
  return out;
}

/**
 * RFC 9605 section 4.4.2: sframe_key / sframe_salt for one KID.
 * @param {number} suite @param {IntLike} kid @param {Uint8Array} baseKey
 * @returns {Promise<{secret: Uint8Array, key: Uint8Array, salt: Uint8Array, keyLabel: Uint8Array, saltLabel: Uint8Array}>}
 */
export async function deriveKeySalt(suite, kid, baseKey) {
  const cs = getSuite(suite);
  const suffix = concat(toBE(toU64(kid, "KID"), 8), toBE(BigInt(suite), 2));
  const keyLabel = concat(KEY_LABEL, suffix);
  const saltLabel = concat(SALT_LABEL, suffix);
  const secret = await hkdfExtract(cs.hash, new Uint8Array(0), baseKey);
  const key = await hkdfExpand(cs.hash, secret, keyLabel, cs.nk);
  const salt = await hkdfExpand(cs.hash, secret, saltLabel, cs.nn);
  return { secret, key, salt, keyLabel, saltLabel };
}

/**
 * nonce = salt XOR CTR (CTR big-endian, left-padded to the nonce length).
 * @param {Uint8Array} salt @param {IntLike} ctr @returns {Uint8Array}
 */
export function makeNonce(salt, ctr) {
  const c = toBE(toU64(ctr, "CTR"), salt.length);
  const out = new Uint8Array(salt.length);
  for (let i = 0; i < salt.length; i++) out[i] = salt[i] ^ c[i];
  return out;
}

/**
 * Imported WebCrypto keys for one suite key (import once, reuse per frame).
 * @typedef {{suite: CipherSuite, gcm?: CryptoKey, ctr?: CryptoKey, mac?: CryptoKey}} SuiteKey
 */

/**
 * @param {number} suite @param {Uint8Array} key @returns {Promise<SuiteKey>}
 */
export async function importSuiteKey(suite, key) {
  const cs = getSuite(suite);
  if (key.length !== cs.nk) throw new SFrameError("bad key length");
  if (cs.ctrHmac) {
    const ctr = await subtle.importKey("raw", key.subarray(0, cs.encKeyLen), "AES-CTR", false, [
      "encrypt",
      "decrypt",
    ]);
    const mac = await subtle.importKey(
      "raw",
      key.subarray(cs.encKeyLen),
      { name: "HMAC", hash: cs.hash },
      false,
      ["sign"],
    );
    return { suite: cs, ctr, mac };
  }
  const gcm = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
  return { suite: cs, gcm };
}

/** @param {number} suite @param {Uint8Array | SuiteKey} key @returns {Promise<SuiteKey>} */
async function asSuiteKey(suite, key) {
  if (key instanceof Uint8Array) return importSuiteKey(suite, key);
  if (key.suite.id !== suite) throw new SFrameError("key imported for another suite");
  return key;
}

/** @param {SuiteKey} sk @param {Uint8Array} nonce @param {Uint8Array} aad @param {Uint8Array} ct */
async function ctrHmacTag(sk, nonce, aad, ct) {
  const cs = sk.suite;
  const lens = concat(toBE(BigInt(aad.length), 8), toBE(BigInt(ct.length), 8), toBE(BigInt(cs.nt), 8));
  const mac = new Uint8Array(
    await subtle.sign("HMAC", /** @type {CryptoKey} */ (sk.mac), concat(lens, nonce, aad, ct)),
  );
  return mac.subarray(0, cs.nt);
}

/** @param {Uint8Array} nonce */
function ctrBlock(nonce) {
  return concat(nonce, new Uint8Array(4));
}

/**
 * The suite's AEAD; returns ciphertext || tag.
 * @param {number} suite @param {Uint8Array | SuiteKey} key @param {Uint8Array} nonce
 * @param {Uint8Array} aad @param {Uint8Array} pt @returns {Promise<Uint8Array>}
 */
export async function aeadEncrypt(suite, key, nonce, aad, pt) {
  const sk = await asSuiteKey(suite, key);
  if (nonce.length !== sk.suite.nn) throw new SFrameError("bad nonce length");
  if (sk.suite.ctrHmac) {
    const ct = new Uint8Array(
      await subtle.encrypt(
        { name: "AES-CTR", counter: ctrBlock(nonce), length: 32 },
        /** @type {CryptoKey} */ (sk.ctr),
        pt,
      ),
    );
    return concat(ct, await ctrHmacTag(sk, nonce, aad, ct));
  }
  return new Uint8Array(
    await subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 },
      /** @type {CryptoKey} */ (sk.gcm),
      pt,
    ),
  );
}

/**
 * Inverse of aeadEncrypt; throws SFrameError on failure.
 * @param {number} suite @param {Uint8Array | SuiteKey} key @param {Uint8Array} nonce
 * @param {Uint8Array} aad @param {Uint8Array} ct @returns {Promise<Uint8Array>}
 */
export async function aeadDecrypt(suite, key, nonce, aad, ct) {
  const sk = await asSuiteKey(suite, key);
  const cs = sk.suite;
  if (nonce.length !== cs.nn) throw new SFrameError("bad nonce length");
  if (ct.length < cs.nt) throw new SFrameError("ciphertext shorter than the tag");
  if (cs.ctrHmac) {
    const body = ct.subarray(0, ct.length - cs.nt);
    const tag = ct.subarray(ct.length - cs.nt);
    const want = await ctrHmacTag(sk, nonce, aad, body);
    let diff = 0;
    for (let i = 0; i < cs.nt; i++) diff |= tag[i] ^ want[i];
    if (diff !== 0) throw new SFrameError("authentication failed");
    return new Uint8Array(
      await subtle.decrypt(
        { name: "AES-CTR", counter: ctrBlock(nonce), length: 32 },
        /** @type {CryptoKey} */ (sk.ctr),
        body,
      ),
    );
  }
  try {
    return new Uint8Array(
      await subtle.decrypt(
        { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 },
        /** @type {CryptoKey} */ (sk.gcm),
        ct,
      ),
    );
  } catch {
    throw new SFrameError("authentication failed");
  }
}

/**
 * RFC 9605 section 4.4.3: returns header || ciphertext || tag (aad = header || metadata).
 * @param {number} suite @param {Uint8Array | SuiteKey} key @param {Uint8Array} salt
 * @param {IntLike} kid @param {IntLike} ctr @param {Uint8Array} metadata @param {Uint8Array} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function protect(suite, key, salt, kid, ctr, metadata, plaintext) {
  const header = encodeHeader(kid, ctr);
  const nonce = makeNonce(salt, ctr);
  return concat(header, await aeadEncrypt(suite, key, nonce, concat(header, metadata), plaintext));
}

/**
 * RFC 9605 section 4.4.4 for a known key/salt.
 * @param {number} suite @param {Uint8Array | SuiteKey} key @param {Uint8Array} salt
 * @param {Uint8Array} metadata @param {Uint8Array} data
 * @returns {Promise<{kid: bigint, ctr: bigint, plaintext: Uint8Array}>}
 */
export async function unprotect(suite, key, salt, metadata, data) {
  const { kid, ctr, length } = decodeHeader(data);
  const header = data.subarray(0, length);
  const nonce = makeNonce(salt, ctr);
  const plaintext = await aeadDecrypt(suite, key, nonce, concat(header, metadata), data.subarray(length));
  return { kid, ctr, plaintext };
}

// ---------------------------------------------------------------------------
// Alcove layer (suite 4)
// ---------------------------------------------------------------------------

/**
 * base_key = HKDF-Expand(HKDF-Extract(salt="alcove-e2ee v1"||room, E_n), "SFrame 1.0 Base Key", 16)
 * @param {Uint8Array} epochSecret @param {string} roomId @returns {Promise<Uint8Array>}
 */
export async function epochBaseKey(epochSecret, roomId) {
  const prk = await hkdfExtract("SHA-256", concat(ALCOVE_SALT, te.encode(roomId)), epochSecret);
  return hkdfExpand("SHA-256", prk, BASE_KEY_LABEL, 16);
}

/**
 * KID = (stream << 8) | (sender_index << 4) | (epoch mod 16)
 * @param {number} stream @param {number} senderIndex @param {number} epoch @returns {number}
 */
export function makeKid(stream, senderIndex, epoch) {
  if (!Number.isInteger(stream) || stream < 0 || stream > 3) throw new SFrameError(`stream out of range: ${stream}`);
  if (!Number.isInteger(senderIndex) || senderIndex < 0 || senderIndex > 15)
    throw new SFrameError(`senderIndex out of range: ${senderIndex}`);
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new SFrameError(`epoch out of range: ${epoch}`);
  return (stream << 8) | (senderIndex << 4) | epoch % 16;
}

/**
 * @param {IntLike} kid
 * @returns {{stream: number, senderIndex: number, epochLow: number}}
 */
export function parseKid(kid) {
  const k = BigInt(kid);
  if (k < 0n || k >= 0x400n) throw new SFrameError(`not an Alcove KID: ${k}`);
  const n = Number(k);
  return { stream: n >> 8, senderIndex: (n >> 4) & 0x0f, epochLow: n & 0x0f };
}

/**
 * Clear-prefix length, computed from the bytes (byte 0 is always clear, so sender
 * and receiver agree). VP8: 10 for a keyframe (bit 0 of byte 0 == 0) else 3; Opus: 1.
 * @param {FrameKind} kind @param {Uint8Array} frame @returns {number}
 */
export function clearPrefixLen(kind, frame) {
  if (frame.length === 0) return 0;
  if (kind === "video") return (frame[0] & 0x01) === 0 ? 10 : 3;
  if (kind === "audio") return 1;
  throw new SFrameError(`unknown frame kind ${kind}`);
}

/**
 * Alcove wire format: clear_prefix || header || ciphertext+tag, AAD = header || clear_prefix.
 * Frames shorter than the prefix stay clear and carry an SFrame of an empty plaintext.
 * @param {FrameKind} kind @param {Uint8Array | SuiteKey} key @param {Uint8Array} salt
 * @param {IntLike} kid @param {IntLike} ctr @param {Uint8Array} frame @returns {Promise<Uint8Array>}
 */
export async function protectFrame(kind, key, salt, kid, ctr, frame) {
  if (frame.length === 0) return new Uint8Array(0);
  const n = Math.min(clearPrefixLen(kind, frame), frame.length);
  const prefix = frame.subarray(0, n);
  return concat(prefix, await protect(ALCOVE_SUITE, key, salt, kid, ctr, prefix, frame.subarray(n)));
}

/**
 * Possible (prefixLen, kid, ctr, headerLen) splits of a protected frame. Shorter
 * prefixes only when the rest is exactly one header plus a tag (empty plaintext).
 * @param {FrameKind} kind @param {Uint8Array} data
 * @returns {{n: number, kid: bigint, ctr: bigint, hlen: number}[]}
 */
function splitCandidates(kind, data) {
  const full = clearPrefixLen(kind, data);
  const tagLen = SUITES[ALCOVE_SUITE].nt;
  const out = [];
  for (let n = full; n > 0; n--) {
    if (data.length <= n) continue;
    let h;
    try {
      h = decodeHeader(data.subarray(n));
    } catch {
      continue;
    }
    const rest = data.length - n - h.length;
    if ((n === full && rest >= tagLen) || (n < full && rest === tagLen)) {
      out.push({ n, kid: h.kid, ctr: h.ctr, hlen: h.length });
    }
  }
  return out;
}

/**
 * Inverse of protectFrame for one known key; throws SFrameError on failure.
 * @param {FrameKind} kind @param {Uint8Array | SuiteKey} key @param {Uint8Array} salt @param {Uint8Array} data
 * @returns {Promise<{kid: bigint, ctr: bigint, frame: Uint8Array}>}
 */
export async function unprotectFrame(kind, key, salt, data) {
  if (data.length === 0) return { kid: 0n, ctr: 0n, frame: new Uint8Array(0) };
  const sk = await asSuiteKey(ALCOVE_SUITE, key);
  for (const c of splitCandidates(kind, data)) {
    const prefix = data.subarray(0, c.n);
    const header = data.subarray(c.n, c.n + c.hlen);
    try {
      const pt = await aeadDecrypt(
        ALCOVE_SUITE,
        sk,
        makeNonce(salt, c.ctr),
        concat(header, prefix),
        data.subarray(c.n + c.hlen),
      );
      return { kid: c.kid, ctr: c.ctr, frame: concat(prefix, pt) };
    } catch {
      // try the next split
    }
  }
  throw new SFrameError("frame did not authenticate");
}

/**
 * @typedef {{epoch: number, senderIndex: number, stream: number, kid: number,
 *            key: Uint8Array, salt: Uint8Array, sk: SuiteKey}} KidKey
 */

/** @param {number} epoch @param {number} senderIndex @param {number} stream @param {Uint8Array} baseKey
 * @returns {Promise<KidKey>} */
async function kidKey(epoch, senderIndex, stream, baseKey) {
  const kid = makeKid(stream, senderIndex, epoch);
  const { key, salt } = await deriveKeySalt(ALCOVE_SUITE, kid, baseKey);
  return { epoch, senderIndex, stream, kid, key, salt, sk: await importSuiteKey(ALCOVE_SUITE, key) };
}

/** @param {number} epoch @param {number} senderIndex @param {Uint8Array} baseKey
 * @returns {Promise<Map<number, KidKey>>} */
async function allStreamKeys(epoch, senderIndex, baseKey) {
  if (!(baseKey instanceof Uint8Array) || baseKey.length !== 16) throw new SFrameError("base key must be 16 bytes");
  const m = new Map();
  for (const s of [0, 1, 2, 3]) m.set(s, await kidKey(epoch, senderIndex, s, baseKey));
  return m;
}

/** @param {FrameKind} kind @param {number | undefined | null} stream @returns {number} */
function streamFor(kind, stream) {
  if (kind !== "audio" && kind !== "video") throw new SFrameError(`unknown frame kind ${kind}`);
  if (stream === undefined || stream === null) return DEFAULT_STREAM[kind];
  if (STREAM_KIND[stream] !== kind) throw new SFrameError(`stream ${stream} does not carry ${kind}`);
  return stream;
}

/**
 * Per-sender SFrame encryptor (suite 4). Counters are kept per (epoch, KID) for the
 * object's lifetime, so setKey() again for the same epoch continues them. Fails
 * closed: protect() throws without a key, or once CTR reaches 2^32.
 */
export class FrameEncryptor {
  constructor() {
    /** @type {number | null} */
    this.epoch = null;
    this.senderIndex = 0;
    /** @type {Map<number, KidKey>} */
    this._keys = new Map();
    /** @type {Map<string, number>} */
    this._counters = new Map();
    this.frames = 0;
  }

  /**
   * Switch sending to `epoch` (epochs never go backwards).
   * @param {number} epoch @param {number} senderIndex @param {Uint8Array} baseKey
   */
  async setKey(epoch, senderIndex, baseKey) {
    const keys = await allStreamKeys(epoch, senderIndex, baseKey);
    // Checks happen after the await so that concurrent calls cannot interleave badly.
    if (this.epoch !== null && epoch < this.epoch)
      throw new SFrameError(`epoch ${epoch} is older than the current epoch ${this.epoch}`);
    if (this.epoch !== null && epoch === this.epoch && senderIndex !== this.senderIndex)
      throw new SFrameError("senderIndex cannot change inside an epoch");
    for (const k of [...this._counters.keys()]) {
      if (Number(k.split(":")[0]) < epoch) this._counters.delete(k);
    }
    this.epoch = epoch;
    this.senderIndex = senderIndex;
    this._keys = keys;
  }

  /** Forget the sending key (subsequent protect() calls fail). */
  clear() {
    this._keys = new Map();
  }

  /**
   * @param {FrameKind} kind @param {Uint8Array} frame @param {number} [stream]
   * @returns {Promise<Uint8Array>}
   */
  async protect(kind, frame, stream) {
    if (frame.length === 0) return new Uint8Array(0);
    const s = streamFor(kind, stream);
    const kk = this._keys.get(s);
    if (!kk) throw new SFrameError("no sending key");
    // Reserve the counter synchronously (before any await): never reused.
    const slot = `${kk.epoch}:${kk.kid}`;
    const ctr = this._counters.get(slot) ?? 0;
    if (ctr >= MAX_SEND_CTR) throw new SFrameCounterExhausted("SFrame counter exhausted; rekey required");
    this._counters.set(slot, ctr + 1);
    this.frames++;
    return protectFrame(kind, kk.sk, kk.salt, kk.kid, ctr, frame);
  }
}

/** 128-frame sliding anti-replay window. */
class ReplayWindow {
  constructor() {
    this.highest = -1n;
    this.bitmap = 0n; // bit i set = (highest - i) seen
  }

  /** @param {bigint} ctr */
  check(ctr) {
    if (ctr > this.highest) return true;
    const diff = this.highest - ctr;
    if (diff >= BigInt(REPLAY_WINDOW)) return false;
    return ((this.bitmap >> diff) & 1n) === 0n;
  }

  /** @param {bigint} ctr */
  mark(ctr) {
    const w = BigInt(REPLAY_WINDOW);
    if (ctr > this.highest) {
      const shift = ctr - this.highest;
      this.bitmap = shift < w ? ((this.bitmap << shift) | 1n) & ((1n << w) - 1n) : 1n;
      this.highest = ctr;
    } else {
      this.bitmap |= 1n << (this.highest - ctr);
    }
  }
}

/**
 * @typedef {{epoch: number, senderIndex: number, keys: Map<number, KidKey>,
 *            windows: Map<number, ReplayWindow>}} RingEntry
 */

/**
 * SFrame receiver: key ring by KID, per-KID replay window, drop on failure.
 * unprotect() resolves to the plaintext frame, or null on any failure; never
 * to ciphertext. `failures` and `decrypted` count outcomes.
 */
export class FrameDecryptor {
  constructor() {
    /** @type {Map<string, RingEntry>} keyed by `${senderIndex}:${epoch % 16}` */
    this._ring = new Map();
    this.failures = 0;
    this.decrypted = 0;
  }

  /**
   * Install a key; replaces any epoch with the same low 4 bits for this sender.
   * @param {number} epoch @param {number} senderIndex @param {Uint8Array} baseKey
   */
  async addKey(epoch, senderIndex, baseKey) {
    const keys = await allStreamKeys(epoch, senderIndex, baseKey);
    const slot = `${senderIndex}:${epoch % 16}`;
    const old = this._ring.get(slot);
    if (old && old.epoch > epoch) throw new SFrameError(`epoch ${epoch} is older than installed epoch ${old.epoch}`);
    const same = old && old.epoch === epoch && bytesToHex(old.keys.get(0)?.key ?? new Uint8Array(0)) === bytesToHex(keys.get(0)?.key ?? new Uint8Array(0));
    if (same) return; // idempotent: keep the replay state
    this._ring.set(slot, { epoch, senderIndex, keys, windows: new Map() });
  }

  /** Retire an epoch (all senders). @param {number} epoch */
  removeEpoch(epoch) {
    for (const [slot, e] of [...this._ring]) if (e.epoch === epoch) this._ring.delete(slot);
  }

  /** @param {number} senderIndex */
  removeSender(senderIndex) {
    for (const [slot, e] of [...this._ring]) if (e.senderIndex === senderIndex) this._ring.delete(slot);
  }

  /** @returns {Set<number>} */
  epochs() {
    return new Set([...this._ring.values()].map((e) => e.epoch));
  }

  /**
   * @param {FrameKind} kind @param {Uint8Array} data @param {number | null} [expectedSenderIndex]
   * @returns {Promise<Uint8Array | null>}
   */
  async unprotect(kind, data, expectedSenderIndex = null) {
    if (data.length === 0) return new Uint8Array(0);
    /** @type {ReturnType<typeof splitCandidates>} */
    let candidates;
    try {
      candidates = splitCandidates(kind, data);
    } catch {
      candidates = [];
    }
    for (const c of candidates) {
      if (c.kid >= 0x400n || c.ctr >= BigInt(MAX_SEND_CTR)) continue;
      const { stream, senderIndex, epochLow } = parseKid(c.kid);
      if (STREAM_KIND[stream] !== kind) continue;
      if (expectedSenderIndex !== null && expectedSenderIndex !== undefined && senderIndex !== expectedSenderIndex)
        continue;
      const slot = `${senderIndex}:${epochLow}`;
      const entry = this._ring.get(slot);
      if (!entry) continue;
      const kidNum = Number(c.kid);
      const pre = entry.windows.get(kidNum);
      if (pre && !pre.check(c.ctr)) continue;
      const kk = /** @type {KidKey} */ (entry.keys.get(stream));
      const prefix = data.subarray(0, c.n);
      const header = data.subarray(c.n, c.n + c.hlen);
      let pt;
      try {
        pt = await aeadDecrypt(
          ALCOVE_SUITE,
          kk.sk,
          makeNonce(kk.salt, c.ctr),
          concat(header, prefix),
          data.subarray(c.n + c.hlen),
        );
      } catch {
        continue;
      }
      // Re-check after the await: the key may have been retired, or a concurrent
      // call may have accepted the same CTR meanwhile.
      if (this._ring.get(slot) !== entry) continue;
      let win = entry.windows.get(kidNum);
      if (!win) {
        win = new ReplayWindow();
        entry.windows.set(kidNum, win);
      }
      if (!win.check(c.ctr)) continue;
      win.mark(c.ctr);
      this.decrypted++;
      return concat(prefix, pt);
    }
    this.failures++;
    return null;
  }
}
