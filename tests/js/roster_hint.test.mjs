// The console's membership across a restart of the server: the roster is a hint (web/static/js/lib/e2ee-flow.js
// TherapistE2ee.onRoster): node --test tests/js/. The console's TherapistE2ee runs for real with a stand-in for
// its SFrame worker and a relay that hands its key messages to the connected clients' real ClientKeys; the clock
// is passed in.
import test from "node:test";
import assert from "node:assert/strict";

globalThis.Worker = class {
  postMessage() {}
  addEventListener() {}
  terminate() {}
};
const E = await import("../../web/static/js/lib/e2ee.js");
const { TherapistE2ee, RESUME_GRACE_MS } = await import("../../web/static/js/lib/e2ee-flow.js");

const ROOM = "r_roster";
const rnd = (n) => crypto.getRandomValues(new Uint8Array(n));

/** A console with real keys; `online` clients get its key messages and answer them. */
async function console_() {
  /** @type {Record<string, any>} */
  const clients = {};
  const online = new Set();
  /** @type {string[][]} the client members of every epoch the console sent */
  const epochs = [];
  let th;
  const signaling = {
    key(to, data) {
      const kind = E.messageKind(data);
      if (kind === "epoch") epochs.push(JSON.parse(JSON.parse(data).p).roster.map((e) => e.pid).filter((p) => p !== "p_t"));
      for (const pid of online) {
        clients[pid].handleKey(data).then((ack) => { if (typeof ack === "string") th.onKey(pid, ack); }).catch(() => {});
      }
    },
    app() {},
  };
  // the identity would come from IndexedDB after the served-code check: this console never unlocks it ...
  th = new TherapistE2ee(/** @type {any} */ (signaling), ROOM, Promise.resolve("p_t"), null, () => new Promise(() => {}));
  // ... and gets its keys here instead
  const keys = await E.TherapistKeys.create(ROOM, "p_t", { sLink: rnd(32), firstEpoch: 1, keyState: th.keyState });
  th.keysP = Promise.resolve(keys);
  th.keys = keys;
  const admit = async (pid) => {
    const c = await E.ClientKeys.create(ROOM, E.parseLinkFragment(E.makeLinkFragment("tok", keys.sLink, keys.tk)));
    await keys.checkIntro(pid, await c.makeIntro());
    await c.checkGrant(await keys.makeGrant(pid), pid);
    await keys.checkReveal(pid, await c.makeReveal());
    clients[pid] = c;
    online.add(pid);
  };
  const roster = async (pids, now, offline = []) => {
    th.onRoster(pids, offline, {}, now);
    await th._chain;
  };
  return { th, keys, admit, roster, online, epochs };
}

test("a fresh server that does not list the clients yet does not take them out; the grace does", async (t) => {
  const { th, keys, admit, roster, online, epochs } = await console_();
  t.after(() => th.stop());
  await admit("p_a");
  await admit("p_b");
  await roster(["p_a", "p_b"], 1000);
  assert.deepEqual(epochs.at(-1), ["p_a", "p_b"]);
  // the server restarts: the console is back first, the fresh server lists nobody else
  online.clear();
  th.reconnected();
  await roster([], 2000);
  assert.equal(epochs.length, 1);
  assert.ok(keys.keyable("p_a") && keys.keyable("p_b"));
  assert.deepEqual([...th.unconfirmed.keys()].sort(), ["p_a", "p_b"]);
  // one is back: a new epoch (it may have reloaded) that keeps the other, still within its grace
  online.add("p_a");
  await roster(["p_a"], 3000);
  assert.deepEqual(epochs.at(-1), ["p_a", "p_b"]);
  assert.equal(epochs.length, 2);
  // the other is not back within the grace: taken out
  await roster(["p_a"], 2000 + RESUME_GRACE_MS);
  assert.deepEqual(epochs.at(-1), ["p_a"]);
  assert.ok(!keys.keyable("p_b"));
  assert.deepEqual(th.unkeyed(), []);
  // back after that, let in by the server without a new Admit: no key, and it is shown as such
  await roster(["p_a", "p_b"], 3000 + RESUME_GRACE_MS);
  assert.deepEqual(epochs.at(-1), ["p_a"]);
  assert.deepEqual(th.unkeyed(), ["p_b"]);
});

test("a client the server listed on this connection and then no more left for good", async (t) => {
  const { th, keys, admit, roster, epochs } = await console_();
  t.after(() => th.stop());
  await admit("p_a");
  await admit("p_b");
  await roster(["p_a", "p_b"], 1000);
  th.reconnected();
  await roster(["p_a", "p_b"], 2000, ["p_b"]); // within its grace the server still lists it
  assert.deepEqual(epochs.at(-1), ["p_a", "p_b"]);
  await roster(["p_a"], 3000); // left, removed or its grace ran out on the server
  assert.deepEqual(epochs.at(-1), ["p_a"]);
  assert.ok(!keys.keyable("p_b"));
});

test("a lying server keeps no client this console removed in", async (t) => {
  const { th, keys, admit, roster, epochs } = await console_();
  t.after(() => th.stop());
  await admit("p_a");
  await admit("p_b");
  await roster(["p_a", "p_b"], 1000);
  th.removedByMe("p_b");
  await th._chain;
  assert.deepEqual(epochs.at(-1), ["p_a"]);
  const made = epochs.length;
  await roster(["p_a", "p_b"], 2000); // the server still lists it
  th.reconnected();
  await roster([], 3000);
  await roster(["p_a", "p_b"], 4000); // and again after a restart
  assert.ok(epochs.slice(made).every((members) => !members.includes("p_b")));
  assert.ok(!keys.keyable("p_b"));
});
