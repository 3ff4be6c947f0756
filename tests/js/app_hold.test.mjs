// App messages under an epoch the page does not hold yet (web/static/js/lib/e2ee.js AppHold, e2ee-flow.js onApp):
// node --test tests/js/. The page's ClientE2ee runs for real, with a stand-in for its SFrame worker (no media
// here) and a recording signaling; the clock is passed in, nothing sleeps.
import test from "node:test";
import assert from "node:assert/strict";

globalThis.Worker = class {
  postMessage() {}
  addEventListener() {}
  terminate() {}
};
const E = await import("../../web/static/js/lib/e2ee.js");
const { ClientE2ee } = await import("../../web/static/js/lib/e2ee-flow.js");

const ROOM = "r_hold";
const rnd = (n) => crypto.getRandomValues(new Uint8Array(n));

async function admit(t, pid) {
  const c = await E.ClientKeys.create(ROOM, E.parseLinkFragment(E.makeLinkFragment("tok", t.sLink, t.tk)));
  await t.checkIntro(pid, await c.makeIntro());
  await c.checkGrant(await t.makeGrant(pid), pid);
  await t.checkReveal(pid, await c.makeReveal());
  return c;
}

/** Epoch for `clients` (pid -> ClientKeys), acked and switched by all of them. */
async function runEpoch(t, clients) {
  const res = await t.makeEpoch(Object.keys(clients));
  for (const [pid, c] of Object.entries(clients)) await t.handleKey(pid, await c.handleKey(res.message));
  const sw = await t.makeSwitch();
  for (const c of Object.values(clients)) assert.equal(await c.handleKey(sw), true);
  return res;
}

/** A therapist and a member (its first epoch); a page just admitted as p_b, with no epoch yet. */
async function room() {
  const t = await E.TherapistKeys.create(ROOM, "p_t", { sLink: rnd(32), firstEpoch: 1 });
  const a = await admit(t, "p_a");
  await runEpoch(t, { p_a: a });
  const sent = [];
  const signaling = { key: (to, data) => sent.push(data), app: () => {} };
  const link = E.parseLinkFragment(E.makeLinkFragment("tok", t.sLink, t.tk));
  const page = new ClientE2ee(/** @type {any} */ (signaling), ROOM, link, () => null);
  const keys = await page.keysP;
  await t.checkIntro("p_b", await keys.makeIntro());
  await page.welcome("p_b", "admitted");
  await page.admitted(await t.makeGrant("p_b"), "p_b");
  await t.checkReveal("p_b", sent.find((d) => E.messageKind(d) === "reveal"));
  const got = [];
  const refused = [];
  page.addEventListener("app", (e) => got.push(/** @type {CustomEvent} */ (e).detail.body.text));
  page.addEventListener("refused", (e) => refused.push(/** @type {CustomEvent} */ (e).detail));
  return { t, a, page, got, refused, sent };
}

const say = async (who, text) => who.app.make({ k: "chat", text });

test("a message under the epoch still on its way is delivered once it comes", async (ctx) => {
  const { t, a, page, got, refused } = await room();
  ctx.after(() => page.stop());
  const res = await t.makeEpoch(["p_a", "p_b"]); // the page's first epoch
  await t.handleKey("p_a", await a.handleKey(res.message));
  t.pending.waitingAcks.delete("p_b");
  assert.equal(await a.handleKey(await t.makeSwitch()), true);
  await page.onApp("p_a", await say(a, "under the new epoch"), 1000);
  await page.onApp("p_t", await say(t, "the therapist's too"), 1001);
  assert.deepEqual(got, []);
  assert.equal(page.appHeld.size, 2);
  await page.onKey("p_t", res.message); // the epoch arrives: both delivered, in order
  await page._appIn;
  assert.deepEqual(got, ["under the new epoch", "the therapist's too"]);
  assert.equal(page.appHeld.size, 0);
  assert.deepEqual(refused, []);
});

test("a message sent before the page was a member is ignored, not refused", async (ctx) => {
  const { t, a, page, got, refused } = await room();
  ctx.after(() => page.stop());
  const early = await say(a, "before b was let in");
  await page.onApp("p_a", early, 1000);
  assert.equal(page.appHeld.size, 1);
  const res = await t.makeEpoch(["p_a", "p_b"]);
  await page.onKey("p_t", res.message);
  await page._appIn;
  assert.equal(page.appHeld.size, 0);
  assert.equal(page.ignoredApps, 1);
  await page.onApp("p_a", early, 2000); // and the same message arriving now
  assert.equal(page.ignoredApps, 2);
  assert.deepEqual(got, []);
  assert.deepEqual(refused, []);
});

test("an epoch that never comes: refused, visibly, after 5 s of the caller's clock; at most 32 wait", async (ctx) => {
  const { t, a, page, got, refused } = await room();
  ctx.after(() => page.stop());
  const b2 = await t.makeEpoch(["p_a", "p_b"]);
  await t.handleKey("p_a", await a.handleKey(b2.message));
  await page.onKey("p_t", b2.message);
  const res = await t.makeEpoch(["p_a"]); // leaves the page out: it never gets this one
  await t.handleKey("p_a", await a.handleKey(res.message));
  assert.equal(await a.handleKey(await t.makeSwitch()), true);
  for (let i = 0; i <= E.APP_HOLD_MAX; i++) await page.onApp("p_a", await say(a, `n${i}`), 10_000);
  assert.equal(page.appHeld.size, E.APP_HOLD_MAX);
  assert.deepEqual(refused.map((r) => r.error), ["security check failed: too many app messages waiting for their epoch"]);
  page.expireHeldApps(10_000 + E.APP_HOLD_MS - 1);
  assert.equal(refused.length, 1);
  page.expireHeldApps(10_000 + E.APP_HOLD_MS);
  assert.equal(refused.length, 1 + E.APP_HOLD_MAX);
  assert.ok(refused.slice(1).every((r) => r.what === "app" && r.pid === "p_a" && /did not come/.test(r.error)));
  assert.deepEqual(got, []);
});

test("the hold alone: bounded in count and time, on the caller's clock", () => {
  const hold = new E.AppHold(2, 5000);
  assert.ok(hold.hold("p_a", "x", 10_000) && hold.hold("p_a", "y", 12_000));
  assert.equal(hold.hold("p_a", "z", 12_000), false);
  assert.equal(hold.nextDeadline(), 15_000);
  assert.deepEqual(hold.expired(14_999), []);
  assert.deepEqual(hold.expired(15_000), [["p_a", "x"]]);
  assert.deepEqual(hold.release((d) => d === "y"), []);
  assert.deepEqual(hold.release(() => false), [["p_a", "y"]]);
  assert.equal(hold.size, 0);
  assert.equal(hold.nextDeadline(), null);
  assert.equal(E.appEpochOf("not json"), null);
});
