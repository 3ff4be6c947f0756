// The mesh's hold after one's own reconnect (web/static/js/lib/call.js Call.hold): node --test tests/js/.
// A peer the restarted server does not list yet keeps its connection for the hold; one the server listed since the
// reconnect and then dropped (sent back, removed, gone) is closed at once; forget() closes at once; after the hold
// the roster rules again. RTCPeerConnection is a stand-in (no media here); time is the hold's own timer.
import test from "node:test";
import assert from "node:assert/strict";

class FakePc extends EventTarget {
  constructor() { super(); this.connectionState = "connected"; this.closedByUs = false; }
  close() { this.closedByUs = true; this.connectionState = "closed"; }
  getSenders() { return []; }
  getReceivers() { return []; }
  getTransceivers() { return []; }
  getConfiguration() { return {}; }
  setConfiguration() {}
  addTransceiver() { return { sender: { track: null }, receiver: { track: null }, setCodecPreferences() {} }; }
  addTrack() { return {}; }
}
globalThis.RTCPeerConnection = FakePc;
globalThis.MediaStream = class { getTracks() { return []; } getVideoTracks() { return []; } };
const { Call } = await import("../../web/static/js/lib/call.js");

function call() {
  const c = new Call(/** @type {any} */ (new EventTarget()), { pid: "p_t" });
  const closed = [];
  c.addEventListener("peer-closed", (e) => closed.push(/** @type {CustomEvent} */ (e).detail.pid));
  return { c, closed };
}
const roster = (...pids) => pids.map((pid) => ({ pid, name: pid, role: pid === "p_t" ? "therapist" : "client" }));

test("a peer the restarted server does not list yet is kept through the hold, then the roster rules", async (ctx) => {
  const { c, closed } = call();
  ctx.after(() => { c.closeAll(); c.active = false; clearInterval(c._levelTimer); });
  c.updateRoster(roster("p_t", "p_a", "p_b"));
  c.hold(50);
  c.updateRoster(roster("p_t"));  // the fresh server knows only us
  assert.deepEqual(closed, []);
  assert.equal(c.peers.size, 2);
  c.updateRoster(roster("p_t", "p_a"));  // a is back; b not yet
  assert.deepEqual(closed, []);
  await new Promise((r) => setTimeout(r, 80));  // the hold's end: b never came back
  assert.deepEqual(closed, ["p_b"]);
});

test("one listed since the reconnect and then dropped is closed at once, hold or not", async (ctx) => {
  const { c, closed } = call();
  ctx.after(() => { c.closeAll(); c.active = false; clearInterval(c._levelTimer); });
  c.updateRoster(roster("p_t", "p_a", "p_b"));
  c.hold(10_000);
  c.updateRoster(roster("p_t", "p_a", "p_b"));
  c.updateRoster(roster("p_t", "p_b"));  // a sent back on the live server
  assert.deepEqual(closed, ["p_a"]);
  c.forget("p_b");  // this page removed b: no wait either
  assert.deepEqual(closed, ["p_a", "p_b"]);
  assert.equal(c.peers.size, 0);
});
