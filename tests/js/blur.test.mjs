// node --test tests/js/  (Node >= 20; no npm packages): lib/frame-meter.js, the background blur's "too slow" rule
// and how often it segments.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  FrameMeter, BLUR_LIMIT_MS, BLUR_WINDOW, SEG_MAX_PER_S, SEG_SHARE, segmentInterval,
} from "../../web/static/js/lib/frame-meter.js";

test("a device is too slow only once a full window averages over the limit", () => {
  const m = new FrameMeter();
  for (let i = 0; i < BLUR_WINDOW - 1; i++) assert.equal(m.add(BLUR_LIMIT_MS * 3), false, "not before a full window");
  assert.equal(m.add(BLUR_LIMIT_MS * 3), true);
  assert.ok(m.average > BLUR_LIMIT_MS);
});

test("a few slow frames among fast ones do not turn the blur off; a steady slowdown does", () => {
  const m = new FrameMeter({ window: 10, limitMs: 100 });
  for (let i = 0; i < 30; i++) assert.equal(m.add(i % 10 === 0 ? 400 : 40), false, `frame ${i}`);
  let tripped = false;
  for (let i = 0; i < 10 && !tripped; i++) tripped = m.add(180);
  assert.equal(tripped, true);
});

test("the average moves with the window and bad samples count as nothing", () => {
  const m = new FrameMeter({ window: 3, limitMs: 50 });
  m.add(10); m.add(20); m.add(30);
  assert.equal(m.average, 20);
  m.add(90);
  assert.equal(m.average, (20 + 30 + 90) / 3);
  m.add(Number.NaN);
  assert.equal(m.average, (30 + 90) / 3);
  m.reset();
  assert.equal(m.average, 0);
  assert.equal(m.tooSlow(), false);
});

test("segmentations come at most 6 times a second, and take at most a quarter of the time", () => {
  assert.equal(SEG_MAX_PER_S, 6);
  assert.equal(segmentInterval(0), 1000 / 6, "before any measurement: the ceiling");
  assert.equal(segmentInterval(25), 1000 / 6, "a fast device: the ceiling");
  assert.equal(segmentInterval(100), 400, "a slower one: four times its segmentation time");
  for (const ms of [1, 10, 41.6, 42, 60, 150, BLUR_LIMIT_MS]) {
    const interval = segmentInterval(ms);
    assert.ok(interval >= 1000 / SEG_MAX_PER_S, `${ms} ms: at most ${SEG_MAX_PER_S} a second`);
    assert.ok(ms / interval <= SEG_SHARE + 1e-9, `${ms} ms: at most a quarter of the time`);
  }
  assert.equal(segmentInterval(Number.NaN), 1000 / 6);
});
