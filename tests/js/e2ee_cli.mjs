// Line-oriented driver for web/static/js/lib/e2ee.js, used by tests/unit/test_e2ee_interop.py.
// Reads one JSON request per line on stdin: {"id": n, "cmd": "...", "obj": "name", ...args};
// writes one JSON response per line: {"id": n, "ok": result} or {"id": n, "error": name, "message": msg}.
// Objects (TherapistKeys / ClientKeys) persist across lines under their "obj" name.
import readline from "node:readline";
import * as E from "../../web/static/js/lib/e2ee.js";
import * as S from "../../web/static/js/lib/sframe.js";

const hex = S.hexToBytes;
const toHex = S.bytesToHex;
/** @type {Map<string, any>} */
const objs = new Map();

/** @param {any} s */
const sasOut = (s) => ({ indices: s.indices, decimal: s.decimal, emoji: s.emoji });

const commands = {
  emoji: async () => [...E.EMOJI],
  "therapist.create": async (r) => {
    const t = await E.TherapistKeys.create(r.room, r.pid, {
      sLink: r.s_link ? hex(r.s_link) : null,
      firstEpoch: r.first_epoch,
    });
    objs.set(r.obj, t);
    return { ik: toHex(t.ikRaw), tk: toHex(t.tk) };
  },
  "therapist.check_intro": async (r) => {
    const info = await objs.get(r.obj).checkIntro(r.pid, r.intro);
    return { mac_ok: info.macOk, ik: toHex(info.ik) };
  },
  "therapist.make_grant": async (r) => objs.get(r.obj).makeGrant(r.pid),
  "therapist.check_reveal": async (r) => sasOut(await objs.get(r.obj).checkReveal(r.pid, r.data)),
  "therapist.forget": async (r) => objs.get(r.obj).forget(r.pid) ?? null,
  "therapist.make_epoch": async (r) => {
    const res = await objs.get(r.obj).makeEpoch(r.pids, r.names ?? null, r.now_ms ? { nowMs: r.now_ms } : {});
    return { epoch: res.epoch, message: res.message, roster: res.roster, expires_at: res.expiresAt };
  },
  "therapist.check_ack": async (r) => objs.get(r.obj).checkAck(r.pid, r.data),
  "therapist.make_switch": async (r) => objs.get(r.obj).makeSwitch(),
  "client.create": async (r) => {
    const link = r.fragment ? E.parseLinkFragment(r.fragment) : null;
    const c = await E.ClientKeys.create(r.room, link, { pid: r.pid ?? null });
    objs.set(r.obj, c);
    return { ik: toHex(c.ikRaw) };
  },
  "client.make_intro": async (r) => objs.get(r.obj).makeIntro(),
  "client.check_grant": async (r) => (await objs.get(r.obj).checkGrant(r.grant, r.pid)) ?? null,
  "client.make_reveal": async (r) => objs.get(r.obj).makeReveal(),
  "client.sas": async (r) => sasOut(await objs.get(r.obj).sas()),
  "client.accept_epoch": async (r) => objs.get(r.obj).acceptEpoch(r.data, r.now_ms ?? undefined),
  "client.names": async (r) => Object.fromEntries(objs.get(r.obj).names),
  "client.hpke_keys": async (r) => objs.get(r.obj).hpkeKeys.map((/** @type {any} */ k) => toHex(k.raw)),
  "therapist.keyable": async (r) => objs.get(r.obj).keyable(r.pid),
  "client.accept_switch": async (r) => objs.get(r.obj).acceptSwitch(r.data),
  sign_sdp: async (r) => objs.get(r.obj).signSdp(r.to, r.type, r.sdp),
  verify_sdp: async (r) => (await objs.get(r.obj).verifySdp(r.from, r.type, r.sdp, r.sig)) ?? null,
  encrypt: async (r) => {
    const out = await objs.get(r.obj).keyState.encrypt(r.kind, hex(r.frame));
    return out === null ? null : toHex(out);
  },
  decrypt: async (r) => {
    const out = await objs.get(r.obj).keyState.decrypt(r.kind, hex(r.data), r.from_idx);
    return out === null ? null : toHex(out);
  },
  "app.make": async (r) => objs.get(r.obj).app.make(r.body, r.to ?? null),
  "app.open": async (r) => objs.get(r.obj).app.open(r.from, r.data),
  sas: async (r) => sasOut(await E.sas(hex(r.ik_p), hex(r.ik_t), hex(r.n_c), hex(r.n_t), r.room)),
  k_auth: async (r) => toHex(await E.kAuth(hex(r.s), r.room)),
};

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  let res;
  try {
    const fn = commands[req.cmd];
    if (!fn) throw new Error(`unknown command ${req.cmd}`);
    res = { id: req.id, ok: await fn(req) };
  } catch (e) {
    res = { id: req.id, error: String(e?.name ?? "Error"), message: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(res) + "\n");
}
