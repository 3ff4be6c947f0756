// The i18n lookup (no DOM): picks the catalog for the browser's languages and translates keys. The catalogs
// are one file per language under ../i18n/ with the same keys. Dates and times are shown with
// Intl.DateTimeFormat in the user's own time zone. ui/dom.js applies the strings to a page.

import en from "../i18n/en.js";

/** @type {Record<string, Record<string, string>>} */
export const CATALOG = { en };

/** @type {string} */
let locale = "en";

/** Picks the best catalog for the browser's languages. */
export function detectLocale() {
  const langs = typeof navigator !== "undefined" ? navigator.languages || [navigator.language] : [];
  for (const l of langs) {
    const short = String(l || "").toLowerCase().split("-")[0];
    if (CATALOG[short]) return short;
  }
  return "en";
}

/** @param {string} l */
export function setLocale(l) {
  locale = CATALOG[l] ? l : "en";
}

export function getLocale() { return locale; }

/**
 * Translates `key`, replacing `{param}` placeholders.
 * @param {string} key
 * @param {Record<string, string|number>} [params]
 */
export function t(key, params = {}) {
  const text = (CATALOG[locale] && CATALOG[locale][key]) ?? CATALOG.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** Formatting locale: the UI language, with the browser's regional preferences when they match. */
function fmtLocale() {
  const nav = typeof navigator !== "undefined" ? navigator.language : "en";
  return nav && nav.toLowerCase().startsWith(locale) ? nav : locale;
}

/** @param {string|Date} when */
export function formatTime(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { hour: "2-digit", minute: "2-digit" }).format(d);
}

/** @param {string|Date} when */
export function formatDate(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { weekday: "long", day: "numeric", month: "long" }).format(d);
}

/** @param {string|Date} when */
export function isToday(when) {
  const d = when instanceof Date ? when : new Date(when);
  const n = new Date();
  return d.getFullYear() === n.getFullYear() && d.getMonth() === n.getMonth() && d.getDate() === n.getDate();
}

/**
 * "mm:ss" or "h:mm:ss" for a duration in milliseconds.
 * @param {number} ms
 */
export function formatDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(sec).padStart(2, "0")}`;
}

setLocale(detectLocale());
