// The E2EE key protocol in JS (web/static/js/lib/e2ee.js): node --test tests/js/
import test from "node:test";
import assert from "node:assert/strict";
import * as E from "../../web/static/js/lib/e2ee.js";

const ROOM = "r_test-room";
const FP1 = "sha-256 " + Array(32).fill("AB").join(":");
const FP2 = "sha-256 " + Array(32).fill("CD").join(":");
const SDP = `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:${FP1}\r\n`;
const rnd = (n) => crypto.getRandomValues(new Uint8Array(n));
const VP8_KEY = Uint8Array.from([0x50, 0x04, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, ...rnd(200)]);
const VP8_DELTA = Uint8Array.from([0xb1, 0x01, 0x00, ...rnd(80)]);

async function therapist(opts = {}) {
  return E.TherapistKeys.create(ROOM, "p_therapist", { sLink: rnd(32), firstEpoch: 1, ...opts });
}

async function admit(t, pid, { tk = t.tk } = {}) {
  const c = await E.ClientKeys.create(ROOM, E.parseLinkFragment(E.makeLinkFragment("tok", t.sLink, tk)));
  const info = await t.checkIntro(pid, await c.makeIntro());
  assert.equal(info.macOk, true);
  await c.checkGrant(await t.makeGrant(pid), pid);
  const sasT = await t.checkReveal(pid, await c.makeReveal());
  assert.ok(E.sasEqual(await c.sas(), sasT));
  return c;
}

async function runEpoch(t, clients) {
  const res = await t.makeEpoch(Object.keys(clients));
  let done = false;
  for (const [pid, c] of Object.entries(clients)) {
    const ack = await c.handleKey(res.message);
    assert.equal(typeof ack, "string");
    done = (await t.handleKey(pid, ack)) === true;
  }
  assert.ok(done && t.switchDue());
  const sw = await t.makeSwitch();
  for (const c of Object.values(clients)) assert.equal(await c.handleKey(sw), true);
  return res.epoch;
}

function tamper(envStr, changes) {
  const env = JSON.parse(envStr);
  env.p = JSON.stringify({ ...JSON.parse(env.p), ...changes });
  return JSON.stringify(env);
}

test("e2ee: link fragment, b64, k_auth", async () => {
  const s = rnd(32);
  const tk = rnd(16);
  const link = E.parseLinkFragment(E.makeLinkFragment("abc.def", s, tk));
  assert.equal(link.token, "abc.def");
  assert.deepEqual(link.sLink, s);
  assert.deepEqual(link.tk, tk);
  assert.equal(E.parseLinkFragment("#t=xyz").sLink, null);
  assert.throws(() => E.parseLinkFragment("#s=" + E.b64e(s)));
  assert.throws(() => E.parseLinkFragment("#t=x&s=" + E.b64e(s.subarray(0, 20))));
  // a short link: a seat id and a 16-byte link secret (128 bits)
  assert.deepEqual(E.parseLinkFragment("#t=Ab3_Ab3_Ab3_Ab3_Ab3_xy&s=" + E.b64e(s.subarray(0, 16))).sLink, s.subarray(0, 16));
  assert.throws(() => E.b64d("a+b="));
  assert.deepEqual(E.b64d(E.b64e(Uint8Array.of(0, 255, 254))), Uint8Array.of(0, 255, 254));
  const k = await E.kAuth(s, ROOM);
  assert.equal(k.length, 32);
  assert.notDeepEqual(k, await E.kAuth(s, ROOM + "x"));
  assert.equal(E.EMOJI.length, 64);
  assert.equal(new Set(E.EMOJI).size, 64);
});

test("e2ee: full flow intro -> grant -> reveal -> SAS -> epoch -> ack -> switch, media", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const b = await admit(t, "p_b");
  assert.ok(!E.sasEqual(await a.sas(), await b.sas()));
  const s = await a.sas();
  assert.equal(s.emoji.length, 7);
  assert.ok(s.decimal.every((d) => d >= 1000 && d <= 9191));
  const epoch = await runEpoch(t, { p_a: a, p_b: b });
  assert.equal(a.therapistPid, "p_therapist");
  assert.equal(a.keyState.sendEpoch, epoch);
  for (const [kind, frame] of [["video", VP8_KEY], ["video", VP8_DELTA], ["audio", Uint8Array.of(0xfc, ...rnd(40))]]) {
    const prot = await t.keyState.encrypt(kind, frame);
    assert.ok(prot && prot.length > frame.length);
    assert.deepEqual(await a.keyState.decrypt(kind, prot, 0), frame);
    assert.deepEqual(await b.keyState.decryptFrom(kind, prot, "p_therapist"), frame);
    assert.equal(await b.keyState.decrypt(kind, prot, a.roster.get("p_a").idx), null);
  }
  const pa = await a.keyState.encrypt("video", VP8_DELTA);
  assert.deepEqual(await b.keyState.decryptFrom("video", pa, "p_a"), VP8_DELTA);
  assert.deepEqual(await t.keyState.decryptFrom("video", pa, "p_a"), VP8_DELTA);
});

test("e2ee: no key no send; tampered frame dropped; worker messages posted", async () => {
  const posted = [];
  const ks = new E.KeyState({ post: (m) => posted.push(m) });
  assert.equal(await ks.encrypt("video", VP8_KEY), null);
  assert.equal(ks.counters.dropped, 1);
  const t = await therapist({ keyState: ks });
  const a = await admit(t, "p_a");
  const epoch = await runEpoch(t, { p_a: a });
  assert.deepEqual(posted.map((m) => m.type), ["keys", "switch"]);
  assert.equal(posted[0].epoch, epoch);
  assert.equal(posted[0].sendIdx, 0);
  assert.deepEqual(Object.keys(posted[0].baseKeys).sort(), ["0", "1"]);
  assert.equal(posted[0].baseKeys[0].length, 16);
  const prot = await t.keyState.encrypt("video", VP8_KEY);
  prot[20] ^= 1;
  assert.equal(await a.keyState.decrypt("video", prot, 0), null);
  assert.equal(a.keyState.counters.failed, 1);
});

test("e2ee: removed member cannot unwrap the next epoch; old epoch retired after 5 s", async () => {
  let now = 1_000_000;
  const t = await therapist({ keyState: new E.KeyState({ now: () => now }) });
  const a = await admit(t, "p_a");
  const b = await admit(t, "p_b");
  const first = await runEpoch(t, { p_a: a, p_b: b });
  t.forget("p_b");
  const res = await t.makeEpoch(["p_a"]);
  assert.ok(!("p_b" in JSON.parse(JSON.parse(res.message).p).wrapped));
  await assert.rejects(b.acceptEpoch(res.message), E.SecurityCheckFailed);
  assert.ok(await t.checkAck("p_a", await a.acceptEpoch(res.message)));
  const sw = await t.makeSwitch();
  assert.equal(await a.acceptSwitch(sw), true);
  assert.equal(await b.acceptSwitch(sw), false);
  const frame = await t.keyState.encrypt("video", VP8_DELTA);
  assert.deepEqual(await a.keyState.decrypt("video", frame, 0), VP8_DELTA);
  assert.equal(await b.keyState.decrypt("video", frame, 0), null);
  const old = await b.keyState.encrypt("audio", Uint8Array.of(0xfc, 1, 2, 3));
  assert.deepEqual(await t.keyState.decryptFrom("audio", old, "p_b"), Uint8Array.of(0xfc, 1, 2, 3));
  now += 6000;
  assert.ok(!t.keyState.epochs().includes(first));
  const old2 = await b.keyState.encrypt("audio", Uint8Array.of(0xfc, 4));
  assert.equal(await t.keyState.decrypt("audio", old2, 2), null);
});

test("e2ee: late joiner cannot decrypt the previous epoch", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  await runEpoch(t, { p_a: a });
  const before = await t.keyState.encrypt("video", VP8_KEY);
  assert.deepEqual(await a.keyState.decrypt("video", before, 0), VP8_KEY);
  const late = await admit(t, "p_late");
  await runEpoch(t, { p_a: a, p_late: late });
  assert.equal(await late.keyState.decrypt("video", before, 0), null);
  const after = await t.keyState.encrypt("video", VP8_KEY);
  assert.deepEqual(await late.keyState.decrypt("video", after, 0), VP8_KEY);
});

test("e2ee: replayed old epochs are ignored", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const first = await t.makeEpoch(["p_a"]);
  assert.ok(await a.acceptEpoch(first.message));
  const second = await t.makeEpoch(["p_a"]);
  assert.ok(await a.acceptEpoch(second.message));
  assert.equal(await a.acceptEpoch(first.message), null);
  assert.equal(await a.acceptEpoch(second.message), null);
  assert.equal(a.newestEpoch, second.epoch);
  assert.equal(await a.keyState.switch(second.epoch), true);
  assert.equal(await a.keyState.switch(first.epoch), false);
});

test("e2ee: forged/tampered grant, tk mismatch, bad reveal refused", async () => {
  const t = await therapist();
  const c = await E.ClientKeys.create(ROOM, E.parseLinkFragment(E.makeLinkFragment("x", t.sLink, t.tk)));
  await t.checkIntro("p_a", await c.makeIntro());
  const grant = await t.makeGrant("p_a");
  await assert.rejects(c.checkGrant(tamper(grant, { n_t: E.b64e(rnd(16)) }), "p_a"), E.SecurityCheckFailed);
  await assert.rejects(c.checkGrant(grant, "p_other"), E.SecurityCheckFailed);
  await assert.rejects(c.checkGrant(tamper(grant, { room: "other" }), "p_a"), E.SecurityCheckFailed);
  await assert.rejects(c.checkGrant("not json", "p_a"), E.SecurityCheckFailed);
  const mitm = await E.TherapistKeys.create(ROOM, "p_therapist");
  await mitm.checkIntro("p_a", await c.makeIntro());
  await assert.rejects(c.checkGrant(await mitm.makeGrant("p_a"), "p_a"), /security check failed/);
  await c.checkGrant(grant, "p_a");
  // tk in the link that matches nobody
  const c2 = await E.ClientKeys.create(ROOM, E.parseLinkFragment(E.makeLinkFragment("x", t.sLink, rnd(16))));
  await t.checkIntro("p_b", await c2.makeIntro());
  await assert.rejects(c2.checkGrant(await t.makeGrant("p_b"), "p_b"), E.SecurityCheckFailed);
  // A reveal of another nonce than the committed one
  const c3 = await E.ClientKeys.create(ROOM);
  assert.equal((await t.checkIntro("p_c", await c3.makeIntro())).macOk, false);
  await c3.checkGrant(await t.makeGrant("p_c"), "p_c");
  c3.nC = rnd(16);
  await assert.rejects(t.checkReveal("p_c", await c3.makeReveal()), /commitment/);
  await assert.rejects(t.checkIntro("p_d", tamper(await c3.makeIntro(), { ts: 1 })), E.SecurityCheckFailed);
});

test("e2ee: forged epoch / switch / ack refused", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const res = await t.makeEpoch(["p_a"]);
  await assert.rejects(a.acceptEpoch(tamper(res.message, { epoch: res.epoch + 5 })), E.SecurityCheckFailed);
  const mitm = await E.TherapistKeys.create(ROOM, "p_therapist", { firstEpoch: 50 });
  await mitm.checkIntro("p_a", await a.makeIntro());
  await mitm.makeGrant("p_a"); // v2: epochs go only to granted, revealed clients
  await mitm.checkReveal("p_a", await a.makeReveal());
  await assert.rejects(a.acceptEpoch((await mitm.makeEpoch(["p_a"])).message), E.SecurityCheckFailed);
  await assert.rejects(a.acceptSwitch(await mitm.makeSwitch()), E.SecurityCheckFailed);
  assert.equal(a.newestEpoch, -1);
  const ack = await a.acceptEpoch(res.message);
  await assert.rejects(t.checkAck("p_a", tamper(ack, { epoch: res.epoch + 1 })), E.SecurityCheckFailed);
  assert.equal(await t.checkAck("p_a", ack), true);
});

test("e2ee: a middleman substituting its own intro and grant gets different SAS codes", async () => {
  const t = await E.TherapistKeys.create(ROOM, "p_therapist");
  const c = await E.ClientKeys.create(ROOM, E.parseLinkFragment("#t=tok"), { pid: "p_c" });
  const mClient = await E.ClientKeys.create(ROOM, null, { pid: "p_c" });
  const mTherapist = await E.TherapistKeys.create(ROOM, "p_therapist");
  await t.checkIntro("p_c", await mClient.makeIntro());
  await mTherapist.checkIntro("p_c", await c.makeIntro());
  await mClient.checkGrant(await t.makeGrant("p_c"), "p_c");
  await c.checkGrant(await mTherapist.makeGrant("p_c"), "p_c");
  const sasCSide = await mTherapist.checkReveal("p_c", await c.makeReveal());
  const sasTSide = await t.checkReveal("p_c", await mClient.makeReveal());
  assert.ok(E.sasEqual(await c.sas(), sasCSide));
  assert.ok(!E.sasEqual(await c.sas(), sasTSide));
  assert.notDeepEqual((await c.sas()).decimal, sasTSide.decimal);
});

async function session() {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const b = await admit(t, "p_b");
  await runEpoch(t, { p_a: a, p_b: b });
  return { t, a, b };
}

test("e2ee: signed SDP round trip and refusals", async () => {
  const { t, a, b } = await session();
  assert.deepEqual(E.sdpFingerprints(SDP), [FP1]);
  await a.verifySdp("p_therapist", "offer", SDP, await t.signSdp("p_a", "offer", SDP));
  await t.verifySdp("p_a", "answer", SDP, await a.signSdp("p_therapist", "answer", SDP));
  await b.verifySdp("p_a", "offer", SDP, await a.signSdp("p_b", "offer", SDP));
  const sig = await t.signSdp("p_a", "offer", SDP);
  const swapped = SDP.replace(FP1, FP2);
  await assert.rejects(a.verifySdp("p_therapist", "offer", swapped, sig), E.SecurityCheckFailed);
  await assert.rejects(a.verifySdp("p_therapist", "offer", SDP, null), E.SecurityCheckFailed);
  await assert.rejects(b.verifySdp("p_therapist", "offer", SDP, sig), E.SecurityCheckFailed);
  await assert.rejects(a.verifySdp("p_therapist", "answer", SDP, sig), E.SecurityCheckFailed);
  const mitm = await E.TherapistKeys.create(ROOM, "p_therapist");
  await assert.rejects(
    a.verifySdp("p_therapist", "offer", swapped, await mitm.signSdp("p_a", "offer", swapped)),
    E.SecurityCheckFailed,
  );
  // Signed fingerprints that differ from the SDP's lines (hash matches) are refused.
  const lying = await E.signSdp(t.identity.privateKey, { room: ROOM, from: "p_therapist", to: "p_a", epoch: 1,
    type: "offer", seq: 50, sdp: swapped });
  const env = JSON.parse(lying);
  env.p = JSON.stringify({ ...JSON.parse(env.p), fingerprints: [FP1] });
  await assert.rejects(a.verifySdp("p_therapist", "offer", swapped, JSON.stringify(env)), E.SecurityCheckFailed);
  const lyingSigned = JSON.parse(lying);
  const p = { ...JSON.parse(lyingSigned.p), fingerprints: [FP1] };
  await assert.rejects(
    E.verifySdp(JSON.stringify({ p: JSON.stringify(p), sig: lyingSigned.sig }), swapped, { ik: t.ikRaw, room: ROOM,
      from: "p_therapist", to: "p_a" }),
    /security check failed/,
  );
  await a.verifySdp("p_therapist", "offer", SDP, sig);
  await assert.rejects(a.verifySdp("p_therapist", "offer", SDP, sig), /replayed/);
  const old = await E.signSdp(t.identity.privateKey, { room: ROOM, from: "p_therapist", to: "p_a", epoch: 1,
    type: "offer", seq: 1000, sdp: SDP, ts: 1 });
  await assert.rejects(a.verifySdp("p_therapist", "offer", SDP, old), /stale/);
  const outsider = await E.ClientKeys.create(ROOM, null, { pid: "p_x" });
  await assert.rejects(a.verifySdp("p_x", "offer", SDP, await outsider.signSdp("p_a", "offer", SDP)), E.SecurityCheckFailed);
});

test("e2ee: a therapist back with a new pid is verified before its next epoch, and nobody else is", async () => {
  const { t, a, b } = await session();
  a.reset(); // the grace ran out: back to the waiting room, the old roster still in memory
  const back = await E.signSdp(t.identity.privateKey, { room: ROOM, from: "p_t_again", to: "p_a", epoch: 2,
    type: "offer", seq: 1, sdp: SDP });
  await a.verifySdp("p_t_again", "offer", SDP, back);
  const outsider = await E.ClientKeys.create(ROOM, null, { pid: "p_x" });
  await assert.rejects(a.verifySdp("p_x", "offer", SDP, await outsider.signSdp("p_a", "offer", SDP)), E.SecurityCheckFailed);
  await assert.rejects(a.verifySdp("p_t_again", "offer", SDP, await b.signSdp("p_a", "offer", SDP)), E.SecurityCheckFailed);
});

test("e2ee: a reloaded therapist keeps its SDP counters (sdpCounters / restoreSdpCounters)", async () => {
  const { t, a } = await session();
  await a.verifySdp("p_therapist", "offer", SDP, await t.signSdp("p_a", "offer", SDP));
  await a.verifySdp("p_therapist", "offer", SDP, await t.signSdp("p_a", "offer", SDP));
  assert.deepEqual(t.sdpCounters(), { p_a: 2 });
  const reloaded = async () => {
    const r = await E.TherapistKeys.create(ROOM, "p_therapist", { identity: t.identity, sLink: t.sLink, firstEpoch: 9 });
    await r.importState(t.exportState());
    return r;
  };
  const kept = await reloaded();
  kept.restoreSdpCounters({ ...t.sdpCounters(), p_junk: "x" });
  assert.deepEqual(kept.sdpCounters(), { p_a: 2 });
  await a.verifySdp("p_therapist", "offer", SDP, await kept.signSdp("p_a", "offer", SDP));
  // Without the counters the next offer reuses a number the client has seen: refused as replayed.
  const forgot = await reloaded();
  await assert.rejects(a.verifySdp("p_therapist", "offer", SDP, await forgot.signSdp("p_a", "offer", SDP)), /replayed/);
});

test("e2ee: a client sent back to the waiting room loses its keys", async () => {
  const { t, a } = await session();
  a.reset();
  const frame = await t.keyState.encrypt("video", VP8_DELTA);
  assert.equal(await a.keyState.decrypt("video", frame, 0), null);
  assert.equal(await a.keyState.encrypt("video", VP8_DELTA), null);
});

test("e2ee: therapist return (reload) re-issues an epoch from the saved public state", async () => {
  const { t, a, b } = await session();
  const saved = t.exportState();
  const oldEpoch = a.newestEpoch;
  const t2 = await E.TherapistKeys.create(ROOM, "p_therapist", { identity: t.identity, sLink: t.sLink, firstEpoch: 1 });
  await t2.importState(saved);
  assert.ok(E.sasEqual(t2.members.get("p_a").sas, await a.sas()));
  const epoch = await runEpoch(t2, { p_a: a, p_b: b });
  assert.ok(epoch > oldEpoch);
  const frame = await t2.keyState.encrypt("video", VP8_KEY);
  assert.deepEqual(await a.keyState.decrypt("video", frame, 0), VP8_KEY);
  const other = await E.TherapistKeys.create(ROOM, "p_therapist");
  await assert.rejects(other.importState(saved), TypeError);
});

test("e2ee: a client's kept identity (tab reload) keeps its code and takes the next epoch, no secrets", async () => {
  const t = await therapist();
  const link = E.parseLinkFragment(E.makeLinkFragment("tok", t.sLink, t.tk));
  const c = await E.ClientKeys.create(ROOM, link, { keepable: true });
  assert.equal(c.ik.privateKey.extractable, false);
  assert.equal(c.exportIdentity(), null); // nothing to keep before a verified grant
  await t.checkIntro("p_c", await c.makeIntro());
  await c.checkGrant(await t.makeGrant("p_c"), "p_c");
  const sasT = await t.checkReveal("p_c", await c.makeReveal());
  const first = await runEpoch(t, { p_c: c });
  const sig = await t.signSdp("p_c", "offer", SDP);
  await c.verifySdp("p_therapist", "offer", SDP, sig);
  const kept = c.exportIdentity();
  const o = JSON.parse(kept);
  assert.deepEqual(Object.keys(o).sort(), ["epoch", "expires_at", "hpke", "ik", "ik_t", "last_seq", "n_c", "n_t", "pid", "room", "roster", "sdp_seq", "therapist", "v"]);
  assert.equal(o.epoch, first);

  const back = await E.ClientKeys.restoreIdentity(ROOM, link, kept);
  assert.deepEqual(back.ikRaw, c.ikRaw);
  assert.ok(E.sasEqual(await back.sas(), sasT));
  assert.equal(back.ik.privateKey.extractable, false);
  // a replayed SDP is still refused, a new one verifies; an old epoch is ignored, the next one installs
  await assert.rejects(back.verifySdp("p_therapist", "offer", SDP, sig), E.SecurityCheckFailed);
  await back.verifySdp("p_therapist", "offer", SDP, await t.signSdp("p_c", "offer", SDP));
  assert.ok((await runEpoch(t, { p_c: back })) > first);
  // the link pins the therapist: a kept state naming another IK_T is refused
  const bad = JSON.stringify({ ...o, ik_t: E.b64e(E.b64d(o.ik_t).map((b, i) => (i ? b ^ 1 : b))) });
  await assert.rejects(E.ClientKeys.restoreIdentity(ROOM, link, bad));
  await assert.rejects(E.ClientKeys.restoreIdentity("r_other", link, kept));
});

// --- v2: keys follow the therapist's grants, signed expiry, per-epoch HPKE keys ---------------------------------

const payloadOf = (envStr) => JSON.parse(JSON.parse(envStr).p);

test("e2ee v2: an epoch goes only to clients the therapist granted and whose reveal verified", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const ghost = await E.ClientKeys.create(ROOM, null, { pid: "p_ghost" });
  await t.checkIntro("p_ghost", await ghost.makeIntro()); // the server queued it: its intro verifies
  assert.equal(t.keyable("p_ghost"), false);
  await assert.rejects(t.makeEpoch(["p_a", "p_ghost"]), /not granted/);
  const half = await E.ClientKeys.create(ROOM);
  await t.checkIntro("p_half", await half.makeIntro());
  await half.checkGrant(await t.makeGrant("p_half"), "p_half");
  assert.equal(t.keyable("p_half"), false);
  await assert.rejects(t.makeEpoch(["p_half"]), E.SecurityCheckFailed);
  const res = await t.makeEpoch(["p_a"]);
  assert.deepEqual(Object.keys(payloadOf(res.message).wrapped), ["p_a"]);
  ghost.ikT = t.ikRaw;
  assert.equal(await ghost.acceptEpoch(res.message), null); // not listed: nothing installed
  assert.equal(ghost.newestEpoch, -1);
  // granted a moment ago, reveal not seen yet: not keyed yet, so the epoch is ignored (no refusal to show)
  assert.equal(await half.acceptEpoch(res.message), null);
  assert.equal(half.awaitingFirstEpoch, true);
  assert.equal(typeof (await a.acceptEpoch(res.message)), "string");
  await t.checkReveal("p_half", await half.makeReveal());
  assert.equal(typeof (await half.acceptEpoch((await t.makeEpoch(["p_a", "p_half"])).message)), "string");
});

test("e2ee v2: a pid takeover is a new person that needs a new Admit", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  await runEpoch(t, { p_a: a });
  t.forget("p_a");
  const attacker = await E.ClientKeys.create(ROOM, null, { pid: "p_a" });
  await assert.rejects(t.checkIntro("p_a", await attacker.makeIntro()), E.NewPerson);
  assert.ok(t.newcomers.has("p_a") && !t.keyable("p_a"));
  await assert.rejects(t.makeEpoch(["p_a"]), E.SecurityCheckFailed);
  await t.checkIntro("p_a", await a.makeIntro()); // the same person, queued again with its frozen key
  assert.ok(!t.newcomers.has("p_a"));
  a.reset();
  await a.checkGrant(await t.makeGrant("p_a"), "p_a");
  await t.checkReveal("p_a", await a.makeReveal());
  const res = await t.makeEpoch(["p_a"]);
  assert.equal(payloadOf(res.message).roster[1].ik, E.b64e(a.ikRaw));
  assert.equal(typeof (await a.acceptEpoch(res.message)), "string");
  t.forget("p_a");
  await assert.rejects(t.checkIntro("p_a", await attacker.makeIntro()), E.NewPerson);
  await attacker.checkGrant(await t.makeGrant("p_a"), "p_a"); // the therapist's explicit new Admit
  await t.checkReveal("p_a", await attacker.makeReveal());
  const res2 = await t.makeEpoch(["p_a"]);
  await assert.rejects(a.acceptEpoch(res2.message), /not a member/);
  assert.equal(typeof (await attacker.acceptEpoch(res2.message)), "string");
});

test("e2ee v2: the epoch's expiry is signed and enforced by senders and receivers", async () => {
  let wall = 1_000_000_000_000;
  const now = () => wall;
  const t = await therapist({ keyState: new E.KeyState({ now }) });
  const a = await E.ClientKeys.create(ROOM, null, { keyState: new E.KeyState({ now }) });
  await t.checkIntro("p_a", await a.makeIntro());
  await a.checkGrant(await t.makeGrant("p_a"), "p_a");
  await t.checkReveal("p_a", await a.makeReveal());
  const t0 = wall;
  const res = await t.makeEpoch(["p_a"], null, { nowMs: t0 });
  const p = payloadOf(res.message);
  assert.equal(p.expires_at, t0 + E.EPOCH_LIFETIME_MS);
  assert.equal(p.issued_at, t0);
  await assert.rejects(a.acceptEpoch(tamper(res.message, { expires_at: t0 + 10 * E.EPOCH_LIFETIME_MS }), t0), /signature/);
  await assert.rejects(a.acceptEpoch(res.message, t0 + E.EPOCH_LIFETIME_MS), /expired/);
  await assert.rejects(a.acceptEpoch((await t.makeEpoch(["p_a"], null, { nowMs: t0 + 3 * E.EPOCH_LIFETIME_MS })).message, t0), /too long/);
  t.pending = res;
  const ack = await a.acceptEpoch(res.message, t0);
  assert.equal(await t.checkAck("p_a", ack), true);
  assert.equal(await a.acceptSwitch(await t.makeSwitch()), true);
  assert.equal(t.rekeyDue(t0 + E.EPOCH_LIFETIME_MS / 2 - 1), false);
  assert.equal(t.rekeyDue(t0 + E.EPOCH_LIFETIME_MS / 2), true);
  const frame = await t.keyState.encrypt("video", VP8_DELTA);
  assert.deepEqual(await a.keyState.decrypt("video", frame, 0), VP8_DELTA);
  const expired = [];
  a.keyState.onExpire.push((e) => expired.push(e));
  wall = t0 + E.EPOCH_LIFETIME_MS; // every newer epoch withheld: the key is gone at its expiry
  assert.equal(await a.keyState.encrypt("video", VP8_DELTA), null);
  assert.ok(a.keyState.sendExpired);
  assert.deepEqual(expired, [res.epoch]);
  assert.equal(a.keyState.counters.expired, 1);
  assert.equal(await t.keyState.encrypt("video", VP8_DELTA), null);
  assert.equal(await a.keyState.decrypt("video", frame, 0), null);
  assert.deepEqual(a.keyState.epochs(), []);
});

test("e2ee v2: each ack carries the next HPKE key; older private keys are erased", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const introKey = a.hpkeKeys[0];
  const res1 = await t.makeEpoch(["p_a"]);
  const ack1 = await a.acceptEpoch(res1.message);
  const dk1 = E.b64d(payloadOf(ack1).dk);
  assert.notDeepEqual(dk1, introKey.raw);
  assert.deepEqual(a.hpkeKeys[a.hpkeKeys.length - 1].raw, dk1);
  await t.checkAck("p_a", ack1);
  await t.makeSwitch();
  const res2 = await t.makeEpoch(["p_a"]);
  const H = await import("../../web/static/js/lib/hpke.js");
  const n = new Uint8Array(4);
  new DataView(n.buffer).setUint32(0, res2.epoch);
  const info = new Uint8Array([...new TextEncoder().encode("alcove-e2ee epoch"), ...new TextEncoder().encode(ROOM), ...n]);
  await assert.rejects(H.openCombined(introKey.key, E.b64d(payloadOf(res2.message).wrapped.p_a), info));
  assert.equal(typeof (await a.acceptEpoch(res2.message)), "string");
  assert.ok(!a.hpkeKeys.some((k) => E.b64e(k.raw) === E.b64e(introKey.raw)));
  const res3 = await t.makeEpoch(["p_a"]);
  assert.equal(typeof (await a.acceptEpoch(res3.message)), "string"); // its ack is lost
  assert.equal(typeof (await a.acceptEpoch((await t.makeEpoch(["p_a"])).message)), "string");
  await t.checkAck("p_a", await a.acceptEpoch((await t.makeEpoch(["p_a"])).message));
  const t2 = await E.TherapistKeys.create(ROOM, "p_therapist", { identity: t.identity, sLink: t.sLink, firstEpoch: 1 });
  await t2.importState(t.exportState());
  assert.deepEqual(t2.members.get("p_a").dk, a.hpkeKeys[a.hpkeKeys.length - 1].raw);
  assert.equal(typeof (await a.acceptEpoch((await t2.makeEpoch(["p_a"])).message)), "string");
});

test("e2ee v2: a kept identity keeps only the HPKE keys not erased", async () => {
  const t = await therapist();
  const c = await E.ClientKeys.create(ROOM, null, { keepable: true });
  await t.checkIntro("p_c", await c.makeIntro());
  await c.checkGrant(await t.makeGrant("p_c"), "p_c");
  await t.checkReveal("p_c", await c.makeReveal());
  await runEpoch(t, { p_c: c });
  await runEpoch(t, { p_c: c });
  const o = JSON.parse(c.exportIdentity());
  assert.equal(o.hpke.length, c.hpkeKeys.length);
  assert.ok(o.hpke.length <= 2);
  const back = await E.ClientKeys.restoreIdentity(ROOM, null, c.exportIdentity());
  assert.deepEqual(back.hpkeKeys.map((k) => E.b64e(k.raw)), c.hpkeKeys.map((k) => E.b64e(k.raw)));
  assert.ok(back.hpkeKeys.every((k) => k.key.privateKey.extractable === false));
  assert.ok((await runEpoch(t, { p_c: back })) > 0);
});

test("e2ee v2: the signed roster carries the therapist's names; a frame's sender index names its tile", async () => {
  const t = await therapist();
  const a = await admit(t, "p_a");
  const b = await admit(t, "p_b");
  const res = await t.makeEpoch(["p_a", "p_b"], { p_therapist: "Dr. T", p_a: "Ann", p_b: "B".repeat(100) });
  await a.acceptEpoch(res.message);
  assert.deepEqual(Object.fromEntries(a.names), { p_therapist: "Dr. T", p_a: "Ann", p_b: "B".repeat(64) });
  assert.deepEqual(a.senderOf(0), { pid: "p_therapist", name: "Dr. T" });
  assert.deepEqual(a.senderOf(a.roster.get("p_b").idx), { pid: "p_b", name: "B".repeat(64) });
  assert.equal(a.senderOf(15), null);
  const forged = payloadOf(res.message).roster.map((e) => ({ ...e, name: "Mallory" }));
  await assert.rejects(b.acceptEpoch(tamper(res.message, { roster: forged })), E.SecurityCheckFailed);
});

test("e2ee v2: no periodic rekey while an epoch is pending (withheld acks cannot stall the switch)", async () => {
  const t = await therapist();
  await admit(t, "p_a");
  const res = await t.makeEpoch(["p_a"], null, { nowMs: 1000 });
  const half = E.EPOCH_LIFETIME_MS / 2;
  assert.equal(t.pending, res);
  assert.equal(t.rekeyDue(1000 + 10 * half), false);
  await t.makeSwitch();
  assert.equal(t.rekeyDue(1000 + half - 1), false);
  assert.equal(t.rekeyDue(1000 + half), true);
});
