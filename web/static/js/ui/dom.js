// The DOM helpers every view shares: element lookup, switching views, announcements, the error and ended
// pages, applying the translations of lib/i18n.js to a page and the language switcher.

import { t, formatTimeZoned, formatDate, getLocale, chooseLocale, LANGUAGES } from "../lib/i18n.js";
import { countdown } from "../lib/countdown.js";

/** @param {string} id */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const VIEWS = ["view-loading", "view-error", "view-join", "view-waiting", "view-session", "view-ended"];

/**
 * Shows one view and moves the focus to its heading (so screen readers hear the change).
 * @param {string} id
 * @param {boolean} [focus]
 */
export function showView(id, focus = true) {
  stopCountdown();
  for (const v of VIEWS) {
    const el = document.getElementById(v);
    if (el) el.hidden = v !== id;
  }
  document.getElementById("main")?.classList.toggle("in-session", id === "view-session");
  if (focus) {
    const heading = /** @type {HTMLElement|null} */ (document.querySelector(`#${id} h1`));
    if (heading) {
      if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: true });
    }
  }
}

/** Polite announcement for screen readers (the page's live region). @param {string} text */
export function announce(text) {
  const live = $("live");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 50);
}

/** Urgent announcement (the end of a session): interrupts what the screen reader is saying. @param {string} text */
export function announceNow(text) {
  const live = $("live-urgent");
  if (!live) { announce(text); return; }
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 50);
}

/** @type {Set<() => void>} */
const relabel = new Set();

/**
 * Registers a view's re-render for a change of language (the switcher changes it without a reload).
 * @param {() => void} fn
 */
export function onLocaleChange(fn) {
  relabel.add(fn);
}

/** The page shown last by showError/showEnded, re-rendered in a new language. @type {(() => void)|null} */
let finalPage = null;

/** The too-early page's timer. @type {ReturnType<typeof setInterval> | null} */
let countdownTimer = null;

function stopCountdown() {
  if (countdownTimer !== null) clearInterval(countdownTimer);
  countdownTimer = null;
}

/**
 * The too-early page counts down to the opening and calls `onOpen` when it comes (by this device's clock; the
 * server has the last word). The visible text changes every second; the live region only when the phrase a
 * person should hear changes (the minutes, or the hours).
 * @param {number} opens epoch ms @param {() => void} onOpen
 */
function startCountdown(opens, onOpen) {
  const box = $("error-countdown");
  const live = $("error-countdown-live");
  box.hidden = false;
  live.textContent = "";
  /** @type {string | null} */
  let said = null;
  const tick = () => {
    const left = opens - Date.now();
    if (left <= 0) {
      stopCountdown();
      box.textContent = t("early.opening");
      onOpen();
      return;
    }
    const now = countdown(left);
    box.textContent = now.text;
    if (said !== null && now.spoken !== said) live.textContent = now.spoken;
    said = now.spoken;
  };
  tick();
  if (box.textContent !== t("early.opening")) countdownTimer = setInterval(tick, 1000);
}

/**
 * Shows an error page for a refused link; too early, with a countdown that calls `onOpen` at the opening.
 * @param {string} code
 * @param {{opensAt?: string|null, role?: string|null, onOpen?: () => void, focus?: boolean}} [extra]
 */
export function showError(code, extra = {}) {
  finalPage = () => showError(code, { ...extra, focus: false });
  const known = ["token-invalid", "missing", "token-revoked", "room-not-open", "room-ended", "room-full", "device-in-use"];
  const c = known.includes(code) ? code : "generic";
  let title = t(`error.title.${c}`);
  if (c === "room-not-open" && extra.opensAt) {
    const opens = new Date(extra.opensAt);
    const sameDay = opens.toDateString() === new Date().toDateString();
    title = sameDay
      ? t("error.title.room-not-open", { time: formatTimeZoned(opens) })
      : t("error.title.room-not-open.other", { time: formatTimeZoned(opens), date: formatDate(opens) });
  } else if (c === "room-not-open") {
    title = t("error.title.room-not-open.unknown");
  }
  const counting = c === "room-not-open" && !!extra.opensAt && !!extra.onOpen;
  $("error-title").textContent = title;
  $("error-body").textContent = counting && extra.role ? t(`error.body.${c}.${extra.role}`) : t(`error.body.${c}`);
  const reload = $("error-reload");
  reload.hidden = counting || !(c === "generic" || c === "device-in-use" || c === "room-not-open");
  reload.onclick = () => location.reload();
  document.title = `${title} – Alcove`;
  document.body.dataset.state = `error-${c}`;
  showView("view-error", extra.focus !== false);
  $("error-countdown").hidden = true;
  if (counting && extra.opensAt && extra.onOpen) startCountdown(Date.parse(extra.opensAt), extra.onOpen);
}

/**
 * The page after a session (ended, declined, removed, left, security check failed).
 * @param {string} titleKey catalog key of the heading
 * @param {string} bodyKey catalog key of the text
 * @param {{message?: string|null, rejoin?: boolean, state?: string, focus?: boolean}} [extra]
 */
export function showEnded(titleKey, bodyKey, extra = {}) {
  finalPage = () => showEnded(titleKey, bodyKey, { ...extra, focus: false });
  const title = t(titleKey);
  const body = t(bodyKey);
  const first = document.getElementById("view-ended")?.hidden !== false;
  $("ended-title").textContent = title;
  $("ended-body").textContent = body;
  const msg = $("ended-message");
  msg.hidden = !extra.message;
  msg.textContent = extra.message ? t("ended.declined.message", { message: extra.message }) : "";
  document.getElementById("ended-rejoin-row")?.remove();
  if (extra.rejoin) {
    const p = document.createElement("p");
    const b = document.createElement("button");
    b.type = "button";
    b.id = "ended-rejoin";
    b.className = "btn secondary";
    b.textContent = t("ended.rejoin");
    b.addEventListener("click", () => location.reload());
    p.append(b);
    p.id = "ended-rejoin-row";
    $("view-ended").append(p);
  }
  document.title = `${title} – Alcove`;
  document.body.dataset.state = extra.state || "ended";
  showView("view-ended", extra.focus !== false);
  if (first && extra.focus !== false) announceNow(t("ended.announce", { title, body }));
}

/** Fills every element with data-i18n (text) or data-i18n-<attr> (attributes) under `root`. */
export function applyTranslations(root = document) {
  document.documentElement.lang = getLocale();
  renderSwitcher();
  root.querySelectorAll("[data-i18n]").forEach((el) => {
    el.textContent = t(/** @type {HTMLElement} */ (el).dataset.i18n || "");
  });
  for (const attr of ["aria-label", "placeholder", "title"]) {
    root.querySelectorAll(`[data-i18n-${attr}]`).forEach((el) => {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`) || ""));
    });
  }
}

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
export function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * @param {string} visible
 * @param {string} accessible exact accessible name
 * @param {string} className
 * @param {() => void} onClick
 */
export function button(visible, accessible, className, onClick) {
  const b = /** @type {HTMLButtonElement} */ (el("button", `btn ${className}`, visible));
  b.type = "button";
  b.setAttribute("aria-label", accessible);
  b.addEventListener("click", onClick);
  return b;
}

/** The language switcher in the page's header: one button per catalog, each named in its own language. */
function renderSwitcher() {
  const box = document.getElementById("lang-switch");
  if (!box) return;
  if (!box.childElementCount) {
    for (const l of LANGUAGES) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "lang-btn";
      b.lang = l;
      b.dataset.lang = l;
      b.dataset.i18n = `lang.${l}`;
      b.addEventListener("click", () => switchLanguage(l));
      box.append(b);
    }
  }
  box.querySelectorAll("button").forEach((b) => {
    b.setAttribute("aria-pressed", String(/** @type {HTMLElement} */ (b).dataset.lang === getLocale()));
  });
}

/** Changes the language at once (remembered on this device) and re-renders the page. @param {string} l */
export function switchLanguage(l) {
  if (l === getLocale()) return;
  chooseLocale(l);
  applyTranslations();
  for (const fn of relabel) fn();
  if (finalPage) finalPage();
}
