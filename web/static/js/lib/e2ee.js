// Alcove E2EE key protocol (v2), on WebCrypto: intro, grant, reveal, SAS, epochs,
// switch, signed SDP, and the KeyState glue to SFrame (sframe.js / e2ee-worker.js).
//
// Vanilla ES module: no DOM. Works in a page, a Worker and Node >= 20. The same
// protocol is implemented in peer/e2ee.py; tests/unit/test_e2ee_interop.py runs
// the two against each other. The protocol is written down in docs/security.md.
//
// Every message that crosses the signaling server is an opaque JSON string
// {"p": "<payload JSON string>", "sig": "<b64url raw r||s>"} (the intro also has
// "mac"); signatures are over the UTF-8 bytes of p, so nobody canonicalises JSON.

import * as S from "./sframe.js";
import * as H from "./hpke.js";

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();

export const PROTOCOL_VERSION = 2;
/** An epoch is good for this long after it is issued (ms); its expiry is signed. */
export const EPOCH_LIFETIME_MS = 10 * 60 * 1000;
/** The therapist issues a new epoch this long after the current one (well before its expiry). */
export const REKEY_AFTER_MS = EPOCH_LIFETIME_MS / 2;
/** A client refuses an epoch that claims to be good for longer than this from its own clock (ms). */
export const MAX_EPOCH_AHEAD_MS = EPOCH_LIFETIME_MS + 5 * 60 * 1000;
/** A client keeps at most this many announced HPKE private keys (the oldest is erased first). */
export const MAX_HPKE_KEYS = 8;
/** Longest display name carried in a signed roster (code points). */
export const MAX_NAME = 64;
/** Old epoch stays decrypt-only this long after a switch (ms). */
export const RETIRE_AFTER_MS = 5000;
/** The therapist switches after all acks or after this long (ms). */
export const SWITCH_TIMEOUT_MS = 1500;
/** Maximum clock difference accepted on signed SDP (ms). */
export const SDP_MAX_SKEW_MS = 5 * 60 * 1000;
export const MAX_MEMBERS = 16;

const SALT = te.encode("alcove-e2ee v1");
const SAS_INFO = te.encode("alcove-e2ee sas v1");
const EPOCH_INFO = te.encode("alcove-e2ee epoch");
const ECDSA = { name: "ECDSA", namedCurve: "P-256" };
const ECDSA_SIGN = { name: "ECDSA", hash: "SHA-256" };

/** The 64 SAS emoji (Matrix SAS list) by index; the same order as peer/e2ee.py EMOJI. Their names are words of
 * the page's language, so they live in the catalogs (`sas.<index>` in i18n/*.js), not here.
 * @type {ReadonlyArray<string>} */
export const EMOJI = Object.freeze([
  "\ud83d\udc36", "\ud83d\udc31", "\ud83e\udd81", "\ud83d\udc0e", "\ud83e\udd84", "\ud83d\udc37", "\ud83d\udc18", "\ud83d\udc30",
  "\ud83d\udc3c", "\ud83d\udc13", "\ud83d\udc27", "\ud83d\udc22", "\ud83d\udc1f", "\ud83d\udc19", "\ud83e\udd8b", "\ud83c\udf37",
  "\ud83c\udf33", "\ud83c\udf35", "\ud83c\udf44", "\ud83c\udf0f", "\ud83c\udf19", "\u2601\ufe0f", "\ud83d\udd25", "\ud83c\udf4c",
  "\ud83c\udf4e", "\ud83c\udf53", "\ud83c\udf3d", "\ud83c\udf55", "\ud83c\udf82", "\u2764\ufe0f", "\ud83d\ude00", "\ud83e\udd16",
  "\ud83c\udfa9", "\ud83d\udc53", "\ud83d\udd27", "\ud83c\udf85", "\ud83d\udc4d", "\u2602\ufe0f", "\u231b", "\u23f0",
  "\ud83c\udf81", "\ud83d\udca1", "\ud83d\udcd5", "\u270f\ufe0f", "\ud83d\udcce", "\u2702\ufe0f", "\ud83d\udd12", "\ud83d\udd11",
  "\ud83d\udd28", "\u260e\ufe0f", "\ud83c\udfc1", "\ud83d\ude82", "\ud83d\udeb2", "\u2708\ufe0f", "\ud83d\ude80", "\ud83c\udfc6",
  "\u26bd", "\ud83c\udfb8", "\ud83c\udfba", "\ud83d\udd14", "\u2693", "\ud83c\udfa7", "\ud83d\udcc1", "\ud83d\udccc",
]);

/** A signed message or SDP did not verify. The UI shows "security check failed". */
export class SecurityCheckFailed extends Error {
  /** @param {string} [detail] */
  constructor(detail = "") {
    super(detail ? `security check failed: ${detail}` : "security check failed");
    this.name = "SecurityCheckFailed";
    this.detail = detail;
  }
}

/**
 * An intro with a new identity key for a pid the therapist granted before: a new person. It is never keyed
 * under the old grant; only a new Admit (makeGrant) lets it in.
 */
export class NewPerson extends SecurityCheckFailed {
  /** @param {string} [detail] */
  constructor(detail = "") {
    super(detail);
    this.name = "NewPerson";
  }
}

/** @param {unknown} value @returns {string} */
function clipName(value) {
  return typeof value === "string" ? [...value].slice(0, MAX_NAME).join("") : "";
}

// ---------------------------------------------------------------------------
// Encodings and primitives
// ---------------------------------------------------------------------------

/** base64url without padding. @param {Uint8Array} bytes @returns {string} */
export function b64e(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Strict inverse of b64e; throws TypeError. @param {string} text @returns {Uint8Array} */
export function b64d(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1)
    throw new TypeError("not base64url");
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (b64e(out) !== text) throw new TypeError("non-canonical base64url");
  return out;
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function eq(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** @param {Uint8Array} data @returns {Promise<Uint8Array>} */
async function sha256(data) {
  return new Uint8Array(await subtle.digest("SHA-256", data));
}

/** HKDF-SHA256 (empty salt = 32 zero bytes, as in Python). */
async function hkdf(/** @type {Uint8Array} */ ikm, /** @type {Uint8Array} */ salt, /** @type {Uint8Array} */ info,
  /** @type {number} */ length) {
  return S.hkdfExpand("SHA-256", await S.hkdfExtract("SHA-256", salt, ikm), info, length);
}

/** @param {Uint8Array} key @param {Uint8Array} data @returns {Promise<Uint8Array>} */
async function hmacSha256(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/** Uncompressed SEC1 point (65 bytes) of a public CryptoKey. @param {CryptoKey} key */
export async function pubRaw(key) {
  return new Uint8Array(await subtle.exportKey("raw", key));
}

/** The link's tk: first 16 bytes of SHA-256(raw IK_T). @param {Uint8Array} ikRaw */
export async function tkOf(ikRaw) {
  return (await sha256(ikRaw)).subarray(0, 16);
}

/** K_auth = HKDF-SHA256(ikm=S_link, salt="alcove-e2ee v1", info="auth"||room, 32).
 * @param {Uint8Array} sLink @param {string} room */
export async function kAuth(sLink, room) {
  return hkdf(sLink, SALT, S.concat(te.encode("auth"), te.encode(room)), 32);
}

/** @param {Uint8Array} raw @returns {Promise<CryptoKey>} */
async function importVerifyKey(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== 65 || raw[0] !== 0x04) throw new SecurityCheckFailed("bad public key");
  try {
    return await subtle.importKey("raw", raw, ECDSA, true, ["verify"]);
  } catch {
    throw new SecurityCheckFailed("bad public key");
  }
}

/** A fresh ECDSA P-256 identity (non-extractable private key). @returns {Promise<CryptoKeyPair>} */
export async function generateIdentity() {
  return /** @type {CryptoKeyPair} */ (await subtle.generateKey(ECDSA, false, ["sign", "verify"]));
}

/**
 * The therapist's long-term IK_T, kept as a non-extractable CryptoKey in IndexedDB (one per device).
 * @param {{dbName?: string, id?: string}} [opts] @returns {Promise<CryptoKeyPair>}
 */
export async function loadOrCreateIdentity(opts = {}) {
  const dbName = opts.dbName ?? "alcove-e2ee";
  const id = opts.id ?? "ik_t";
  const idb = globalThis.indexedDB;
  if (!idb) throw new Error("IndexedDB is not available");
  /** @type {IDBDatabase} */
  const db = await new Promise((resolve, reject) => {
    const req = idb.open(dbName, 1);
    req.onupgradeneeded = () => req.result.createObjectStore("keys");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  /** @param {IDBTransactionMode} mode @param {(s: IDBObjectStore) => IDBRequest} fn */
  const run = (mode, fn) =>
    new Promise((resolve, reject) => {
      const req = fn(db.transaction("keys", mode).objectStore("keys"));
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  try {
    const found = /** @type {CryptoKeyPair | undefined} */ (await run("readonly", (s) => s.get(id)));
    if (found && found.privateKey && found.publicKey) return found;
    const pair = await generateIdentity();
    await run("readwrite", (s) => s.put({ privateKey: pair.privateKey, publicKey: pair.publicKey }, id));
    return pair;
  } finally {
    db.close();
  }
}

/** @param {CryptoKey} priv @param {Uint8Array} data @returns {Promise<Uint8Array>} */
async function sign(priv, data) {
  return new Uint8Array(await subtle.sign(ECDSA_SIGN, priv, data));
}

/** @param {Uint8Array} pub @param {Uint8Array} sig @param {Uint8Array} data */
async function verify(pub, sig, data) {
  if (sig.length !== 64) return false;
  const key = await importVerifyKey(pub);
  return subtle.verify(ECDSA_SIGN, key, sig, data);
}

/** @typedef {{p: string, sig: string, mac?: string | null}} Envelope */
/** @typedef {Record<string, any>} Payload */

/** @param {CryptoKey} priv @param {Payload} payload @returns {Promise<Envelope>} */
async function envelope(priv, payload) {
  const p = JSON.stringify(payload);
  return { p, sig: b64e(await sign(priv, te.encode(p))) };
}

/** @param {string | Envelope} data @returns {{p: string, sig: Uint8Array, payload: Payload, env: Envelope}} */
function parseEnvelope(data) {
  try {
    const env = typeof data === "string" ? JSON.parse(data) : data;
    if (!env || typeof env !== "object" || typeof env.p !== "string") throw new Error();
    const sig = b64d(env.sig);
    const payload = JSON.parse(env.p);
    if (!payload || typeof payload !== "object" || Array.isArray(payload)) throw new Error();
    return { p: env.p, sig, payload, env };
  } catch {
    throw new SecurityCheckFailed("malformed message");
  }
}

/**
 * Verify an envelope (signer null = the payload's own "ik") and its v/room/t.
 * @param {string | Envelope} data @param {string} room @param {string} kind @param {Uint8Array | null} signer
 */
async function openEnvelope(data, room, kind, signer) {
  const { p, sig, payload, env } = parseEnvelope(data);
  if (payload.v !== PROTOCOL_VERSION || payload.room !== room || payload.t !== kind)
    throw new SecurityCheckFailed(`wrong version, room or kind for ${kind}`);
  const key = signer ?? b64field(payload, "ik", 65);
  if (!(await verify(key, sig, te.encode(p)))) throw new SecurityCheckFailed(`bad signature on ${kind}`);
  return { payload, env };
}

/** The payload's "t" (UNVERIFIED), to dispatch key messages. @param {string | Envelope} data */
export function messageKind(data) {
  try {
    const t = parseEnvelope(data).payload.t;
    return typeof t === "string" ? t : null;
  } catch {
    return null;
  }
}

/** @param {Payload} payload @param {string} name @param {number} [length] @returns {Uint8Array} */
function b64field(payload, name, length) {
  let out;
  try {
    out = b64d(payload[name]);
  } catch {
    throw new SecurityCheckFailed(`bad field ${name}`);
  }
  if (length !== undefined && out.length !== length) throw new SecurityCheckFailed(`bad length of ${name}`);
  return out;
}

/** @param {Payload} payload @param {string} name @returns {number} */
function intField(payload, name) {
  const v = payload[name];
  if (!Number.isSafeInteger(v) || v < 0) throw new SecurityCheckFailed(`bad field ${name}`);
  return v;
}

/** @param {Payload} payload @param {string} name @returns {string} */
function strField(payload, name) {
  const v = payload[name];
  if (typeof v !== "string" || !v) throw new SecurityCheckFailed(`bad field ${name}`);
  return v;
}

// ---------------------------------------------------------------------------
// Link fragment
// ---------------------------------------------------------------------------

/** @typedef {{token: string, sLink: Uint8Array | null, tk: Uint8Array | null}} LinkInfo */

/**
 * Parse "#t=<token or seat id>&s=<b64 16 B (32 B in older links)>&tk=<b64 16 B>" (s and tk optional). Throws TypeError.
 * @param {string} fragment @returns {LinkInfo}
 */
export function parseLinkFragment(fragment) {
  const params = new URLSearchParams(fragment.startsWith("#") ? fragment.slice(1) : fragment);
  const token = params.get("t") ?? "";
  if (!token) throw new TypeError("the link has no token");
  const s = params.get("s") ? b64d(/** @type {string} */ (params.get("s"))) : null;
  const tk = params.get("tk") ? b64d(/** @type {string} */ (params.get("tk"))) : null;
  if (s && s.length !== 16 && s.length !== 32) throw new TypeError("bad link secret");
  if (tk && tk.length !== 16) throw new TypeError("bad therapist key hash");
  return { token, sLink: s, tk };
}

/** @param {string} token @param {Uint8Array | null} [sLink] @param {Uint8Array | null} [tk] @returns {string} */
export function makeLinkFragment(token, sLink = null, tk = null) {
  let out = `#t=${token}`;
  if (sLink) out += `&s=${b64e(sLink)}`;
  if (tk) out += `&tk=${b64e(tk)}`;
  return out;
}

// ---------------------------------------------------------------------------
// SAS
// ---------------------------------------------------------------------------

/** @typedef {{emoji: string[], indices: number[], decimal: number[]}} Sas */

/**
 * HKDF-SHA256(ikm=IK_P||IK_T||n_C||n_T, salt=empty, info="alcove-e2ee sas v1"||room, 6 bytes):
 * 7 emoji from the first 42 bits, three 13-bit numbers + 1000 from the first 39 bits.
 * @param {Uint8Array} ikP @param {Uint8Array} ikT @param {Uint8Array} nC @param {Uint8Array} nT @param {string} room
 * @returns {Promise<Sas>}
 */
export async function sas(ikP, ikT, nC, nT, room) {
  const out = await hkdf(S.concat(ikP, ikT, nC, nT), new Uint8Array(0), S.concat(SAS_INFO, te.encode(room)), 6);
  let v = 0n;
  for (const b of out) v = (v << 8n) | BigInt(b);
  const indices = [];
  for (let i = 0; i < 7; i++) indices.push(Number((v >> BigInt(42 - 6 * i)) & 0x3fn));
  const decimal = [];
  for (let i = 0; i < 3; i++) decimal.push(Number((v >> BigInt(35 - 13 * i)) & 0x1fffn) + 1000);
  return { emoji: indices.map((i) => EMOJI[i]), indices, decimal };
}

/** @param {Sas} a @param {Sas} b */
export function sasEqual(a, b) {
  return a.indices.join(",") === b.indices.join(",") && a.decimal.join(",") === b.decimal.join(",");
}

// ---------------------------------------------------------------------------
// Signed SDP
// ---------------------------------------------------------------------------

/** The values of every a=fingerprint line, in order. @param {string} sdp @returns {string[]} */
export function sdpFingerprints(sdp) {
  const out = [];
  for (let line of sdp.split("\n")) {
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.startsWith("a=fingerprint:")) out.push(line.slice("a=fingerprint:".length));
  }
  return out;
}

/**
 * The offer/answer "sig" envelope for `sdp`, signed by `ik` (a private ECDSA CryptoKey).
 * @param {CryptoKey} ik
 * @param {{room: string, from: string, to: string, epoch: number, type: "offer" | "answer", seq: number,
 *          sdp: string, ts?: number}} o
 * @returns {Promise<string>}
 */
export async function signSdp(ik, o) {
  if (o.type !== "offer" && o.type !== "answer") throw new TypeError("type must be offer or answer");
  const payload = {
    v: PROTOCOL_VERSION,
    t: "sdp",
    room: o.room,
    from: o.from,
    to: o.to,
    epoch: o.epoch,
    type: o.type,
    seq: o.seq,
    ts: o.ts ?? Date.now(),
    sdp_sha256: b64e(await sha256(te.encode(o.sdp))),
    fingerprints: sdpFingerprints(o.sdp),
  };
  return JSON.stringify(await envelope(ik, payload));
}

/**
 * Verify a signed SDP BEFORE setRemoteDescription; throws SecurityCheckFailed. Returns the payload
 * (keep its seq as the next lastSeq).
 * @param {string | Envelope | null | undefined} sig @param {string} sdp
 * @param {{ik: Uint8Array, room: string, from: string, to: string, type?: string, lastSeq?: number, nowMs?: number}} o
 * @returns {Promise<Payload>}
 */
export async function verifySdp(sig, sdp, o) {
  if (sig === null || sig === undefined) throw new SecurityCheckFailed("unsigned SDP");
  const { payload } = await openEnvelope(sig, o.room, "sdp", o.ik);
  if (payload.from !== o.from || payload.to !== o.to) throw new SecurityCheckFailed("SDP for another peer");
  if ((payload.type !== "offer" && payload.type !== "answer") || (o.type !== undefined && payload.type !== o.type))
    throw new SecurityCheckFailed("wrong SDP type");
  const seq = intField(payload, "seq");
  if (seq <= (o.lastSeq ?? -1)) throw new SecurityCheckFailed("replayed SDP");
  const now = o.nowMs ?? Date.now();
  if (!Number.isSafeInteger(payload.ts) || Math.abs(payload.ts - now) >= SDP_MAX_SKEW_MS)
    throw new SecurityCheckFailed("stale SDP");
  if (!eq(b64field(payload, "sdp_sha256", 32), await sha256(te.encode(sdp))))
    throw new SecurityCheckFailed("SDP was modified");
  const want = sdpFingerprints(sdp);
  const got = payload.fingerprints;
  if (!Array.isArray(got) || got.length !== want.length || got.some((f, i) => f !== want[i]))
    throw new SecurityCheckFailed("DTLS fingerprint mismatch");
  return payload;
}

// ---------------------------------------------------------------------------
// KeyState: which SFrame keys to use
// ---------------------------------------------------------------------------

/**
 * Glue between the key protocol and SFrame. Epochs are installed decrypt-only, become the
 * sending epoch on switch(), and older epochs are dropped 5 s after the switch.
 *
 * In the browser pass `post: (msg) => worker.postMessage(msg)`: every change is mirrored to
 * e2ee-worker.js ({type:"keys"|"switch"|"retire"|"clear"}), which owns the media counters.
 * encrypt()/decrypt() run the same keys in this thread (Node tests, interop).
 */
export class KeyState {
  /** @param {{post?: (msg: any) => void, now?: () => number}} [opts] */
  constructor(opts = {}) {
    this.post = opts.post ?? null;
    this._now = opts.now ?? (() => Date.now());
    this.encryptor = new S.FrameEncryptor();
    this.decryptor = new S.FrameDecryptor();
    /** @type {Map<number, {baseKey: Uint8Array, sendIdx: number | null, roster: Record<string, number>}>} */
    this._epochs = new Map();
    /** @type {Map<number, number>} epoch -> retire time (ms) */
    this._retireAt = new Map();
    /** @type {Map<number, number>} epoch -> signed expiry (ms since the Unix epoch, on `now`) */
    this._expiresAt = new Map();
    /** @type {number | null} */
    this.sendEpoch = null;
    /** True once the sending epoch expired and no newer one was switched to: nothing is sent. */
    this.sendExpired = false;
    /** @type {Array<(epoch: number) => void>} e.g. force a keyframe */
    this.onSwitch = [];
    this.counters = { encrypted: 0, decrypted: 0, failed: 0, dropped: 0, expired: 0 };
    /** @type {Array<(epoch: number) => void>} called when the sending epoch expires ("reconnecting encryption") */
    this.onExpire = [];
    /** @type {Promise<void>} serialises key changes */
    this._chain = Promise.resolve();
  }

  /** @template T @param {() => Promise<T>} fn @returns {Promise<T>} */
  _serial(fn) {
    const run = this._chain.then(fn);
    this._chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Install `epoch` decrypt-only for every roster idx (roster = {pid: idx}) until `expiresAt` (ms).
   * @param {number} epoch @param {Uint8Array} baseKey @param {Record<string, number>} roster
   * @param {number | null} sendIdx @param {number | null} [expiresAt]
   */
  install(epoch, baseKey, roster, sendIdx, expiresAt = null) {
    return this._serial(async () => {
      if (this._epochs.has(epoch) || (expiresAt !== null && expiresAt <= this._now())) return;
      const idxs = [...new Set(Object.values(roster))].sort((a, b) => a - b);
      for (const idx of idxs) await this.decryptor.addKey(epoch, idx, baseKey);
      this._epochs.set(epoch, { baseKey, sendIdx, roster: { ...roster } });
      if (expiresAt !== null) {
        this._expiresAt.set(epoch, expiresAt);
        const timer = setTimeout(() => this._retireDue(), Math.max(0, expiresAt - this._now()) + 5);
        // @ts-ignore Node: do not keep the process alive for it
        timer?.unref?.();
      }
      /** @type {Record<number, Uint8Array>} */
      const baseKeys = {};
      for (const idx of idxs) baseKeys[idx] = baseKey;
      this.post?.({ type: "keys", epoch, sendIdx, baseKeys, roster: { ...roster }, expiresAt });
    });
  }

  /**
   * Start sending with `epoch`; older epochs stay decrypt-only for 5 s. False if unknown/old.
   * @param {number} epoch @returns {Promise<boolean>}
   */
  switch(epoch) {
    return this._serial(async () => {
      const entry = this._epochs.get(epoch);
      if (!entry || (this.sendEpoch !== null && epoch <= this.sendEpoch)) return false;
      if (entry.sendIdx === null) this.encryptor.clear();
      else await this.encryptor.setKey(epoch, entry.sendIdx, entry.baseKey);
      this.sendEpoch = epoch;
      this.sendExpired = false;
      this.post?.({ type: "switch", epoch });
      const at = this._now() + RETIRE_AFTER_MS;
      for (const old of this._epochs.keys()) {
        if (old < epoch && !this._retireAt.has(old)) {
          this._retireAt.set(old, at);
          const timer = setTimeout(() => this.retire(old), RETIRE_AFTER_MS);
          // @ts-ignore Node: do not keep the process alive for it
          timer?.unref?.();
        }
      }
      for (const cb of this.onSwitch) cb(epoch);
      return true;
    });
  }

  /** @param {number} epoch */
  retire(epoch) {
    if (!this._epochs.has(epoch)) return;
    this.decryptor.removeEpoch(epoch);
    this._epochs.delete(epoch);
    this._retireAt.delete(epoch);
    this._expiresAt.delete(epoch);
    if (epoch === this.sendEpoch) this.encryptor.clear();
    this.post?.({ type: "retire", epoch });
  }

  _retireDue() {
    const now = this._now();
    for (const [epoch, t] of [...this._retireAt]) if (t <= now) this.retire(epoch);
    for (const [epoch, t] of [...this._expiresAt]) {
      if (t > now) continue;
      const sending = epoch === this.sendEpoch;
      this.retire(epoch);
      if (sending && !this.sendExpired) {
        this.sendExpired = true;
        for (const cb of this.onExpire) cb(epoch);
      }
    }
  }

  /** Drops the epochs past their expiry now; true when the sending epoch has expired. */
  expireDue() {
    this._retireDue();
    return this.sendExpired;
  }

  /** Forget every key (removed / sent back to the waiting room). */
  clear() {
    this.encryptor.clear();
    for (const epoch of [...this._epochs.keys()]) this.retire(epoch);
    this.sendEpoch = null;
    this.sendExpired = false;
    this.post?.({ type: "clear" });
  }

  /** @returns {number[]} */
  epochs() {
    this._retireDue();
    return [...this._epochs.keys()].sort((a, b) => a - b);
  }

  /** Sender index of `pid` in the newest installed epoch that has it. @param {string} pid */
  indexOf(pid) {
    return this._indicesOf(pid)[0] ?? null;
  }

  /** @param {string} pid @returns {number[]} */
  _indicesOf(pid) {
    /** @type {number[]} */
    const out = [];
    for (const e of [...this._epochs.keys()].sort((a, b) => b - a)) {
      const idx = /** @type {any} */ (this._epochs.get(e)).roster[pid];
      if (idx !== undefined && !out.includes(idx)) out.push(idx);
    }
    return out;
  }

  /** Roster of the newest installed epoch ({pid: idx}). */
  roster() {
    const newest = Math.max(...this._epochs.keys());
    return this._epochs.get(newest)?.roster ?? {};
  }

  /**
   * Protect one encoded frame; null = do not send (no key).
   * @param {S.FrameKind} kind @param {Uint8Array} frame @returns {Promise<Uint8Array | null>}
   */
  async encrypt(kind, frame) {
    this._retireDue();
    if (this.sendExpired) {
      this.counters.expired++;
      return null;
    }
    if (frame.length === 0) return new Uint8Array(0);
    try {
      const out = await this.encryptor.protect(kind, frame);
      this.counters.encrypted++;
      return out;
    } catch {
      this.counters.dropped++;
      return null;
    }
  }

  /**
   * Unprotect one frame from sender `fromIdx`; null = drop it.
   * @param {S.FrameKind} kind @param {Uint8Array} data @param {number | null} fromIdx
   * @returns {Promise<Uint8Array | null>}
   */
  async decrypt(kind, data, fromIdx) {
    this._retireDue();
    if (data.length === 0) return new Uint8Array(0);
    const out = await this.decryptor.unprotect(kind, data, fromIdx);
    if (out === null) this.counters.failed++;
    else this.counters.decrypted++;
    return out;
  }

  /** Like decrypt(), with the sender given by pid (signed rosters).
   * @param {S.FrameKind} kind @param {Uint8Array} data @param {string} pid */
  async decryptFrom(kind, data, pid) {
    this._retireDue();
    const idxs = this._indicesOf(pid);
    if (idxs.length === 0) {
      this.counters.failed++;
      return null;
    }
    for (let i = 0; i + 1 < idxs.length; i++) {
      const out = await this.decryptor.unprotect(kind, data, idxs[i]);
      if (out !== null) {
        this.counters.decrypted++;
        return out;
      }
    }
    return this.decrypt(kind, data, idxs[idxs.length - 1]);
  }
}

// ---------------------------------------------------------------------------
// App messages (chat, safety, state, …): sealed under the epoch, signed by the sender (docs/security.md §10)
// ---------------------------------------------------------------------------

/** An app message's body (JSON, UTF-8) has at most this many bytes. */
export const APP_MAX_BODY = 4096;
/** At most this many app messages under an epoch not received yet are held for it … */
export const APP_HOLD_MAX = 32;
/** … for at most this long (ms); then they are refused. */
export const APP_HOLD_MS = 5000;
const APP_INFO = te.encode("alcove-e2ee app");
const APP_PRIVATE_INFO = te.encode("alcove-e2ee app private");
/** The pairwise secret each epoch slot carries next to the epoch secret (E_n ‖ P_{n,c}). */
const SECRET_LEN = 32;

/** @param {number} epoch */
function epoch4(epoch) {
  const n = new Uint8Array(4);
  new DataView(n.buffer).setUint32(0, epoch);
  return n;
}

/** @param {Uint8Array} raw @returns {Promise<CryptoKey>} */
function aesKey(raw) {
  return subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** HKDF(E_n, salt, "alcove-e2ee app" ‖ room ‖ n, 32): AES-256-GCM. @param {Uint8Array} secret @param {string} room @param {number} epoch */
async function appGroupKey(secret, room, epoch) {
  return aesKey(await hkdf(secret, SALT, S.concat(APP_INFO, te.encode(room), epoch4(epoch)), 32));
}

/** HKDF(P_{n,c}, salt, "alcove-e2ee app private" ‖ room ‖ 0 ‖ pid ‖ n, 32).
 * @param {Uint8Array} pairwise @param {string} room @param {number} epoch @param {string} pid */
async function appPrivateKey(pairwise, room, epoch, pid) {
  const info = S.concat(APP_PRIVATE_INFO, te.encode(room), new Uint8Array([0]), te.encode(pid), epoch4(epoch));
  return aesKey(await hkdf(pairwise, SALT, info, 32));
}

/** @param {string} room @param {string} from @param {string | null} to @param {number} epoch @param {number} seq */
function appAad(room, from, to, epoch, seq) {
  return te.encode(`alcove-e2ee app v1|${room}|${from}|${to ?? ""}|${epoch}|${seq}`);
}

/** @typedef {{from: string, body: Record<string, any>, private: boolean}} AppMessage a verified, decrypted app message */
/** @typedef {{group: CryptoKey, private: Map<string, CryptoKey>, members: Set<string>}} AppEpoch */

/**
 * A JSON object with a string `k`, serialized to at most APP_MAX_BODY bytes; throws TypeError otherwise.
 * @param {any} body @returns {Uint8Array}
 */
export function appBodyBytes(body) {
  if (!body || typeof body !== "object" || Array.isArray(body) || typeof body.k !== "string")
    throw new TypeError("an app message body is a JSON object with a string k");
  const plain = te.encode(JSON.stringify(body));
  if (plain.length > APP_MAX_BODY) throw new TypeError(`an app message body has at most ${APP_MAX_BODY} bytes`);
  return plain;
}

/**
 * The epoch an app.data claims (unverified: only to decide whether to wait for it), or null.
 * @param {string} data @returns {number|null}
 */
export function appEpochOf(data) {
  try {
    return intField(parseEnvelope(data).payload, "epoch");
  } catch {
    return null;
  }
}

/**
 * App messages under an epoch this page does not hold yet, waiting for it: at most `limit` of them, each at most
 * `ms`; `now` (ms) always comes from the caller.
 */
export class AppHold {
  constructor(limit = APP_HOLD_MAX, ms = APP_HOLD_MS) {
    this.limit = limit;
    this.ms = ms;
    /** @type {Array<{deadline: number, from: string, data: string}>} in arrival order */
    this._held = [];
  }

  get size() {
    return this._held.length;
  }

  /** Holds one; false (not held: refuse it) when `limit` are already waiting. @param {string} from @param {string} data @param {number} now */
  hold(from, data, now) {
    if (this._held.length >= this.limit) return false;
    this._held.push({ deadline: now + this.ms, from, data });
    return true;
  }

  /**
   * Removes and returns, in arrival order, every held [from, data] whose epoch is not `stillEarly` (it came, or
   * it is older now): the caller opens or ignores them as it would have on arrival.
   * @param {(data: string) => boolean} stillEarly @returns {Array<[string, string]>}
   */
  release(stillEarly) {
    /** @type {Array<[string, string]>} */
    const out = [];
    this._held = this._held.filter((h) => {
      if (stillEarly(h.data)) return true;
      out.push([h.from, h.data]);
      return false;
    });
    return out;
  }

  /** The held [from, data] whose time is up (removed), in arrival order. @param {number} now @returns {Array<[string, string]>} */
  expired(now) {
    /** @type {Array<[string, string]>} */
    const out = [];
    this._held = this._held.filter((h) => {
      if (h.deadline > now) return true;
      out.push([h.from, h.data]);
      return false;
    });
    return out;
  }

  /** @returns {number|null} */
  nextDeadline() {
    return this._held.length ? Math.min(...this._held.map((h) => h.deadline)) : null;
  }

  clear() {
    this._held = [];
  }
}

/**
 * App messages over the epochs, shared by TherapistKeys and ClientKeys (as `keys.app`). Sealed with AES-256-GCM
 * under a key derived from the epoch secret (to everyone) or from the client's pairwise secret of that epoch
 * (therapist ↔ one client), signed by the sender's identity key over the exact bytes of the payload, with a
 * sequence number per sender and epoch against replay; accepted under any epoch the key state still holds.
 */
export class AppChannel {
  /**
   * @param {string} room @param {KeyState} keyState
   * @param {{me: () => string | null, sign: () => CryptoKey, signer: (pid: string) => Uint8Array,
   *   privatePeer: (from: string) => string, sendPrivate: (to: string) => string}} role
   */
  constructor(room, keyState, role) {
    this.room = room;
    this.keyState = keyState;
    this.role = role;
    /** @type {Map<number, AppEpoch>} */
    this.epochs = new Map();
    this.seq = 0;
    /** @type {Map<string, number>} "pid epoch" -> the newest seq accepted */
    this._last = new Map();
    /** @type {number|null} the first epoch with app keys since this participant became a member */
    this.since = null;
    /** the newest epoch with app keys (-1: none) */
    this.newest = -1;
  }

  /** @param {number} epoch @param {Uint8Array} secret @param {Map<string, Uint8Array>} pairwise @param {Iterable<string>} members */
  async add(epoch, secret, pairwise, members) {
    /** @type {Map<string, CryptoKey>} */
    const priv = new Map();
    for (const [pid, p] of pairwise) priv.set(pid, await appPrivateKey(p, this.room, epoch, pid));
    this.epochs.set(epoch, { group: await appGroupKey(secret, this.room, epoch), private: priv, members: new Set(members) });
    if (this.since === null) this.since = epoch;
    this.newest = Math.max(this.newest, epoch);
  }

  /** No member any more (sent back): every app key is gone, and the next membership starts afresh. */
  clear() {
    this.epochs.clear();
    this._last.clear();
    this.since = null;
    this.newest = -1;
  }

  /**
   * What to do with an app message claiming `epoch` (unverified): "open" it now (verified there, refused when no
   * key of that epoch is held any more), "hold" it for an epoch not received yet (newer than every one held, or
   * none yet since the admission), or "ignore" it: sent under an epoch older than this membership, before this
   * participant was a member (no key, nothing to show).
   * @param {number} epoch @returns {"open"|"hold"|"ignore"}
   */
  disposition(epoch) {
    if (this._live().has(epoch)) return "open";
    if (this.since === null || epoch > this.newest) return "hold";
    if (epoch < this.since) return "ignore";
    return "open";
  }

  _live() {
    const live = new Set(this.keyState.epochs());
    for (const e of [...this.epochs.keys()]) if (!live.has(e)) this.epochs.delete(e);
    for (const k of [...this._last.keys()]) if (!live.has(Number(k.split(" ")[1]))) this._last.delete(k);
    return this.epochs;
  }

  /** True when there is a sending epoch with app keys. */
  canSend() {
    const e = this.keyState.sendEpoch;
    return e !== null && !this.keyState.expireDue() && this._live().has(e) && this.role.me() !== null;
  }

  /**
   * Checks synchronously, then seals: resolves to the app.data string, or null without a key yet. Throws
   * TypeError (synchronously) for a bad body or a private `to` this role may not send to.
   * @param {Record<string, any>} body @param {string | null} [to] @returns {{ready: false} | {ready: true, data: Promise<string>}}
   */
  prepare(body, to = null) {
    const plain = appBodyBytes(body);
    const me = this.role.me();
    if (!this.canSend() || me === null) return { ready: false };
    const epoch = /** @type {number} */ (this.keyState.sendEpoch);
    const keys = /** @type {AppEpoch} */ (this.epochs.get(epoch));
    const key = to === null ? keys.group : keys.private.get(this.role.sendPrivate(to));
    if (!key) throw new TypeError("no private key for that participant in this epoch");
    const seq = ++this.seq;
    const data = (async () => {
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv, additionalData: appAad(this.room, me, to, epoch, seq) }, key, plain));
      const payload = { v: PROTOCOL_VERSION, t: "app", room: this.room, from: me, to, epoch, seq, iv: b64e(iv), ct: b64e(ct) };
      return JSON.stringify(await envelope(this.role.sign(), payload));
    })();
    return { ready: true, data };
  }

  /** The app.data for `body`, or null without a key yet. @param {Record<string, any>} body @param {string | null} [to] */
  async make(body, to = null) {
    const p = this.prepare(body, to);
    return p.ready ? p.data : null;
  }

  /**
   * Verify and decrypt an app message the server relayed `fromPid`; throws SecurityCheckFailed.
   * @param {string} fromPid @param {string} data @returns {Promise<AppMessage>}
   */
  async open(fromPid, data) {
    const { p, sig, payload } = parseEnvelope(data);
    if (payload.v !== PROTOCOL_VERSION || payload.room !== this.room || payload.t !== "app")
      throw new SecurityCheckFailed("wrong version, room or kind for app");
    const sender = payload.from;
    if (typeof sender !== "string" || sender !== fromPid) throw new SecurityCheckFailed("app message signed for another sender");
    const epoch = intField(payload, "epoch");
    const seq = intField(payload, "seq");
    const to = payload.to ?? null;
    if (to !== null && typeof to !== "string") throw new SecurityCheckFailed("bad field to");
    const keys = this._live().get(epoch);
    if (!keys) throw new SecurityCheckFailed("app message under an epoch without a key");
    if (!keys.members.has(sender)) throw new SecurityCheckFailed("app message from outside the signed roster");
    if (!(await verify(this.role.signer(sender), sig, te.encode(p)))) throw new SecurityCheckFailed("bad signature on app");
    const lastKey = `${sender} ${epoch}`;
    if (seq <= (this._last.get(lastKey) ?? 0)) throw new SecurityCheckFailed("replayed app message");
    let key;
    if (to === null) key = keys.group;
    else {
      if (to !== this.role.me()) throw new SecurityCheckFailed("private app message for someone else");
      key = keys.private.get(this.role.privatePeer(sender));
    }
    const iv = b64field(payload, "iv", 12);
    const ct = b64field(payload, "ct");
    let body;
    try {
      if (!key) throw new Error("no key");
      const plain = await subtle.decrypt({ name: "AES-GCM", iv, additionalData: appAad(this.room, sender, to, epoch, seq) }, key, ct);
      body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain));
    } catch {
      throw new SecurityCheckFailed("app message does not decrypt");
    }
    if (!body || typeof body !== "object" || Array.isArray(body) || typeof body.k !== "string")
      throw new SecurityCheckFailed("malformed app message");
    this._last.set(lastKey, seq);
    return { from: sender, body, private: to !== null };
  }
}

// ---------------------------------------------------------------------------
// Therapist side
// ---------------------------------------------------------------------------

/** @typedef {{ik: Uint8Array, dk: Uint8Array, commit: Uint8Array, ts: number, macOk: boolean | null}} IntroInfo */
/** @typedef {{epoch: number, message: string, roster: Record<string, number>, waitingAcks: Set<string>, started: number, issuedAt: number, expiresAt: number}} EpochResult */
/** @typedef {{intro: IntroInfo, nT: Uint8Array | null, nC: Uint8Array | null, sas: Sas | null, lastSdpSeq: number, dk: Uint8Array, ackEpoch: number}} Member */

/** @param {IntroInfo} intro @returns {Member} */
function newMember(intro) {
  return { intro, nT: null, nC: null, sas: null, lastSdpSeq: -1, dk: intro.dk, ackEpoch: -1 };
}

/** @param {IntroInfo} a @param {IntroInfo} b */
function sameIntro(a, b) {
  return eq(a.ik, b.ik) && eq(a.dk, b.dk) && eq(a.commit, b.commit) && a.ts === b.ts && a.macOk === b.macOk;
}

/** @param {string} room @param {number} epoch */
function epochInfo(room, epoch) {
  const n = new Uint8Array(4);
  new DataView(n.buffer).setUint32(0, epoch);
  return S.concat(EPOCH_INFO, te.encode(room), n);
}

/** @param {string} room @param {string | Envelope} intro @param {Uint8Array | null} sLink @returns {Promise<IntroInfo>} */
async function checkIntro(room, intro, sLink) {
  const { payload, env } = await openEnvelope(intro, room, "intro", null);
  const ik = b64field(payload, "ik", 65);
  const dk = b64field(payload, "dk", 65);
  try {
    await H.importPublicKey(dk);
  } catch {
    throw new SecurityCheckFailed("bad public key");
  }
  const commit = b64field(payload, "commit", 32);
  const ts = intField(payload, "ts");
  /** @type {boolean | null} */
  let macOk = null;
  if (sLink) {
    let mac = new Uint8Array(0);
    try {
      if (typeof env.mac === "string") mac = b64d(env.mac);
    } catch {
      mac = new Uint8Array(0);
    }
    macOk = eq(mac, await hmacSha256(await kAuth(sLink, room), te.encode(env.p)));
  }
  return { ik, dk, commit, ts, macOk };
}

/** The key authority: IK_T, grants, reveals, epochs, switches and signed SDP for the therapist. */
export class TherapistKeys {
  /**
   * @param {string} room @param {string} pid @param {CryptoKeyPair} identity @param {Uint8Array} ikRaw
   * @param {Uint8Array} tk
   * @param {{sLink?: Uint8Array | null, firstEpoch?: number, keyState?: KeyState, epochLifetimeMs?: number}} opts
   */
  constructor(room, pid, identity, ikRaw, tk, opts) {
    this.room = room;
    this.pid = pid;
    this.epochLifetimeMs = opts.epochLifetimeMs ?? EPOCH_LIFETIME_MS;
    this.identity = identity;
    this.ikRaw = ikRaw;
    this.tk = tk;
    this.sLink = opts.sLink ?? null;
    this.keyState = opts.keyState ?? new KeyState();
    /** @type {Map<string, Member>} */
    this.members = new Map();
    /** @type {Map<string, Uint8Array>} pid -> the IK_P granted in this session (frozen: a new key is a new person) */
    this.frozen = new Map();
    /** @type {Map<string, IntroInfo>} pid -> a new person's verified intro for a granted pid, waiting for a new Admit */
    this.newcomers = new Map();
    /** @type {Map<string, {dk: Uint8Array, ackEpoch: number}>} the newest HPKE key of a forgotten member */
    this._lastDk = new Map();
    // Epoch numbers must grow across therapist reloads: start at the Unix time in seconds.
    this._nextEpoch = opts.firstEpoch ?? Math.max(1, Math.floor(Date.now() / 1000));
    /** @type {Map<string, number>} */
    this._indices = new Map();
    /** @type {EpochResult | null} */
    this.pending = null;
    /** @type {EpochResult | null} */
    this.current = null;
    /** @type {Map<string, number>} */
    this._sdpSeq = new Map();
    /** App messages (docs/security.md §10): to everyone, or privately with one client of the epoch. */
    this.app = new AppChannel(room, this.keyState, {
      me: () => this.pid,
      sign: () => this.identity.privateKey,
      signer: (pid) => {
        const m = this.members.get(pid);
        if (!m || !m.nT || !m.nC) throw new SecurityCheckFailed("app message from a client this therapist does not key");
        return m.intro.ik;
      },
      privatePeer: (from) => from,
      sendPrivate: (to) => to,
    });
  }

  /**
   * @param {string} room @param {string} pid
   * @param {{identity?: CryptoKeyPair, sLink?: Uint8Array | null, firstEpoch?: number, keyState?: KeyState, epochLifetimeMs?: number}} [opts]
   * identity: IK_T (in the browser: `await loadOrCreateIdentity()`); a fresh one if omitted.
   */
  static async create(room, pid, opts = {}) {
    const identity = opts.identity ?? (await generateIdentity());
    const ikRaw = await pubRaw(identity.publicKey);
    return new TherapistKeys(room, pid, identity, ikRaw, await tkOf(ikRaw), opts);
  }

  /**
   * Verify a waiting client's intro (from the queue) and remember it for `pid`. The server's queue is only a
   * hint: a pid the therapist granted keeps its identity key for the session; a different key for it throws
   * NewPerson (kept in `newcomers`; only a new Admit lets it in). A pid not granted yet may change its intro.
   * @param {string} pid @param {string | Envelope} intro @returns {Promise<IntroInfo>} */
  async checkIntro(pid, intro) {
    const info = await checkIntro(this.room, intro, this.sLink);
    const frozen = this.frozen.get(pid);
    if (frozen && !eq(frozen, info.ik)) {
      this.newcomers.set(pid, info);
      throw new NewPerson(`a new person with the seat of ${pid}: needs a new Admit`);
    }
    const old = this.members.get(pid);
    if (!old || (old.nT === null && !sameIntro(old.intro, info))) {
      const m = newMember(info);
      const last = this._lastDk.get(pid);
      if (frozen && last) {
        m.dk = last.dk; // the same person again: its newest HPKE key, not the intro's
        m.ackEpoch = last.ackEpoch;
      }
      this.members.set(pid, m);
    }
    this.newcomers.delete(pid);
    return info;
  }

  /**
   * The admit.grant for `pid` (after checkIntro): the therapist's Admit. For a pid in `newcomers` this is the
   * new Admit of that new person: it replaces the identity granted before.
   * @param {string} pid @returns {Promise<string>} */
  async makeGrant(pid) {
    const newcomer = this.newcomers.get(pid);
    if (newcomer) {
      this.newcomers.delete(pid);
      this.members.set(pid, newMember(newcomer));
    }
    const m = this.members.get(pid);
    if (!m) throw new SecurityCheckFailed("no verified intro for this client");
    const frozen = this.frozen.get(pid);
    if (!frozen || !eq(frozen, m.intro.ik)) this._lastDk.delete(pid);
    this.frozen.set(pid, m.intro.ik);
    m.nT = crypto.getRandomValues(new Uint8Array(16));
    m.nC = null;
    m.sas = null;
    const payload = {
      v: PROTOCOL_VERSION,
      t: "grant",
      room: this.room,
      pid,
      ik_t: b64e(this.ikRaw),
      n_t: b64e(m.nT),
      ts: Date.now(),
    };
    return JSON.stringify(await envelope(this.identity.privateKey, payload));
  }

  /** Verify the client's reveal; returns the SAS to show. @param {string} pid @param {string | Envelope} data */
  async checkReveal(pid, data) {
    const m = this.members.get(pid);
    if (!m || !m.nT) throw new SecurityCheckFailed("reveal without grant");
    const { payload } = await openEnvelope(data, this.room, "reveal", m.intro.ik);
    if (payload.pid !== pid) throw new SecurityCheckFailed("reveal for another client");
    const nC = b64field(payload, "n_c", 16);
    if (!eq(await sha256(S.concat(nC, m.intro.ik)), m.intro.commit)) throw new SecurityCheckFailed("commitment mismatch");
    m.nC = nC;
    m.sas = await sas(m.intro.ik, this.ikRaw, nC, m.nT, this.room);
    return m.sas;
  }

  /** Drop a removed client (the next epoch will not include it). Its frozen identity stays. @param {string} pid */
  forget(pid) {
    const m = this.members.get(pid);
    const frozen = this.frozen.get(pid);
    if (m && frozen && eq(frozen, m.intro.ik)) this._lastDk.set(pid, { dk: m.dk, ackEpoch: m.ackEpoch });
    this.members.delete(pid);
    this.newcomers.delete(pid);
    this._indices.delete(pid);
    // _sdpSeq is kept: a client sent back and admitted again keeps its ClientKeys, whose "last seq seen
    // from the therapist" must keep growing (otherwise our next offer/answer looks replayed to it).
  }

  /**
   * Public session state to keep across a therapist reload (no secrets: only public keys and
   * nonces that were already sent). Keep it locally (e.g. sessionStorage), never on the server;
   * after the reload importState() it into a TherapistKeys with the same IK_T and make a new epoch.
   * @returns {string}
   */
  exportState() {
    /** @type {Record<string, any>} */
    const members = {};
    for (const [pid, m] of this.members) {
      members[pid] = {
        ik: b64e(m.intro.ik),
        dk: b64e(m.intro.dk),
        commit: b64e(m.intro.commit),
        ts: m.intro.ts,
        mac_ok: m.intro.macOk,
        n_t: m.nT ? b64e(m.nT) : null,
        n_c: m.nC ? b64e(m.nC) : null,
        dk_next: b64e(m.dk),
        ack_epoch: m.ackEpoch,
      };
    }
    return JSON.stringify({
      v: PROTOCOL_VERSION,
      room: this.room,
      ik_t: b64e(this.ikRaw),
      next_epoch: this._nextEpoch,
      indices: Object.fromEntries(this._indices),
      members,
      frozen: Object.fromEntries([...this.frozen].map(([pid, ik]) => [pid, b64e(ik)])),
      last_dk: Object.fromEntries([...this._lastDk].map(([pid, d]) => [pid, [b64e(d.dk), d.ackEpoch]])),
    });
  }

  /**
   * The signed-SDP counters per peer (kept beside exportState() across a reload: they must keep growing).
   * @returns {Record<string, number>}
   */
  sdpCounters() {
    return Object.fromEntries(this._sdpSeq);
  }

  /** Brings back sdpCounters() output; entries that are not whole numbers are ignored. @param {Record<string, unknown>} counters */
  restoreSdpCounters(counters) {
    for (const [pid, seq] of Object.entries(counters || {})) {
      const n = Number(seq);
      if (Number.isInteger(n)) this._sdpSeq.set(pid, n);
    }
  }

  /** Restore exportState() output (same room and IK_T only); throws TypeError. @param {string} data */
  async importState(data) {
    let state;
    /** @type {Array<[string, Member]>} */
    const members = [];
    try {
      state = JSON.parse(data);
      if (state.v !== PROTOCOL_VERSION || state.room !== this.room || !eq(b64d(state.ik_t), this.ikRaw))
        throw new Error("state of another room or identity");
      for (const [pid, m] of Object.entries(state.members)) {
        const intro = { ik: b64d(m.ik), dk: b64d(m.dk), commit: b64d(m.commit), ts: Number(m.ts), macOk: m.mac_ok };
        const nT = m.n_t ? b64d(m.n_t) : null;
        const nC = m.n_c ? b64d(m.n_c) : null;
        const dk = b64d(m.dk_next);
        await H.importPublicKey(dk);
        const s = nT && nC ? await sas(intro.ik, this.ikRaw, nC, nT, this.room) : null;
        members.push([pid, { intro, nT, nC, sas: s, lastSdpSeq: -1, dk, ackEpoch: Number(m.ack_epoch) }]);
      }
      for (const [pid, ik] of Object.entries(state.frozen)) this.frozen.set(pid, b64d(/** @type {string} */ (ik)));
      for (const [pid, d] of Object.entries(state.last_dk))
        this._lastDk.set(pid, { dk: b64d(/** @type {any} */ (d)[0]), ackEpoch: Number(/** @type {any} */ (d)[1]) });
    } catch (e) {
      throw new TypeError(`bad therapist state: ${/** @type {Error} */ (e).message}`, { cause: e });
    }
    for (const [pid, m] of members) this.members.set(pid, m);
    for (const [pid, idx] of Object.entries(state.indices)) this._indices.set(pid, Number(idx));
    this._nextEpoch = Math.max(this._nextEpoch, Number(state.next_epoch));
  }

  /** @param {string[]} pids @returns {Record<string, number>} */
  _assign(pids) {
    for (const pid of [...this._indices.keys()]) if (!pids.includes(pid)) this._indices.delete(pid);
    const used = new Set(this._indices.values());
    for (const pid of pids) {
      if (this._indices.has(pid)) continue;
      let free = -1;
      for (let i = 1; i < MAX_MEMBERS; i++) {
        if (!used.has(i)) {
          free = i;
          break;
        }
      }
      if (free < 0) throw new RangeError("too many members for one epoch");
      this._indices.set(pid, free);
      used.add(free);
    }
    return Object.fromEntries(pids.map((p) => [p, /** @type {number} */ (this._indices.get(p))]));
  }

  /** True when `pid` was granted by the therapist's Admit and its reveal verified. @param {string} pid */
  keyable(pid) {
    const m = this.members.get(pid);
    return !!(m && m.nT && m.nC);
  }

  /**
   * A new epoch for the granted clients `pids` (everyone else gets no key). Every pid must have been granted by
   * makeGrant() and its reveal verified (keyable()), whatever the server's roster says. `names` (pid -> display
   * name as the therapist's console knows them, the therapist's own under its pid) go into the signed roster.
   * Installs it decrypt-only; send result.message as key data with to: null, collect acks, then makeSwitch().
   * @param {Iterable<string>} pids @param {Record<string, string> | null} [names] @param {{nowMs?: number}} [opts]
   * @returns {Promise<EpochResult>}
   */
  async makeEpoch(pids, names = null, opts = {}) {
    const members = [...new Set(pids)];
    for (const pid of members) if (!this.keyable(pid)) throw new SecurityCheckFailed(`not granted by the therapist: ${pid}`);
    const nm = names ?? {};
    const epoch = this._nextEpoch++;
    const secret = crypto.getRandomValues(new Uint8Array(SECRET_LEN));
    /** @type {Map<string, Uint8Array>} */
    const pairwise = new Map(members.map((pid) => [pid, crypto.getRandomValues(new Uint8Array(SECRET_LEN))]));
    const idx = this._assign(members);
    const roster = [{ pid: this.pid, ik: b64e(this.ikRaw), idx: 0, name: clipName(nm[this.pid]) }];
    for (const pid of members) roster.push({ pid, ik: b64e(this._member(pid).intro.ik), idx: idx[pid], name: clipName(nm[pid]) });
    const info = epochInfo(this.room, epoch);
    /** @type {Record<string, string>} */
    const wrapped = {};
    // Each slot carries E_n ‖ P_{n,c}: the epoch secret and this client's pairwise secret (private messages).
    for (const pid of members) {
      wrapped[pid] = b64e(await H.sealCombined(this._member(pid).dk, info, S.concat(secret, /** @type {Uint8Array} */ (pairwise.get(pid)))));
    }
    const issuedAt = opts.nowMs ?? Date.now();
    const expiresAt = issuedAt + this.epochLifetimeMs;
    const payload = {
      v: PROTOCOL_VERSION, t: "epoch", room: this.room, epoch, roster, issued_at: issuedAt, expires_at: expiresAt, wrapped,
    };
    const message = JSON.stringify(await envelope(this.identity.privateKey, payload));
    /** @type {EpochResult} */
    const result = {
      epoch, message, roster: { [this.pid]: 0, ...idx }, waitingAcks: new Set(members), started: Date.now(), issuedAt, expiresAt,
    };
    await this.keyState.install(epoch, await S.epochBaseKey(secret, this.room), result.roster, 0, expiresAt);
    await this.app.add(epoch, secret, pairwise, Object.keys(result.roster));
    this.pending = result;
    return result;
  }

  /**
   * True when the current epoch is older than REKEY_AFTER_MS (scaled to the lifetime). Never while an epoch is
   * pending: withheld acks cannot keep the therapist from ever switching.
   * @param {number} [nowMs] */
  rekeyDue(nowMs) {
    if (this.pending) return false;
    const cur = this.current;
    if (!cur) return false;
    return (nowMs ?? Date.now()) - cur.issuedAt >= Math.floor((this.epochLifetimeMs * REKEY_AFTER_MS) / EPOCH_LIFETIME_MS);
  }

  /** @param {string} pid */
  _member(pid) {
    const m = this.members.get(pid);
    if (!m) throw new SecurityCheckFailed(`unknown client ${pid}`);
    return m;
  }

  /** Verify an ack; true once every member of the pending epoch has acked.
   * @param {string} pid @param {string | Envelope} data @returns {Promise<boolean>} */
  async checkAck(pid, data) {
    const m = this.members.get(pid);
    if (!m) throw new SecurityCheckFailed("ack from an unknown client");
    const { payload } = await openEnvelope(data, this.room, "ack", m.intro.ik);
    if (payload.pid !== pid) throw new SecurityCheckFailed("ack for another client");
    const epoch = intField(payload, "epoch");
    const dkNext = b64field(payload, "dk", 65);
    try {
      await H.importPublicKey(dkNext);
    } catch {
      throw new SecurityCheckFailed("bad public key");
    }
    const issued = [this.pending, this.current].filter((r) => r !== null).map((r) => /** @type {EpochResult} */ (r).epoch);
    if (issued.includes(epoch) && epoch > m.ackEpoch) {
      m.dk = dkNext; // the next epoch is wrapped to the new key
      m.ackEpoch = epoch;
    }
    if (!this.pending || epoch !== this.pending.epoch) return false;
    this.pending.waitingAcks.delete(pid);
    return this.pending.waitingAcks.size === 0;
  }

  /** True when the pending epoch should be switched to (all acks, or 1.5 s passed). @param {number} [now] */
  switchDue(now) {
    if (!this.pending) return false;
    return this.pending.waitingAcks.size === 0 || (now ?? Date.now()) - this.pending.started >= SWITCH_TIMEOUT_MS;
  }

  /** The signed switch for the pending epoch (key data, to: null); switches our own sender. */
  async makeSwitch() {
    if (!this.pending) throw new Error("no pending epoch");
    const epoch = this.pending.epoch;
    const payload = { v: PROTOCOL_VERSION, t: "switch", room: this.room, epoch, ts: Date.now() };
    this.current = this.pending;
    this.pending = null;
    await this.keyState.switch(epoch);
    return JSON.stringify(await envelope(this.identity.privateKey, payload));
  }

  /** Dispatch a key message from a client: reveal -> Sas, ack -> all-acked flag.
   * @param {string} fromPid @param {string} data @returns {Promise<Sas | boolean>} */
  async handleKey(fromPid, data) {
    const kind = messageKind(data);
    if (kind === "reveal") return this.checkReveal(fromPid, data);
    if (kind === "ack") return this.checkAck(fromPid, data);
    throw new SecurityCheckFailed("unexpected key message");
  }

  get epoch() {
    return (this.current ?? this.pending)?.epoch ?? 0;
  }

  /** @param {string} to @param {"offer" | "answer"} type @param {string} sdp */
  async signSdp(to, type, sdp) {
    const seq = (this._sdpSeq.get(to) ?? 0) + 1;
    this._sdpSeq.set(to, seq);
    return signSdp(this.identity.privateKey, { room: this.room, from: this.pid, to, epoch: this.epoch, type, seq, sdp });
  }

  /** Verify a client's offer/answer with the IK_P from its intro; throws SecurityCheckFailed.
   * @param {string} from @param {"offer" | "answer"} type @param {string} sdp @param {string | null | undefined} sig */
  async verifySdp(from, type, sdp, sig) {
    const m = this.members.get(from);
    if (!m) throw new SecurityCheckFailed("SDP from an unknown client");
    if (!m.nT) throw new SecurityCheckFailed("SDP from a client this therapist did not admit");
    const payload = await verifySdp(sig, sdp, { ik: m.intro.ik, room: this.room, from, to: this.pid, type, lastSeq: m.lastSdpSeq });
    m.lastSdpSeq = payload.seq;
  }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

const ECDH = { name: "ECDH", namedCurve: "P-256" };

/** A new extractable HPKE (ECDH P-256) private key as JWK (exported once, for a reload of this tab). */
async function newHpkeJwk() {
  const kp = /** @type {CryptoKeyPair} */ (await subtle.generateKey(ECDH, true, ["deriveBits"]));
  return subtle.exportKey("jwk", kp.privateKey);
}

/** The non-extractable HPKE key pair of a JWK. @param {JsonWebKey} jwk */
async function hpkeFromJwk(jwk) {
  const key = {
    privateKey: await subtle.importKey("jwk", jwk, ECDH, false, ["deriveBits"]),
    publicKey: await subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, ext: true }, ECDH, true, []),
  };
  return { raw: await H.exportPublicKey(key.publicKey), key, jwk: { ...jwk } };
}

/** A client's ephemeral keys and its view of the therapist-signed state. */
export class ClientKeys {
  /**
   * Use ClientKeys.create().
   * @param {string} room @param {LinkInfo | null} link @param {CryptoKeyPair} ik @param {Uint8Array} ikRaw
   * @param {CryptoKeyPair} dk @param {Uint8Array} dkRaw @param {{pid?: string | null, keyState?: KeyState}} opts
   */
  constructor(room, link, ik, ikRaw, dk, dkRaw, opts) {
    this.room = room;
    this.link = link;
    /** @type {string | null} set from the server's welcome */
    this.pid = opts.pid ?? null;
    this.ik = ik;
    this.ikRaw = ikRaw;
    /** DK_P of the intro (public) */
    this.dkRaw = dkRaw;
    /**
     * The HPKE keys announced to the therapist (the intro's, then one per ack), oldest first; older ones are
     * erased as soon as an epoch unwraps with a newer one. `jwk` only for keepable keys (a reload of this tab).
     * @type {Array<{raw: Uint8Array, key: CryptoKeyPair, jwk: JsonWebKey | null}>}
     */
    this.hpkeKeys = [{ raw: dkRaw, key: dk, jwk: null }];
    this.nC = crypto.getRandomValues(new Uint8Array(16));
    this.keyState = opts.keyState ?? new KeyState();
    /** @type {Uint8Array | null} */
    this.ikT = null;
    /** @type {Uint8Array | null} */
    this.nT = null;
    /** @type {string | null} */
    this.therapistPid = null;
    this.newestEpoch = -1;
    /** True from a grant (or a return to the waiting room) until an epoch is accepted: an epoch that does not
     *  list this client at all then only means the therapist has not keyed it yet (ignored, not refused). */
    this.awaitingFirstEpoch = true;
    /** the newest epoch's signed expiry (ms) */
    this.expiresAt = 0;
    /** @type {Map<string, {ik: Uint8Array, idx: number}>} roster of the newest epoch */
    this.roster = new Map();
    /** @type {Map<string, string>} pid -> display name, from the newest signed roster */
    this.names = new Map();
    /** @type {Map<string, number>} */
    this._sdpSeq = new Map();
    /** @type {Map<string, number>} */
    this._lastSeq = new Map();
    /** @type {{ik: JsonWebKey} | null} the identity's private key, only when made keepable */
    this._jwk = null;
    /** App messages (docs/security.md §10): to everyone, or privately with the therapist. */
    this.app = new AppChannel(room, this.keyState, {
      me: () => this.pid,
      sign: () => this.ik.privateKey,
      signer: (pid) => {
        const e = this.roster.get(pid); // the newest signed roster
        if (!e) throw new SecurityCheckFailed("app message from outside the signed roster");
        return e.ik;
      },
      privatePeer: (from) => {
        if (from !== this.therapistPid || this.pid === null) throw new SecurityCheckFailed("private app message from another client");
        return this.pid;
      },
      sendPrivate: (to) => {
        if (to !== this.therapistPid || this.pid === null) throw new TypeError("a client sends private app messages to the therapist only");
        return this.pid;
      },
    });
  }

  /**
   * Fresh IK_P and DK_P. With `opts.keepable` the private keys are exported once, at creation, as JWK (for
   * exportIdentity(): a reload of this tab keeps them) and used from non-extractable copies.
   * @param {string} room @param {LinkInfo | null} [link]
   * @param {{pid?: string | null, keyState?: KeyState, keepable?: boolean}} [opts]
   */
  static async create(room, link = null, opts = {}) {
    if (!opts.keepable) {
      const ik = await generateIdentity();
      const dk = await H.generateKeyPair();
      return new ClientKeys(room, link, ik, await pubRaw(ik.publicKey), dk, await H.exportPublicKey(dk.publicKey), opts);
    }
    const ikX = /** @type {CryptoKeyPair} */ (await subtle.generateKey(ECDSA, true, ["sign", "verify"]));
    const jwk = {
      ik: await subtle.exportKey("jwk", ikX.privateKey),
      hpke: [await newHpkeJwk()],
    };
    return ClientKeys._fromJwk(room, link, jwk, null, opts);
  }

  /**
   * @param {string} room @param {LinkInfo | null} link @param {{ik: JsonWebKey, hpke: JsonWebKey[]}} jwk
   * @param {Uint8Array | null} nC @param {{pid?: string | null, keyState?: KeyState}} opts
   */
  static async _fromJwk(room, link, jwk, nC, opts) {
    /** @param {JsonWebKey} k */
    const pub = (k) => ({ kty: "EC", crv: "P-256", x: k.x, y: k.y, ext: true });
    const ik = {
      privateKey: await subtle.importKey("jwk", jwk.ik, ECDSA, false, ["sign"]),
      publicKey: await subtle.importKey("jwk", pub(jwk.ik), ECDSA, true, ["verify"]),
    };
    if (!Array.isArray(jwk.hpke) || jwk.hpke.length === 0) throw new TypeError("no HPKE key");
    const hpke = [];
    for (const k of jwk.hpke) hpke.push(await hpkeFromJwk(k));
    const keys = new ClientKeys(room, link, ik, await pubRaw(ik.publicKey), hpke[0].key, hpke[0].raw, opts);
    keys.hpkeKeys = hpke;
    if (nC) keys.nC = nC;
    keys._jwk = { ik: { ...jwk.ik } };
    return keys;
  }

  /** A fresh HPKE key pair for the next ack (keepable when this client's keys are). */
  async _newHpkeKey() {
    if (this._jwk) return hpkeFromJwk(await newHpkeJwk());
    const key = await H.generateKeyPair();
    return { raw: await H.exportPublicKey(key.publicKey), key, jwk: null };
  }

  /**
   * This client's identity and the verified therapist state, for a reload of the same tab (sessionStorage):
   * IK_P and DK_P private keys (JWK), n_C, IK_T, n_T, the therapist's pid, the newest epoch number with its
   * signed roster (public keys) and the signed-SDP counters. Never an epoch secret or a media key. Null
   * without keepable keys or before a verified grant.
   * @returns {string | null}
   */
  exportIdentity() {
    if (!this._jwk || !this.ikT || !this.nT || this.pid === null) return null;
    return JSON.stringify({
      v: PROTOCOL_VERSION,
      room: this.room,
      pid: this.pid,
      ik: this._jwk.ik,
      hpke: this.hpkeKeys.map((k) => k.jwk),
      n_c: b64e(this.nC),
      ik_t: b64e(this.ikT),
      n_t: b64e(this.nT),
      therapist: this.therapistPid,
      epoch: this.newestEpoch,
      roster: [...this.roster].map(([pid, e]) => ({ pid, ik: b64e(e.ik), idx: e.idx, name: this.names.get(pid) ?? "" })),
      expires_at: this.expiresAt,
      sdp_seq: Object.fromEntries(this._sdpSeq),
      last_seq: Object.fromEntries(this._lastSeq),
    });
  }

  /**
   * The ClientKeys of exportIdentity() (same keys, hence the same safety code); throws on a malformed state or
   * one for another room, or when IK_T does not match the link's tk. The media keys come with the next epoch.
   * @param {string} room @param {LinkInfo | null} link @param {string} text
   * @param {{keyState?: KeyState}} [opts] @returns {Promise<ClientKeys>}
   */
  static async restoreIdentity(room, link, text, opts = {}) {
    const o = JSON.parse(text);
    if (!o || o.v !== PROTOCOL_VERSION || o.room !== room || typeof o.pid !== "string") throw new Error("bad client state");
    const ikT = b64field(o, "ik_t", 65);
    if (link?.tk && !eq(await tkOf(ikT), link.tk)) throw new SecurityCheckFailed("therapist key does not match the link");
    const keys = await ClientKeys._fromJwk(room, link, { ik: o.ik, hpke: o.hpke }, b64field(o, "n_c", 16), { ...opts, pid: o.pid });
    keys.ikT = ikT;
    keys.nT = b64field(o, "n_t", 16);
    keys.therapistPid = typeof o.therapist === "string" ? o.therapist : null;
    keys.newestEpoch = Number.isInteger(o.epoch) ? o.epoch : -1;
    keys.awaitingFirstEpoch = keys.newestEpoch < 0;
    keys.expiresAt = Number.isSafeInteger(o.expires_at) ? o.expires_at : 0;
    for (const e of Array.isArray(o.roster) ? o.roster : []) {
      keys.roster.set(strField(e, "pid"), { ik: b64field(e, "ik", 65), idx: intField(e, "idx") });
      keys.names.set(e.pid, clipName(e.name));
    }
    for (const [p, n] of Object.entries(o.sdp_seq || {})) if (Number.isInteger(n)) keys._sdpSeq.set(p, n);
    for (const [p, n] of Object.entries(o.last_seq || {})) if (Number.isInteger(n)) keys._lastSeq.set(p, n);
    return keys;
  }

  /** The hello.intro string. @returns {Promise<string>} */
  async makeIntro() {
    const payload = {
      v: PROTOCOL_VERSION,
      t: "intro",
      room: this.room,
      ik: b64e(this.ikRaw),
      dk: b64e(this.hpkeKeys[this.hpkeKeys.length - 1].raw),
      commit: b64e(await sha256(S.concat(this.nC, this.ikRaw))),
      ts: Date.now(),
    };
    /** @type {Envelope} */
    const env = await envelope(this.ik.privateKey, payload);
    const s = this.link?.sLink ?? null;
    env.mac = s ? b64e(await hmacSha256(await kAuth(s, this.room), te.encode(env.p))) : null;
    return JSON.stringify(env);
  }

  /** Verify the admitted.grant; throws SecurityCheckFailed.
   * @param {string | Envelope | null | undefined} grant @param {string} [pid] */
  async checkGrant(grant, pid) {
    if (pid !== undefined) this.pid = pid;
    if (grant === null || grant === undefined) throw new SecurityCheckFailed("no grant");
    const ikT = b64field(parseEnvelope(grant).payload, "ik_t", 65);
    const { payload } = await openEnvelope(grant, this.room, "grant", ikT);
    if (this.link?.tk && !eq(await tkOf(ikT), this.link.tk))
      throw new SecurityCheckFailed("therapist key does not match the link");
    if (this.ikT && !eq(this.ikT, ikT)) throw new SecurityCheckFailed("therapist key changed");
    if (this.pid === null || payload.pid !== this.pid) throw new SecurityCheckFailed("grant for another client");
    this.ikT = ikT;
    this.nT = b64field(payload, "n_t", 16);
    this.awaitingFirstEpoch = true;
  }

  /** @returns {Promise<string>} */
  async makeReveal() {
    if (!this.nT) throw new Error("no grant yet");
    const payload = { v: PROTOCOL_VERSION, t: "reveal", room: this.room, pid: this.pid, n_c: b64e(this.nC) };
    return JSON.stringify(await envelope(this.ik.privateKey, payload));
  }

  /** @returns {Promise<Sas>} */
  async sas() {
    if (!this.ikT || !this.nT) throw new Error("no grant yet");
    return sas(this.ikRaw, this.ikT, this.nC, this.nT, this.room);
  }

  /**
   * Install a therapist-signed epoch; resolves to the ack to send, or null if it is old (ignored).
   * Throws SecurityCheckFailed for forged/malformed/expired epochs or when this client is not in it.
   * @param {string | Envelope} data @param {number} [nowMs] this client's clock @returns {Promise<string | null>}
   */
  async acceptEpoch(data, nowMs) {
    if (!this.ikT) throw new SecurityCheckFailed("epoch before grant");
    const { payload } = await openEnvelope(data, this.room, "epoch", this.ikT);
    const epoch = intField(payload, "epoch");
    if (epoch <= this.newestEpoch) return null;
    if (epoch >= 2 ** 32) throw new SecurityCheckFailed("epoch out of range");
    const now = nowMs ?? Date.now();
    const expiresAt = intField(payload, "expires_at");
    if (expiresAt <= now) throw new SecurityCheckFailed("expired epoch");
    if (expiresAt > now + MAX_EPOCH_AHEAD_MS) throw new SecurityCheckFailed("epoch valid for too long");
    const rosterIn = payload.roster;
    const wrapped = payload.wrapped;
    if (!Array.isArray(rosterIn) || !wrapped || typeof wrapped !== "object" || Array.isArray(wrapped))
      throw new SecurityCheckFailed("bad epoch");
    /** @type {Map<string, {ik: Uint8Array, idx: number}>} */
    const roster = new Map();
    /** @type {Map<string, string>} */
    const names = new Map();
    const seen = new Set();
    /** @type {string | null} */
    let therapistPid = null;
    for (const entry of rosterIn) {
      if (!entry || typeof entry !== "object") throw new SecurityCheckFailed("bad roster");
      const pid = strField(entry, "pid");
      const ik = b64field(entry, "ik", 65);
      const idx = intField(entry, "idx");
      if (idx >= MAX_MEMBERS || seen.has(idx) || roster.has(pid) || typeof entry.name !== "string")
        throw new SecurityCheckFailed("bad roster");
      seen.add(idx);
      roster.set(pid, { ik, idx });
      names.set(pid, entry.name);
      if (idx === 0) {
        if (!eq(ik, this.ikT)) throw new SecurityCheckFailed("roster names another therapist key");
        therapistPid = pid;
      }
    }
    if (therapistPid === null) throw new SecurityCheckFailed("roster without therapist");
    const me = this.pid === null ? undefined : roster.get(this.pid);
    const mine = this.pid === null ? undefined : wrapped[this.pid];
    if (!me && this.awaitingFirstEpoch) return null; // not keyed yet (admitted a moment ago): not for us, no attack
    if (!me || !eq(me.ik, this.ikRaw) || typeof mine !== "string") throw new SecurityCheckFailed("not a member of this epoch");
    let sealed;
    try {
      sealed = b64d(mine);
    } catch {
      throw new SecurityCheckFailed("cannot unwrap the epoch key");
    }
    /** @type {Uint8Array | null} */
    let secret = null;
    let used = -1;
    for (let i = this.hpkeKeys.length - 1; i >= 0; i--) { // newest first
      try {
        secret = await H.openCombined(this.hpkeKeys[i].key, sealed, epochInfo(this.room, epoch));
      } catch {
        continue;
      }
      used = i;
      break;
    }
    if (secret === null) throw new SecurityCheckFailed("cannot unwrap the epoch key");
    if (secret.length !== 2 * SECRET_LEN) throw new SecurityCheckFailed("bad epoch key");
    const pairwise = secret.slice(SECRET_LEN);
    secret = secret.slice(0, SECRET_LEN);
    // Per-epoch HPKE keys: the therapist has the key that worked, so every older one is erased; the ack
    // announces a fresh one for the next epoch.
    this.hpkeKeys.splice(0, used);
    this.hpkeKeys.push(await this._newHpkeKey());
    if (this.hpkeKeys.length > MAX_HPKE_KEYS) this.hpkeKeys.splice(0, this.hpkeKeys.length - MAX_HPKE_KEYS);
    this.newestEpoch = epoch;
    this.awaitingFirstEpoch = false;
    this.expiresAt = expiresAt;
    this.roster = roster;
    this.names = names;
    this.therapistPid = therapistPid;
    /** @type {Record<string, number>} */
    const idxs = {};
    for (const [p, e] of roster) idxs[p] = e.idx;
    await this.keyState.install(epoch, await S.epochBaseKey(secret, this.room), idxs, me.idx, expiresAt);
    await this.app.add(epoch, secret, new Map([[/** @type {string} */ (this.pid), pairwise]]), roster.keys());
    const ack = {
      v: PROTOCOL_VERSION, t: "ack", room: this.room, pid: this.pid, epoch, dk: b64e(this.hpkeKeys[this.hpkeKeys.length - 1].raw),
    };
    return JSON.stringify(await envelope(this.ik.privateKey, ack));
  }

  /**
   * The pid and signed name of the newest roster's member with sender index `idx` (from a frame's KID).
   * @param {number} idx @returns {{pid: string, name: string} | null}
   */
  senderOf(idx) {
    for (const [pid, e] of this.roster) if (e.idx === idx) return { pid, name: this.names.get(pid) ?? "" };
    return null;
  }

  /** Apply a therapist-signed switch; false if old or for an epoch we do not have.
   * @param {string | Envelope} data @returns {Promise<boolean>} */
  async acceptSwitch(data) {
    if (!this.ikT) throw new SecurityCheckFailed("switch before grant");
    const { payload } = await openEnvelope(data, this.room, "switch", this.ikT);
    return this.keyState.switch(intField(payload, "epoch"));
  }

  /** Dispatch key data from the therapist: epoch -> ack string (or null), switch -> boolean.
   * @param {string} data @param {number} [nowMs] @returns {Promise<string | boolean | null>} */
  async handleKey(data, nowMs) {
    const kind = messageKind(data);
    if (kind === "epoch") return this.acceptEpoch(data, nowMs);
    if (kind === "switch") return this.acceptSwitch(data);
    throw new SecurityCheckFailed("unexpected key message");
  }

  /** Sent back to the waiting room: forget media and app keys. */
  reset() {
    this.keyState.clear();
    this.app.clear();
    this.nT = null;
    this.awaitingFirstEpoch = true;
  }

  /** @param {string} pid @returns {Uint8Array} */
  _ikOf(pid) {
    if (this.ikT && pid === this.therapistPid) return this.ikT;
    const e = this.roster.get(pid);
    if (e) return e.ik;
    // Outside the signed roster only the therapist can be a peer: before the first epoch, or back with a new
    // connection (a new pid) before its next epoch. Anyone else's SDP fails this signature check.
    if (this.ikT) return this.ikT;
    throw new SecurityCheckFailed("SDP from a peer outside the signed roster");
  }

  /** @param {string} to @param {"offer" | "answer"} type @param {string} sdp */
  async signSdp(to, type, sdp) {
    if (this.pid === null) throw new Error("no pid yet");
    const seq = (this._sdpSeq.get(to) ?? 0) + 1;
    this._sdpSeq.set(to, seq);
    return signSdp(this.ik.privateKey, {
      room: this.room,
      from: this.pid,
      to,
      epoch: Math.max(this.newestEpoch, 0),
      type,
      seq,
      sdp,
    });
  }

  /** Verify an offer/answer from `from` (therapist: IK_T from the grant; others: the roster).
   * @param {string} from @param {"offer" | "answer"} type @param {string} sdp @param {string | null | undefined} sig */
  async verifySdp(from, type, sdp, sig) {
    if (this.pid === null) throw new SecurityCheckFailed("no pid yet");
    const payload = await verifySdp(sig, sdp, {
      ik: this._ikOf(from),
      room: this.room,
      from,
      to: this.pid,
      type,
      lastSeq: this._lastSeq.get(from) ?? -1,
    });
    this._lastSeq.set(from, payload.seq);
  }
}
