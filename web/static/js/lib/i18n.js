// The i18n lookup (no DOM): picks the catalog for the browser's languages (or the one the user chose, kept in
// localStorage) and translates keys. The catalogs are one file per language under ../i18n/ with the same keys;
// a plural key is written `key#one`, `key#few`, `key#other`… one entry per category of Intl.PluralRules for
// that language. Dates and times are shown with Intl.DateTimeFormat in the user's own locale and time zone.
// ui/dom.js applies the strings to a page.

import en from "../i18n/en.js";
import ro from "../i18n/ro.js";

/** @type {Record<string, Record<string, string>>} */
export const CATALOG = { en, ro };

/** The languages in the switcher's order. */
export const LANGUAGES = Object.freeze(["ro", "en"]);

const PREF = "alcove.lang";

/** @type {string} */
let locale = "en";

/** The language the user chose with the switcher, if any. */
function chosen() {
  try {
    const v = localStorage.getItem(PREF);
    return v && CATALOG[v] ? v : null;
  } catch { return null; }
}

/** Picks the catalog: the user's choice, else the first of the browser's languages that has one, else English. */
export function detectLocale() {
  const pick = chosen();
  if (pick) return pick;
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

/** The user's choice from the switcher: used now and remembered on this device. @param {string} l */
export function chooseLocale(l) {
  setLocale(l);
  try { localStorage.setItem(PREF, locale); } catch { /* storage disabled: this page only */ }
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

/**
 * Translates a plural key for the count `n` (Intl.PluralRules of the UI language); `{n}` is the count.
 * @param {string} key
 * @param {number} n
 * @param {Record<string, string|number>} [params]
 */
export function tn(key, n, params = {}) {
  const cat = new Intl.PluralRules(locale).select(n);
  const table = CATALOG[locale] || CATALOG.en;
  const k = `${key}#${cat}` in table ? `${key}#${cat}` : `${key}#other`;
  return t(k, { n, ...params });
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

/** The time with its time zone ("13:04 CET"): for warnings a person may read beside another clock. @param {string|Date} when */
export function formatTimeZoned(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { hour: "2-digit", minute: "2-digit", timeZoneName: "short" }).format(d);
}

/** @param {string|Date} when */
export function formatDate(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { weekday: "long", day: "numeric", month: "long" }).format(d);
}

/** A short day ("Tue 1 Dec"), for lists and confirmations. @param {string|Date} when */
export function formatDay(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { weekday: "short", day: "numeric", month: "short" }).format(d);
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
