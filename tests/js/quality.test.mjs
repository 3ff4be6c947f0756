// node --test tests/js/  (Node >= 20; no npm packages): lib/quality.js and lib/echo-test.js, the parts without I/O.
import { test } from "node:test";
import assert from "node:assert/strict";

import { VideoGovernor, FULL, LOW, PAUSED, qualityOf, sampleOf, countersOf, encodingFor } from "../../web/static/js/lib/quality.js";
import { pathOf } from "../../web/static/js/lib/echo-test.js";

const good = { availableOutgoingBitrate: 1_500_000, lossOut: 0, lossIn: 0, freezes: 0, rtt: 0.02, state: "connected" };
const thin = { ...good, availableOutgoingBitrate: 200_000 };
const starved = { ...good, availableOutgoingBitrate: 60_000, lossOut: 0.3 };

test("the governor steps down after two bad seconds, pauses, and comes back by probing", () => {
  const g = new VideoGovernor();
  let now = 0;
  const run = (s, n) => { for (let i = 0; i < n; i++) g.step(s, now++); return g.level; };
  assert.equal(run(thin, 6), FULL, "the first seconds: the estimate is still ramping, only loss counts");
  assert.equal(run(good, 10), FULL);
  assert.equal(run(thin, 1), FULL, "one bad second is not enough");
  assert.equal(run(thin, 1), LOW);
  assert.equal(run(starved, 2), PAUSED);
  assert.equal(run(starved, 30), PAUSED, "no probe while the audio itself is lossy");
  // The link recovers: after the probe wait the governor tries the low level, then full after a run of good seconds.
  assert.equal(run({ ...good, availableOutgoingBitrate: null }, 8), LOW);
  assert.equal(run(good, 4), LOW);
  assert.equal(run(good, 1), FULL);
});

test("a failed probe doubles the wait before the next", () => {
  const g = new VideoGovernor();
  let now = 0;
  const run = (s, n) => { for (let i = 0; i < n; i++) g.step(s, now++); return g.level; };
  run(starved, 4);
  assert.equal(g.level, PAUSED);
  const calm = { ...good, availableOutgoingBitrate: 50_000 };
  assert.equal(run(calm, 8), LOW, "first probe after 8 s");
  assert.equal(run(calm, 6), LOW, "a probe has time for the estimate to ramp up");
  assert.equal(run(calm, 2), PAUSED, "the probe failed");
  assert.equal(run(calm, 14), PAUSED, "the next probe waits 16 s");
  assert.equal(run(calm, 1), LOW);
});

test("reconnecting freezes the level; quality is good, weak or reconnecting", () => {
  const g = new VideoGovernor();
  assert.equal(g.step({ ...starved, state: "disconnected" }, 0), FULL);
  assert.equal(g.step({ ...starved, state: "disconnected" }, 1), FULL);
  assert.equal(qualityOf(good), "good");
  assert.equal(qualityOf(thin), "weak");
  assert.equal(qualityOf({ ...good, lossIn: 0.1 }), "weak");
  assert.equal(qualityOf({ ...good, freezes: 1 }), "weak");
  assert.equal(qualityOf({ ...good, state: "disconnected" }), "reconnecting");
});

test("samples come from the deltas of two getStats reports", () => {
  const report = (sent, lostOut, received, lostIn, freezes) => [
    { type: "transport", id: "T", selectedCandidatePairId: "CP" },
    { type: "candidate-pair", id: "CP", availableOutgoingBitrate: 250_000, currentRoundTripTime: 0.05 },
    { type: "outbound-rtp", kind: "video", packetsSent: sent },
    { type: "remote-inbound-rtp", kind: "video", packetsLost: lostOut },
    { type: "inbound-rtp", kind: "video", packetsReceived: received, packetsLost: lostIn, freezeCount: freezes },
  ];
  const a = countersOf(report(100, 0, 100, 0, 0));
  const b = countersOf(report(200, 20, 180, 20, 1));
  const s = sampleOf(a, b, "connected");
  assert.equal(s.availableOutgoingBitrate, 250_000);
  assert.equal(s.lossOut, 0.2);
  assert.equal(s.lossIn, 0.2);
  assert.equal(s.freezes, 1);
  assert.equal(s.rtt, 0.05);
});

test("encodings per level: paused is inactive, low halves and caps", () => {
  const base = { scale: 1, maxBitrate: 900_000 };
  assert.deepEqual(encodingFor({}, FULL, base), { active: true, scaleResolutionDownBy: 1, maxBitrate: 900_000 });
  assert.deepEqual(encodingFor({}, LOW, base), { active: true, scaleResolutionDownBy: 2, maxBitrate: 150_000 });
  assert.equal(encodingFor({}, PAUSED, base).active, false);
});

test("the connection test's path: relay if either end of the selected pair is a relay candidate", () => {
  const stats = (local, remote) => [
    { type: "transport", id: "T", selectedCandidatePairId: "CP" },
    { type: "candidate-pair", id: "CP", localCandidateId: "L", remoteCandidateId: "R" },
    { type: "local-candidate", id: "L", candidateType: local },
    { type: "remote-candidate", id: "R", candidateType: remote },
  ];
  assert.equal(pathOf(stats("host", "host")), "direct");
  assert.equal(pathOf(stats("srflx", "host")), "direct");
  assert.equal(pathOf(stats("relay", "host")), "relay");
  assert.equal(pathOf(stats("host", "relay")), "relay");
  assert.equal(pathOf([{ type: "transport", id: "T" }]), null);
});

test("the link monitor: per-connection quality, and the SFU's low REMB estimate ignored when asked", async () => {
  const { LinkMonitor } = await import("../../web/static/js/lib/quality.js");
  let sent = 0;
  const pc = {
    connectionState: "connected",
    getStats: async () => {
      sent += 100;
      return [
        { type: "transport", id: "T", selectedCandidatePairId: "CP" },
        { type: "candidate-pair", id: "CP", availableOutgoingBitrate: 150_000, currentRoundTripTime: 0.01 },
        { type: "outbound-rtp", kind: "video", packetsSent: sent },
      ];
    },
  };
  for (const [bitrate, expected] of [[true, LOW], [false, FULL]]) {
    let now = 0;
    const changes = [];
    const m = new LinkMonitor(() => [["sfu", pc]], (s) => changes.push(s), { interval: 1e9, clock: () => now, bitrate });
    try {
      for (let i = 0; i < 12; i++) { await m.poll(); now += 1; }
    } finally {
      m.stop();
    }
    assert.equal(m.level, expected, `bitrate ${bitrate}`);
    assert.equal(m.peers.sfu, bitrate ? "weak" : "good");
  }
});
