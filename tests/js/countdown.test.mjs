// node --test tests/js/  (Node >= 20; no npm packages): lib/countdown.js, the too-early page's words for the time left.
import { test } from "node:test";
import assert from "node:assert/strict";

import { setLocale } from "../../web/static/js/lib/i18n.js";
import { countdown } from "../../web/static/js/lib/countdown.js";

test("the countdown shows seconds and speaks only in minutes (or hours, or days)", () => {
  setLocale("en");
  assert.deepEqual(countdown((4 * 60 + 12) * 1000), { text: "Opens in 4 min 12 s", spoken: "Opens in 4 minutes" });
  assert.equal(countdown((4 * 60 + 11) * 1000).spoken, countdown((4 * 60 + 1) * 1000).spoken);  // same minute: silent
  assert.equal(countdown(61_000).spoken, "Opens in 1 minute");
  assert.deepEqual(countdown(59_000), { text: "Opens in 59 s", spoken: "Opens in less than a minute" });
  assert.deepEqual(countdown(999), { text: "Opens in 1 s", spoken: "Opens in less than a minute" });
  assert.deepEqual(countdown((2 * 3600 + 5 * 60) * 1000), { text: "Opens in 2 h 5 min", spoken: "Opens in 2 hours" });
  assert.equal(countdown(3 * 86400 * 1000).text, "Opens in 3 days");
});

test("Romanian plural forms", () => {
  setLocale("ro");
  assert.equal(countdown(61_000).spoken, "Se deschide peste 1 minut");
  assert.equal(countdown(3 * 60_000).spoken, "Se deschide peste 3 minute");
  assert.equal(countdown(25 * 60_000).spoken, "Se deschide peste 25 de minute");
  assert.equal(countdown((4 * 60 + 12) * 1000).text, "Se deschide peste 4 min 12 s");
  setLocale("en");
});
