// The too-early page's countdown (no DOM): the time left as the page shows it, every second, and the coarser
// phrase a screen reader hears only when it changes (each minute in the last hour, each hour before).

import { t, tn } from "./i18n.js";

/**
 * @param {number} ms time left until the session opens
 * @returns {{text: string, spoken: string}}
 */
export function countdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const days = Math.floor(total / 86400);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (days >= 1) return { text: tn("early.in.days", days), spoken: tn("early.in.days", days) };
  if (h >= 1) return { text: t("early.in.hours", { h, m }), spoken: tn("early.live.hours", h) };
  if (m >= 1) return { text: t("early.in.minutes", { m, s }), spoken: tn("early.live.minutes", m) };
  return { text: t("early.in.seconds", { s }), spoken: t("early.live.soon") };
}
