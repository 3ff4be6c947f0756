// node --test tests/js/  (Node >= 20; no npm packages)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import * as S from "../../web/static/js/lib/sframe.js";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const hex = S.hexToBytes;
const toHex = S.bytesToHex;

// BigInt-safe loading (vectors README): quote kid/ctr before JSON.parse, then BigInt().
function loadVectors() {
  const text = readFileSync(here("../data/sframe-rfc9605.json"), "utf8");
  const quoted = text.replace(/("(?:kid|ctr)": *)(\d+)/g, '$1"$2"');
  const v = JSON.parse(quoted);
  for (const sec of ["header", "sframe"]) {
    for (const e of v[sec]) {
      e.kid = BigInt(e.kid);
      e.ctr = BigInt(e.ctr);
    }
  }
  return v;
}

const V = loadVectors();
const GOLDEN = JSON.parse(readFileSync(here("../data/sframe-golden.json"), "utf8"));

function flip(bytes, index, bit = 0) {
  const out = Uint8Array.from(bytes);
  out[index < 0 ? out.length + index : index] ^= 1 << bit;
  return out;
}

test("BigInt-safe loading keeps 2^64-1", () => {
  assert.ok(V.header.some((h) => h.ctr === 0xffffffffffffffffn));
  assert.ok(V.header.some((h) => h.ctr === 72057594037927935n));
  assert.equal(V.header.length, 289);
});

test("header vectors: encode and decode (289)", () => {
  for (const h of V.header) {
    const enc = S.encodeHeader(h.kid, h.ctr);
    assert.equal(toHex(enc), h.encoded, `encode kid=${h.kid} ctr=${h.ctr}`);
    const dec = S.decodeHeader(hex(h.encoded));
    assert.equal(dec.kid, h.kid);
    assert.equal(dec.ctr, h.ctr);
    assert.equal(dec.length, h.encoded.length / 2);
    // Trailing bytes are not part of the header.
    const dec2 = S.decodeHeader(S.concat(hex(h.encoded), Uint8Array.of(0xaa, 0xbb)));
    assert.equal(dec2.length, h.encoded.length / 2);
  }
});

test("header: maximum values, range errors, truncation", () => {
  const max = (1n << 64n) - 1n;
  const h = S.encodeHeader(max, max);
  assert.equal(toHex(h), "ff" + "ff".repeat(16));
  assert.deepEqual(S.decodeHeader(h), { kid: max, ctr: max, length: 17 });
  assert.throws(() => S.encodeHeader(max + 1n, 0n), S.SFrameError);
  assert.throws(() => S.encodeHeader(0n, -1n), S.SFrameError);
  assert.throws(() => S.decodeHeader(new Uint8Array(0)), S.SFrameError);
  for (let cut = 1; cut < h.length; cut++) {
    assert.throws(() => S.decodeHeader(h.subarray(0, cut)), S.SFrameError, `cut ${cut}`);
  }
  assert.throws(() => S.decodeHeader(hex("9001")), S.SFrameError); // 2-byte KID, 1 present
});

test("aes_ctr_hmac vectors (suites 1-3, truncated tags)", async () => {
  assert.equal(V.aes_ctr_hmac.length, 3);
  for (const v of V.aes_ctr_hmac) {
    const cs = S.getSuite(v.cipher_suite);
    const key = hex(v.key);
    assert.equal(toHex(key.subarray(0, 16)), v.enc_key);
    assert.equal(toHex(key.subarray(16)), v.auth_key);
    const ct = await S.aeadEncrypt(v.cipher_suite, key, hex(v.nonce), hex(v.aad), hex(v.pt));
    assert.equal(toHex(ct), v.ct);
    assert.equal(ct.length, v.pt.length / 2 + cs.nt);
    const pt = await S.aeadDecrypt(v.cipher_suite, key, hex(v.nonce), hex(v.aad), hex(v.ct));
    assert.equal(toHex(pt), v.pt);
    await assert.rejects(S.aeadDecrypt(v.cipher_suite, key, hex(v.nonce), hex(v.aad), flip(hex(v.ct), -1)), S.SFrameError);
    await assert.rejects(S.aeadDecrypt(v.cipher_suite, key, hex(v.nonce), flip(hex(v.aad), 0), hex(v.ct)), S.SFrameError);
  }
});

test("sframe vectors (suites 1-5) with every intermediate", async () => {
  assert.equal(V.sframe.length, 5);
  for (const v of V.sframe) {
    const ks = await S.deriveKeySalt(v.cipher_suite, v.kid, hex(v.base_key));
    assert.equal(toHex(ks.keyLabel), v.sframe_key_label);
    assert.equal(toHex(ks.saltLabel), v.sframe_salt_label);
    assert.equal(toHex(ks.secret), v.sframe_secret);
    assert.equal(toHex(ks.key), v.sframe_key);
    assert.equal(toHex(ks.salt), v.sframe_salt);
    assert.equal(toHex(S.makeNonce(ks.salt, v.ctr)), v.nonce);
    const header = S.encodeHeader(v.kid, v.ctr);
    assert.equal(toHex(S.concat(header, hex(v.metadata))), v.aad);
    const ct = await S.protect(v.cipher_suite, ks.key, ks.salt, v.kid, v.ctr, hex(v.metadata), hex(v.pt));
    assert.equal(toHex(ct), v.ct);
    // With a pre-imported key too.
    const sk = await S.importSuiteKey(v.cipher_suite, ks.key);
    assert.equal(toHex(await S.protect(v.cipher_suite, sk, ks.salt, v.kid, v.ctr, hex(v.metadata), hex(v.pt))), v.ct);
    const r = await S.unprotect(v.cipher_suite, ks.key, ks.salt, hex(v.metadata), hex(v.ct));
    assert.equal(r.kid, v.kid);
    assert.equal(r.ctr, v.ctr);
    assert.equal(toHex(r.plaintext), v.pt);
    // Negative: flipped tag bit, flipped header bit, wrong metadata, truncated.
    await assert.rejects(S.unprotect(v.cipher_suite, ks.key, ks.salt, hex(v.metadata), flip(hex(v.ct), -1, 7)), S.SFrameError);
    await assert.rejects(S.unprotect(v.cipher_suite, ks.key, ks.salt, hex(v.metadata), flip(hex(v.ct), header.length - 1)), S.SFrameError);
    await assert.rejects(S.unprotect(v.cipher_suite, ks.key, ks.salt, flip(hex(v.metadata), 0), hex(v.ct)), S.SFrameError);
    await assert.rejects(S.unprotect(v.cipher_suite, ks.key, ks.salt, hex(v.metadata), hex(v.ct).subarray(0, 2)), S.SFrameError);
  }
});

test("golden file: JS reproduces Python byte for byte and decrypts", async () => {
  const baseKeys = new Map();
  for (const e of GOLDEN.epochs) {
    const bk = await S.epochBaseKey(hex(e.epoch_secret), GOLDEN.room_id);
    assert.equal(toHex(bk), e.base_key, `base key of epoch ${e.epoch}`);
    baseKeys.set(e.epoch, bk);
  }
  assert.ok(GOLDEN.frames.length >= 10);
  for (const f of GOLDEN.frames) {
    const kid = S.makeKid(f.stream, f.sender_index, f.epoch);
    assert.equal(kid, f.kid, f.name);
    const ks = await S.deriveKeySalt(4, kid, baseKeys.get(f.epoch));
    assert.equal(toHex(ks.key), f.sframe_key, f.name);
    assert.equal(toHex(ks.salt), f.sframe_salt, f.name);
    assert.equal(toHex(S.makeNonce(ks.salt, f.ctr)), f.nonce, f.name);
    const frame = hex(f.frame);
    assert.equal(Math.min(S.clearPrefixLen(f.kind, frame), frame.length), f.clear_prefix_len, f.name);
    assert.equal(toHex(S.encodeHeader(kid, f.ctr)), f.header, f.name);
    const prot = await S.protectFrame(f.kind, ks.key, ks.salt, kid, f.ctr, frame);
    assert.equal(toHex(prot), f.protected, f.name);
    const back = await S.unprotectFrame(f.kind, ks.key, ks.salt, hex(f.protected));
    assert.equal(toHex(back.frame), f.frame, f.name);
    // Through the FrameDecryptor with the roster check.
    const dec = new S.FrameDecryptor();
    await dec.addKey(f.epoch, f.sender_index, baseKeys.get(f.epoch));
    assert.equal(toHex(await dec.unprotect(f.kind, hex(f.protected), f.sender_index)), f.frame, f.name);
    assert.equal(await dec.unprotect(f.kind, hex(f.protected), f.sender_index), null, `${f.name} replay`);
    const other = (f.sender_index + 1) % 16;
    assert.equal(await dec.unprotect(f.kind, hex(f.protected), other), null, `${f.name} wrong sender`);
    const wrongKind = f.kind === "audio" ? "video" : "audio";
    assert.equal(await new S.FrameDecryptor().unprotect(wrongKind, hex(f.protected)), null);
  }
});

test("clear prefix rule is computed from the bytes", () => {
  assert.equal(S.clearPrefixLen("video", Uint8Array.of(0x10, 1, 2)), 10); // keyframe
  assert.equal(S.clearPrefixLen("video", Uint8Array.of(0x11, 1, 2)), 3); // delta
  assert.equal(S.clearPrefixLen("audio", Uint8Array.of(0xfc)), 1);
  assert.equal(S.clearPrefixLen("video", new Uint8Array(0)), 0);
  assert.equal(S.makeKid(1, 2, 19), 0x123);
  assert.deepEqual(S.parseKid(0x123n), { stream: 1, senderIndex: 2, epochLow: 3 });
  assert.throws(() => S.makeKid(4, 0, 0), S.SFrameError);
  assert.throws(() => S.makeKid(0, 16, 0), S.SFrameError);
});

const BK1 = hex("000102030405060708090a0b0c0d0e0f");
const BK2 = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
const KEYFRAME = S.concat(hex("5004009d012a8002e001"), new Uint8Array(100).fill(7));
const DELTA = S.concat(hex("b10100"), new Uint8Array(50).fill(9));
const OPUS = S.concat(hex("fc"), new Uint8Array(40).fill(3));

test("encryptor/decryptor round trip, counters, replay window", async () => {
  const enc = new S.FrameEncryptor();
  await assert.rejects(enc.protect("video", KEYFRAME), S.SFrameError); // no key: fail closed
  await enc.setKey(1, 4, BK1);
  const dec = new S.FrameDecryptor();
  await dec.addKey(1, 4, BK1);
  const kf = await enc.protect("video", KEYFRAME);
  assert.deepEqual(kf.subarray(0, 10), KEYFRAME.subarray(0, 10));
  assert.notDeepEqual(kf.subarray(10, KEYFRAME.length), KEYFRAME.subarray(10));
  assert.deepEqual(await dec.unprotect("video", kf, 4), KEYFRAME);
  const d = await enc.protect("video", DELTA);
  const o = await enc.protect("audio", OPUS);
  assert.deepEqual(await dec.unprotect("audio", o, 4), OPUS);
  assert.deepEqual(await dec.unprotect("video", d, 4), DELTA);
  // Audio and video keep separate counters and KIDs.
  assert.equal(S.decodeHeader(d.subarray(3)).ctr, 1n);
  assert.equal(S.decodeHeader(o.subarray(1)).ctr, 0n);
  assert.equal(S.decodeHeader(o.subarray(1)).kid, 0x041n);
  // Replay.
  assert.equal(await dec.unprotect("video", kf, 4), null);
  assert.equal(dec.decrypted, 3);
  assert.equal(dec.failures, 1);
  // Empty frames pass unchanged.
  assert.equal((await enc.protect("audio", new Uint8Array(0))).length, 0);
  assert.equal((await dec.unprotect("audio", new Uint8Array(0))).length, 0);
  // Short frames.
  for (const short of [Uint8Array.of(0x10), Uint8Array.of(0x10, 1, 2, 3), Uint8Array.of(0x11, 5)]) {
    const p = await enc.protect("video", short);
    assert.equal(p.length, short.length + S.decodeHeader(p.subarray(short.length)).length + 16);
    assert.deepEqual(await dec.unprotect("video", p, 4), short);
  }
});

test("replay window: out of order within 128 accepted once, older dropped", async () => {
  const enc = new S.FrameEncryptor();
  await enc.setKey(2, 0, BK1);
  const frames = [];
  for (let i = 0; i < 200; i++) frames.push(await enc.protect("audio", OPUS));
  const dec = new S.FrameDecryptor();
  await dec.addKey(2, 0, BK1);
  assert.ok(await dec.unprotect("audio", frames[150]));
  assert.ok(await dec.unprotect("audio", frames[100])); // 50 behind: ok
  assert.equal(await dec.unprotect("audio", frames[100]), null); // replay
  assert.ok(await dec.unprotect("audio", frames[23])); // 127 behind: still in window
  assert.equal(await dec.unprotect("audio", frames[22]), null); // 128 behind: too old
  assert.ok(await dec.unprotect("audio", frames[199]));
  assert.equal(await dec.unprotect("audio", frames[150]), null);
  assert.equal(dec.failures, 3);
  // Concurrent duplicates: only one is accepted.
  const both = await Promise.all([dec.unprotect("audio", frames[180]), dec.unprotect("audio", frames[180])]);
  assert.equal(both.filter((x) => x !== null).length, 1);
});

test("wrong key, tampering and unknown KID give null, never ciphertext", async () => {
  const enc = new S.FrameEncryptor();
  await enc.setKey(5, 3, BK1);
  const p = await enc.protect("video", KEYFRAME);
  const wrong = new S.FrameDecryptor();
  await wrong.addKey(5, 3, BK2);
  assert.equal(await wrong.unprotect("video", p), null);
  const unknown = new S.FrameDecryptor();
  await unknown.addKey(5, 2, BK1); // other sender index: KID unknown
  assert.equal(await unknown.unprotect("video", p), null);
  const dec = new S.FrameDecryptor();
  await dec.addKey(5, 3, BK1);
  assert.equal(await dec.unprotect("video", flip(p, -1)), null); // tag
  assert.equal(await dec.unprotect("video", flip(p, 5)), null); // clear prefix is authenticated
  assert.equal(await dec.unprotect("video", p.subarray(0, 11)), null); // truncated header
  assert.equal(await dec.unprotect("video", p.subarray(0, p.length - 1)), null);
  assert.equal(dec.failures, 4);
  assert.deepEqual(await dec.unprotect("video", p), KEYFRAME);
});

test("old epoch decrypt-only, then removed; same low bits replace", async () => {
  const enc = new S.FrameEncryptor();
  await enc.setKey(1, 0, BK1);
  const old = await enc.protect("audio", OPUS);
  await enc.setKey(2, 0, BK2);
  const cur = await enc.protect("audio", OPUS);
  assert.equal(S.decodeHeader(cur.subarray(1)).ctr, 0n);
  await assert.rejects(enc.setKey(1, 0, BK1), S.SFrameError); // epochs only increase
  const dec = new S.FrameDecryptor();
  await dec.addKey(1, 0, BK1);
  await dec.addKey(2, 0, BK2);
  assert.deepEqual(await dec.unprotect("audio", cur), OPUS);
  assert.deepEqual(await dec.unprotect("audio", old), OPUS);
  dec.removeEpoch(1);
  assert.deepEqual([...dec.epochs()], [2]);
  const old2 = await (async () => {
    const e = new S.FrameEncryptor();
    await e.setKey(1, 0, BK1);
    await e.protect("audio", OPUS);
    return e.protect("audio", OPUS);
  })();
  assert.equal(await dec.unprotect("audio", old2), null);
  // Epoch 18 has the same low 4 bits as 2: installing it drops epoch 2.
  await dec.addKey(18, 0, BK1);
  assert.deepEqual([...dec.epochs()], [18]);
  const e2 = new S.FrameEncryptor();
  await e2.setKey(2, 0, BK2);
  await e2.protect("audio", OPUS);
  assert.equal(await dec.unprotect("audio", await e2.protect("audio", OPUS)), null);
  await assert.rejects(dec.addKey(2, 0, BK2), S.SFrameError); // older than installed 18
});

test("counter exhaustion at 2^32 and restart continues counters", async () => {
  const enc = new S.FrameEncryptor();
  await enc.setKey(7, 1, BK1);
  await enc.protect("video", DELTA);
  await enc.setKey(7, 1, BK1); // transform restart, same epoch
  const p = await enc.protect("video", DELTA);
  assert.equal(S.decodeHeader(p.subarray(3)).ctr, 1n);
  const kid = S.makeKid(1, 1, 7);
  enc._counters.set(`7:${kid}`, 2 ** 32 - 1);
  const last = await enc.protect("video", DELTA);
  assert.equal(S.decodeHeader(last.subarray(3)).ctr, 2n ** 32n - 1n);
  await assert.rejects(enc.protect("video", DELTA), S.SFrameCounterExhausted);
  await assert.rejects(enc.protect("video", DELTA), S.SFrameCounterExhausted);
  // Audio is unaffected.
  assert.ok((await enc.protect("audio", OPUS)).length > 0);
  const dec = new S.FrameDecryptor();
  await dec.addKey(7, 1, BK1);
  assert.deepEqual(await dec.unprotect("video", last), DELTA);
  // A receiver rejects CTR >= 2^32 outright.
  const ks = await S.deriveKeySalt(4, kid, BK1);
  const big = await S.protectFrame("video", ks.key, ks.salt, kid, 2n ** 32n, DELTA);
  assert.equal(await dec.unprotect("video", big), null);
});
