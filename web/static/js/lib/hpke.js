// HPKE (RFC 9180) base mode on WebCrypto, for one suite only:
// DHKEM(P-256, HKDF-SHA256) = 0x0010, HKDF-SHA256 = 0x0001, AES-128-GCM = 0x0001.
//
// Vanilla ES module: no DOM; works in a page, a Worker and Node >= 20.
// Interoperates with Python's cryptography.hazmat.primitives.hpke.Suite(
//   KEM.P256, KDF.HKDF_SHA256, AEAD.AES_128_GCM), whose single-shot output is
//   enc (65-byte uncompressed point) || ciphertext, with an empty AAD.
//
// Used to wrap epoch secrets (design e2ee.md section 4).

import { concat } from "./sframe.js";

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();

export const KEM_ID = 0x0010;
export const KDF_ID = 0x0001;
export const AEAD_ID = 0x0001;
const N_SECRET = 32;
const N_ENC = 65;
const N_PK = 65;
const N_SK = 32;
const N_K = 16;
const N_N = 12;
const N_H = 32;
const MODE_BASE = 0x00;
// Order of the P-256 group.
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/** Any HPKE failure (bad input, decryption failure). */
export class HpkeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "HpkeError";
  }
}

/** @param {number | bigint} v @param {number} len @returns {Uint8Array} */
function i2osp(v, len) {
  let x = BigInt(v);
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  if (x !== 0n) throw new HpkeError("i2osp: value too large");
  return out;
}

/** @param {Uint8Array} b @returns {bigint} */
function os2ip(b) {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}

/** @param {Uint8Array} b @returns {string} */
function b64url(b) {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** @param {string} s @returns {Uint8Array} */
function unb64url(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

const HPKE_V1 = te.encode("HPKE-v1");
const KEM_SUITE_ID = concat(te.encode("KEM"), i2osp(KEM_ID, 2));
const HPKE_SUITE_ID = concat(te.encode("HPKE"), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(AEAD_ID, 2));

// --- HKDF-SHA256 built from HMAC (WebCrypto's HKDF cannot split extract/expand) ---

/** @param {Uint8Array} key @param {Uint8Array} data @returns {Promise<Uint8Array>} */
async function hmac(key, data) {
  const k = await subtle.importKey("raw", key.length ? key : new Uint8Array(N_H), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/** @param {Uint8Array} salt @param {Uint8Array} ikm */
async function extract(salt, ikm) {
  return hmac(salt, ikm);
}

/** @param {Uint8Array} prk @param {Uint8Array} info @param {number} length */
async function expand(prk, info, length) {
  if (length > 255 * N_H) throw new HpkeError("expand: length too large");
  const out = new Uint8Array(length);
  let prev = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++) {
    prev = await hmac(prk, concat(prev, info, Uint8Array.of(i)));
    const take = Math.min(prev.length, length - off);
    out.set(prev.subarray(0, take), off);
    off += take;
  }
  return out;
}

/** @param {Uint8Array} suiteId @param {Uint8Array} salt @param {string} label @param {Uint8Array} ikm */
async function labeledExtract(suiteId, salt, label, ikm) {
  return extract(salt, concat(HPKE_V1, suiteId, te.encode(label), ikm));
}

/** @param {Uint8Array} suiteId @param {Uint8Array} prk @param {string} label @param {Uint8Array} info @param {number} length */
async function labeledExpand(suiteId, prk, label, info, length) {
  return expand(prk, concat(i2osp(length, 2), HPKE_V1, suiteId, te.encode(label), info), length);
}

// --- Keys ---

/**
 * Import a recipient public key from its uncompressed SEC1 encoding (65 bytes).
 * @param {Uint8Array} raw @returns {Promise<CryptoKey>}
 */
export async function importPublicKey(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== N_PK || raw[0] !== 0x04)
    throw new HpkeError("public key must be a 65-byte uncompressed P-256 point");
  try {
    return await subtle.importKey("raw", raw, { name: "ECDH", namedCurve: "P-256" }, true, []);
  } catch {
    throw new HpkeError("invalid P-256 public key");
  }
}

/** Uncompressed SEC1 encoding (65 bytes) of a P-256 public key. @param {CryptoKey} key */
export async function exportPublicKey(key) {
  return new Uint8Array(await subtle.exportKey("raw", key));
}

/**
 * A fresh recipient key pair (the private key is not extractable).
 * @returns {Promise<CryptoKeyPair>}
 */
export async function generateKeyPair() {
  return /** @type {CryptoKeyPair} */ (
    await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"])
  );
}

/**
 * Import a private scalar (32 bytes) as an ECDH key pair. The public point is
 * computed by the WebCrypto implementation from a PKCS#8 blob without one.
 * @param {Uint8Array} sk @param {boolean} [extractable]
 * @returns {Promise<CryptoKeyPair>}
 */
export async function importPrivateScalar(sk, extractable = false) {
  if (sk.length !== N_SK) throw new HpkeError("private key must be 32 bytes");
  const pkcs8 = concat(
    Uint8Array.from([0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
    Uint8Array.from([0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25, 0x02, 0x01, 0x01]),
    Uint8Array.from([0x04, 0x20]),
    sk,
  );
  const tmp = await subtle.importKey("pkcs8", pkcs8, { name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
  const jwk = await subtle.exportKey("jwk", tmp);
  if (!jwk.x || !jwk.y) throw new HpkeError("could not compute the public key");
  const publicKey = await importPublicKey(concat(Uint8Array.of(0x04), unb64url(jwk.x), unb64url(jwk.y)));
  const privateKey = await subtle.importKey(
    "jwk",
    { kty: "EC", crv: "P-256", d: b64url(sk), x: jwk.x, y: jwk.y, ext: extractable },
    { name: "ECDH", namedCurve: "P-256" },
    extractable,
    ["deriveBits"],
  );
  return { privateKey, publicKey };
}

/**
 * RFC 9180 section 7.1.3 DeriveKeyPair for P-256 (deterministic; tests and vectors).
 * @param {Uint8Array} ikm
 * @returns {Promise<{privateKey: CryptoKey, publicKey: CryptoKey, sk: Uint8Array}>}
 */
export async function deriveKeyPair(ikm) {
  const dkpPrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), "dkp_prk", ikm);
  for (let counter = 0; counter < 256; counter++) {
    const bytes = await labeledExpand(KEM_SUITE_ID, dkpPrk, "candidate", i2osp(counter, 1), N_SK);
    bytes[0] &= 0xff;
    const sk = os2ip(bytes);
    if (sk !== 0n && sk < P256_ORDER) {
      const pair = await importPrivateScalar(bytes);
      return { ...pair, sk: bytes };
    }
  }
  throw new HpkeError("DeriveKeyPairError");
}

/** @param {CryptoKey} sk @param {CryptoKey} pk @returns {Promise<Uint8Array>} */
async function dh(sk, pk) {
  return new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: pk }, sk, 256));
}

/** @param {Uint8Array} dhBytes @param {Uint8Array} kemContext */
async function extractAndExpand(dhBytes, kemContext) {
  const eaePrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), "eae_prk", dhBytes);
  return labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", kemContext, N_SECRET);
}

/** @param {CryptoKey | Uint8Array} pk @returns {Promise<CryptoKey>} */
async function asPublicKey(pk) {
  return pk instanceof Uint8Array ? importPublicKey(pk) : pk;
}

// --- Context ---

/** An HPKE encryption context (sender or recipient). */
export class Context {
  /**
   * @param {CryptoKey} key @param {Uint8Array} baseNonce @param {Uint8Array} exporterSecret
   * @param {Uint8Array} sharedSecret
   */
  constructor(key, baseNonce, exporterSecret, sharedSecret) {
    this._key = key;
    this.baseNonce = baseNonce;
    this.exporterSecret = exporterSecret;
    this.sharedSecret = sharedSecret;
    this.seq = 0;
  }

  _nextNonce() {
    if (this.seq >= Number.MAX_SAFE_INTEGER) throw new HpkeError("message limit reached");
    const s = i2osp(this.seq, N_N);
    const nonce = new Uint8Array(N_N);
    for (let i = 0; i < N_N; i++) nonce[i] = this.baseNonce[i] ^ s[i];
    return nonce;
  }

  /** @param {Uint8Array} aad @param {Uint8Array} pt @returns {Promise<Uint8Array>} */
  async seal(aad, pt) {
    const nonce = this._nextNonce();
    this.seq++;
    return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, this._key, pt));
  }

  /** @param {Uint8Array} aad @param {Uint8Array} ct @returns {Promise<Uint8Array>} */
  async open(aad, ct) {
    const nonce = this._nextNonce();
    let pt;
    try {
      pt = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, this._key, ct));
    } catch {
      throw new HpkeError("decryption failed");
    }
    this.seq++;
    return pt;
  }

  /** Secret export (RFC 9180 section 5.3). @param {Uint8Array} context @param {number} length */
  async export(context, length) {
    return labeledExpand(HPKE_SUITE_ID, this.exporterSecret, "sec", context, length);
  }
}

/** @param {Uint8Array} sharedSecret @param {Uint8Array} info @returns {Promise<Context>} */
async function keySchedule(sharedSecret, info) {
  const empty = new Uint8Array(0);
  const pskIdHash = await labeledExtract(HPKE_SUITE_ID, empty, "psk_id_hash", empty);
  const infoHash = await labeledExtract(HPKE_SUITE_ID, empty, "info_hash", info);
  const ctx = concat(Uint8Array.of(MODE_BASE), pskIdHash, infoHash);
  const secret = await labeledExtract(HPKE_SUITE_ID, sharedSecret, "secret", empty);
  const keyBytes = await labeledExpand(HPKE_SUITE_ID, secret, "key", ctx, N_K);
  const baseNonce = await labeledExpand(HPKE_SUITE_ID, secret, "base_nonce", ctx, N_N);
  const exporterSecret = await labeledExpand(HPKE_SUITE_ID, secret, "exp", ctx, N_H);
  const key = await subtle.importKey("raw", keyBytes, "AES-GCM", false, ["encrypt", "decrypt"]);
  return new Context(key, baseNonce, exporterSecret, sharedSecret);
}

/**
 * SetupBaseS. `opts.ikmE` makes the ephemeral key deterministic: FOR TESTS ONLY.
 * @param {CryptoKey | Uint8Array} pkR recipient public key (CryptoKey or 65-byte point)
 * @param {Uint8Array} info
 * @param {{ikmE?: Uint8Array}} [opts]
 * @returns {Promise<{enc: Uint8Array, ctx: Context}>}
 */
export async function setupBaseS(pkR, info, opts = {}) {
  const pk = await asPublicKey(pkR);
  /** @type {{privateKey: CryptoKey, publicKey: CryptoKey}} */
  const eph = opts.ikmE
    ? await deriveKeyPair(opts.ikmE)
    : /** @type {CryptoKeyPair} */ (await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]));
  const dhBytes = await dh(eph.privateKey, pk);
  const enc = await exportPublicKey(eph.publicKey);
  const pkRm = await exportPublicKey(pk);
  const sharedSecret = await extractAndExpand(dhBytes, concat(enc, pkRm));
  return { enc, ctx: await keySchedule(sharedSecret, info) };
}

/**
 * SetupBaseR.
 * @param {Uint8Array} enc 65-byte encapsulated key
 * @param {{privateKey: CryptoKey, publicKey: CryptoKey}} recipient
 * @param {Uint8Array} info
 * @returns {Promise<Context>}
 */
export async function setupBaseR(enc, recipient, info) {
  if (!(enc instanceof Uint8Array) || enc.length !== N_ENC) throw new HpkeError("enc must be 65 bytes");
  const pkE = await importPublicKey(enc);
  const dhBytes = await dh(recipient.privateKey, pkE);
  const pkRm = await exportPublicKey(recipient.publicKey);
  const sharedSecret = await extractAndExpand(dhBytes, concat(enc, pkRm));
  return keySchedule(sharedSecret, info);
}

/**
 * Single-shot seal.
 * @param {CryptoKey | Uint8Array} pkR @param {Uint8Array} info @param {Uint8Array} aad @param {Uint8Array} pt
 * @returns {Promise<{enc: Uint8Array, ct: Uint8Array}>}
 */
export async function seal(pkR, info, aad, pt) {
  const { enc, ctx } = await setupBaseS(pkR, info);
  return { enc, ct: await ctx.seal(aad, pt) };
}

/**
 * Single-shot open; throws HpkeError on failure.
 * @param {{privateKey: CryptoKey, publicKey: CryptoKey}} recipient
 * @param {Uint8Array} enc @param {Uint8Array} info @param {Uint8Array} aad @param {Uint8Array} ct
 * @returns {Promise<Uint8Array>}
 */
export async function open(recipient, enc, info, aad, ct) {
  const ctx = await setupBaseR(enc, recipient, info);
  return ctx.open(aad, ct);
}

/**
 * The `enc || ct` format of Python's `hpke.Suite.encrypt` (empty AAD).
 * @param {CryptoKey | Uint8Array} pkR @param {Uint8Array} info @param {Uint8Array} pt
 */
export async function sealCombined(pkR, info, pt) {
  const { enc, ct } = await seal(pkR, info, new Uint8Array(0), pt);
  return concat(enc, ct);
}

/**
 * Inverse of sealCombined (Python's `hpke.Suite.decrypt`).
 * @param {{privateKey: CryptoKey, publicKey: CryptoKey}} recipient @param {Uint8Array} data @param {Uint8Array} info
 */
export async function openCombined(recipient, data, info) {
  if (data.length < N_ENC + 16) throw new HpkeError("ciphertext too short");
  return open(recipient, data.subarray(0, N_ENC), info, new Uint8Array(0), data.subarray(N_ENC));
}
