// Test helper for tests/unit/test_js_crypto.py (not a test file itself).
//
//   node tests/js/crypto_cli.mjs <command>   < request.json   > response.json
//
// Commands:
//   sframe-protect-fixed  {room_id, epochs:[{epoch, epoch_secret}], frames:[{kind, epoch, sender_index, stream, ctr, frame}]}
//                         -> {base_keys:{epoch: hex}, frames:[{kid, protected}]}
//   sframe-encrypt        {base_key, epoch, sender_index, frames:[{kind, frame}]}   (FrameEncryptor)
//                         -> {protected:[hex]}
//   sframe-decrypt        {keys:[{epoch, sender_index, base_key}], remove_epochs:[n], frames:[{kind, data, expected_sender_index}]}
//                         -> {frames:[hex|null], failures, decrypted}
//   hpke-seal             {pk, info, pt}            -> {data: hex(enc||ct)}
//   hpke-open             {sk, info, data}          -> {pt: hex}  (or {error})
//   hpke-seal-fixed       {pk, info, aad, pt, ikmE} -> {enc, ct}
import * as S from "../../web/static/js/lib/sframe.js";
import * as H from "../../web/static/js/lib/hpke.js";

const hex = S.hexToBytes;
const toHex = S.bytesToHex;

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const commands = {
  async "sframe-protect-fixed"(req) {
    const baseKeys = {};
    for (const e of req.epochs) baseKeys[e.epoch] = await S.epochBaseKey(hex(e.epoch_secret), req.room_id);
    const frames = [];
    for (const f of req.frames) {
      const kid = S.makeKid(f.stream, f.sender_index, f.epoch);
      const { key, salt } = await S.deriveKeySalt(S.ALCOVE_SUITE, kid, baseKeys[f.epoch]);
      frames.push({ kid, protected: toHex(await S.protectFrame(f.kind, key, salt, kid, BigInt(f.ctr), hex(f.frame))) });
    }
    return { base_keys: Object.fromEntries(Object.entries(baseKeys).map(([k, v]) => [k, toHex(v)])), frames };
  },
  async "sframe-encrypt"(req) {
    const enc = new S.FrameEncryptor();
    await enc.setKey(req.epoch, req.sender_index, hex(req.base_key));
    const out = [];
    for (const f of req.frames) out.push(toHex(await enc.protect(f.kind, hex(f.frame))));
    return { protected: out };
  },
  async "sframe-decrypt"(req) {
    const dec = new S.FrameDecryptor();
    for (const k of req.keys) await dec.addKey(k.epoch, k.sender_index, hex(k.base_key));
    for (const e of req.remove_epochs ?? []) dec.removeEpoch(e);
    const out = [];
    for (const f of req.frames) {
      const r = await dec.unprotect(f.kind, hex(f.data), f.expected_sender_index ?? null);
      out.push(r === null ? null : toHex(r));
    }
    return { frames: out, failures: dec.failures, decrypted: dec.decrypted };
  },
  async "hpke-seal"(req) {
    return { data: toHex(await H.sealCombined(hex(req.pk), hex(req.info), hex(req.pt))) };
  },
  async "hpke-open"(req) {
    const kp = await H.importPrivateScalar(hex(req.sk));
    try {
      return { pt: toHex(await H.openCombined(kp, hex(req.data), hex(req.info))) };
    } catch (e) {
      return { error: String(e && e.name) };
    }
  },
  async "hpke-seal-fixed"(req) {
    const { enc, ctx } = await H.setupBaseS(hex(req.pk), hex(req.info), { ikmE: hex(req.ikmE) });
    return { enc: toHex(enc), ct: toHex(await ctx.seal(hex(req.aad), hex(req.pt))) };
  },
};

const cmd = process.argv[2];
if (!(cmd in commands)) {
  process.stderr.write(`unknown command ${cmd}\n`);
  process.exit(2);
}
const res = await commands[cmd](await readStdin());
process.stdout.write(JSON.stringify(res) + "\n");
