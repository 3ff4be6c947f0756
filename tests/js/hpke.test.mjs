// node --test tests/js/  (Node >= 20; no npm packages)
import { test } from "node:test";
import assert from "node:assert/strict";

import * as H from "../../web/static/js/lib/hpke.js";

const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");
const te = new TextEncoder();

// RFC 9180 Appendix A.3.1: DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode.
const A31 = {
  info: "4f6465206f6e2061204772656369616e2055726e",
  ikmE: "4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e",
  skEm: "4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb",
  pkEm:
    "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
  ikmR: "668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550",
  skRm: "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
  pkRm:
    "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0",
  enc: "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
  shared_secret: "c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8",
  pt: "4265617574792069732074727574682c20747275746820626561757479",
  encryptions: [
    {
      seq: 0,
      aad: "436f756e742d30",
      ct: "5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f9076ac232e3ab2523f39513434",
    },
    {
      seq: 1,
      aad: "436f756e742d31",
      ct: "fa6f037b47fc21826b610172ca9637e82d6e5801eb31cbd3748271affd4ecb06646e0329cbdf3c3cd655b28e82",
    },
  ],
};

test("RFC 9180 A.3.1 DeriveKeyPair (recipient and ephemeral)", async () => {
  const r = await H.deriveKeyPair(hex(A31.ikmR));
  assert.equal(toHex(r.sk), A31.skRm);
  assert.equal(toHex(await H.exportPublicKey(r.publicKey)), A31.pkRm);
  const e = await H.deriveKeyPair(hex(A31.ikmE));
  assert.equal(toHex(e.sk), A31.skEm);
  assert.equal(toHex(await H.exportPublicKey(e.publicKey)), A31.pkEm);
});

test("RFC 9180 A.3.1 base mode: setupBaseS with ikmE, seal, setupBaseR, open", async () => {
  const { enc, ctx } = await H.setupBaseS(hex(A31.pkRm), hex(A31.info), { ikmE: hex(A31.ikmE) });
  assert.equal(toHex(enc), A31.enc);
  assert.equal(toHex(ctx.sharedSecret), A31.shared_secret);
  for (const e of A31.encryptions) {
    assert.equal(ctx.seq, e.seq);
    assert.equal(toHex(await ctx.seal(hex(e.aad), hex(A31.pt))), e.ct);
  }
  const recipient = await H.importPrivateScalar(hex(A31.skRm));
  const rctx = await H.setupBaseR(hex(A31.enc), recipient, hex(A31.info));
  assert.equal(toHex(rctx.sharedSecret), A31.shared_secret);
  // A failed open does not advance the sequence number.
  await assert.rejects(rctx.open(hex(A31.encryptions[1].aad), hex(A31.encryptions[0].ct)), H.HpkeError);
  for (const e of A31.encryptions) {
    assert.equal(toHex(await rctx.open(hex(e.aad), hex(e.ct))), A31.pt);
  }
  // Single-shot open of the first encryption.
  const pt = await H.open(recipient, hex(A31.enc), hex(A31.info), hex(A31.encryptions[0].aad), hex(A31.encryptions[0].ct));
  assert.equal(toHex(pt), A31.pt);
});

test("seal/open round trip with a generated (non-extractable) key pair", async () => {
  const kp = await H.generateKeyPair();
  assert.equal(kp.privateKey.extractable, false);
  const info = te.encode("alcove-e2ee epoch|room-1|7");
  const aad = te.encode("aad");
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const { enc, ct } = await H.seal(kp.publicKey, info, aad, secret);
  assert.equal(enc.length, 65);
  assert.equal(enc[0], 0x04);
  assert.equal(ct.length, 48);
  assert.deepEqual(await H.open(kp, enc, info, aad, ct), secret);
  // Fresh ephemeral key every time.
  const again = await H.seal(kp.publicKey, info, aad, secret);
  assert.notEqual(toHex(again.enc), toHex(enc));
  // Negative cases.
  await assert.rejects(H.open(kp, enc, te.encode("other info"), aad, ct), H.HpkeError);
  await assert.rejects(H.open(kp, enc, info, te.encode("other"), ct), H.HpkeError);
  const bad = Uint8Array.from(ct);
  bad[bad.length - 1] ^= 1;
  await assert.rejects(H.open(kp, enc, info, aad, bad), H.HpkeError);
  const other = await H.generateKeyPair();
  await assert.rejects(H.open(other, enc, info, aad, ct), H.HpkeError);
  await assert.rejects(H.open(kp, enc.subarray(0, 33), info, aad, ct), H.HpkeError);
  const offCurve = Uint8Array.from(enc);
  offCurve[64] ^= 1;
  await assert.rejects(H.open(kp, offCurve, info, aad, ct), H.HpkeError);
});

test("combined enc||ct format (Python hpke.Suite layout)", async () => {
  const kp = await H.generateKeyPair();
  const info = te.encode("info");
  const data = await H.sealCombined(await H.exportPublicKey(kp.publicKey), info, te.encode("hello"));
  assert.equal(data.length, 65 + 5 + 16);
  assert.equal(new TextDecoder().decode(await H.openCombined(kp, data, info)), "hello");
  await assert.rejects(H.openCombined(kp, data.subarray(0, 70), info), H.HpkeError);
});
