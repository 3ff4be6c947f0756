// The DOM helpers every view shares: element lookup, switching views, announcements, the error and ended
// pages, and applying the translations of lib/i18n.js to a page.

import { t, formatTime, getLocale } from "../lib/i18n.js";

/** @param {string} id */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const VIEWS = ["view-loading", "view-error", "view-join", "view-waiting", "view-session", "view-ended"];

/**
 * Shows one view and moves the focus to its heading (so screen readers hear the change).
 * @param {string} id
 * @param {boolean} [focus]
 */
export function showView(id, focus = true) {
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

/** Polite announcement for screen readers. @param {string} text */
export function announce(text) {
  const live = $("live");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 50);
}

/**
 * Shows an error page for a refused link.
 * @param {string} code
 * @param {{opensAt?: string|null}} [extra]
 */
export function showError(code, extra = {}) {
  const known = ["token-invalid", "missing", "token-revoked", "room-not-open", "room-ended", "room-full", "device-in-use"];
  const c = known.includes(code) ? code : "generic";
  let title = t(`error.title.${c}`);
  if (c === "room-not-open" && extra.opensAt) {
    const opens = new Date(extra.opensAt);
    const sameDay = opens.toDateString() === new Date().toDateString();
    title = sameDay
      ? t("error.title.room-not-open", { time: formatTime(opens) })
      : t("error.title.room-not-open.other", { time: formatTime(opens), date: new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long" }).format(opens) });
  } else if (c === "room-not-open") {
    title = t("error.title.room-not-open", { time: "…" }).replace(" at …", "");
  }
  $("error-title").textContent = title;
  $("error-body").textContent = t(`error.body.${c}`);
  const reload = $("error-reload");
  reload.hidden = !(c === "generic" || c === "device-in-use" || c === "room-not-open");
  reload.onclick = () => location.reload();
  document.title = `${title} – Alcove`;
  document.body.dataset.state = `error-${c}`;
  showView("view-error");
}

/**
 * @param {string} title
 * @param {string} body
 * @param {{message?: string|null, rejoin?: boolean, state?: string}} [extra]
 */
export function showEnded(title, body, extra = {}) {
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
  showView("view-ended");
}

/** Fills every element with data-i18n (text) or data-i18n-<attr> (attributes) under `root`. */
export function applyTranslations(root = document) {
  document.documentElement.lang = getLocale();
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
