// The admin page: create a session and copy its links. The admin key stays in this tab's sessionStorage.

import { t, formatTime } from "../lib/i18n.js";
import { applyTranslations, onLocaleChange } from "./dom.js";

const KEY = "alcove.admin-key";
/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const DEFAULT_SEATS = { individual: 1, couple: 2, family: 4, group: 8 };

function adminKey() {
  return /** @type {HTMLInputElement} */ ($("admin-key")).value.trim();
}

/**
 * @param {string} method
 * @param {string} path
 * @param {any} [body]
 */
async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${adminKey()}` },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let data;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const message = res.status === 401 || res.status === 403
      ? t("admin.error.key")
      : (data && data.error && (data.error.message || data.error.code)) || `HTTP ${res.status}`;
    throw new Error(message);
  }
  return data;
}

/** @param {string} text @param {HTMLElement} code */
async function copy(text, code) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange();
    range.selectNodeContents(code);
    const sel = getSelection();
    sel?.removeAllRanges();
    sel?.addRange(range);
    document.execCommand("copy");
  }
  $("created-status").textContent = t("admin.copied");
}

/** The session just created (its links are shown again when the language changes). @type {any} */
let shown = null;

/** @param {any} room @param {boolean} [focus] */
function showCreated(room, focus = true) {
  shown = room;
  $("created-title").textContent = t("admin.created", { start: formatTime(room.starts_at), end: formatTime(room.ends_at) });
  const list = $("links");
  list.replaceChildren();
  /** @type {[string, string][]} */
  const links = [[t("admin.links.therapist"), room.therapist_link]];
  (room.client_links || []).forEach((/** @type {string} */ l, /** @type {number} */ i) => links.push([t("admin.links.client", { n: i + 1 }), l]));
  links.forEach(([label, url], i) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.id = `link-label-${i}`;
    name.textContent = label;
    const code = document.createElement("code");
    code.textContent = url;
    code.title = url;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn secondary";
    b.textContent = t("admin.copy");
    b.setAttribute("aria-describedby", name.id);
    b.addEventListener("click", () => copy(url, code));
    li.append(name, code, b);
    list.append(li);
  });
  const end = /** @type {HTMLButtonElement} */ ($("end-room"));
  end.disabled = false;
  end.onclick = async () => {
    try {
      await api("DELETE", `/api/rooms/${encodeURIComponent(room.room_id)}`);
      $("created-status").textContent = t("admin.ended");
      end.disabled = true;
    } catch (e) {
      $("created-status").textContent = t("admin.error", { message: /** @type {Error} */ (e).message });
    }
  };
  if (focus) $("created-status").textContent = "";
  $("created").hidden = false;
  if (focus) $("created").focus();
}

function main() {
  applyTranslations();
  onLocaleChange(() => { if (shown) showCreated(shown, false); });
  const keyInput = /** @type {HTMLInputElement} */ ($("admin-key"));
  keyInput.value = sessionStorage.getItem(KEY) || "";
  keyInput.addEventListener("input", () => sessionStorage.setItem(KEY, keyInput.value));
  $("key-form").addEventListener("submit", (e) => e.preventDefault());
  $("admin-key-forget").onclick = () => { sessionStorage.removeItem(KEY); keyInput.value = ""; keyInput.focus(); };

  const type = /** @type {HTMLSelectElement} */ ($("room-type"));
  const clients = /** @type {HTMLInputElement} */ ($("room-clients"));
  const startAt = /** @type {HTMLInputElement} */ ($("room-start-at"));
  const syncType = () => {
    const v = /** @type {keyof typeof DEFAULT_SEATS} */ (type.value);
    clients.value = String(DEFAULT_SEATS[v] || 1);
    clients.disabled = v === "individual";
  };
  type.addEventListener("change", syncType);
  syncType();
  document.querySelectorAll('input[name="start"]').forEach((r) => r.addEventListener("change", () => {
    const at = /** @type {HTMLInputElement} */ (document.querySelector('input[name="start"]:checked')).value === "at";
    startAt.disabled = !at;
    if (at && !startAt.value) {
      const d = new Date(Date.now() + 60 * 60 * 1000);
      d.setMinutes(0, 0, 0);
      const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
      startAt.value = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
    }
  }));

  $("create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = $("create-error");
    err.hidden = true;
    /** @type {Record<string, any>} */
    const body = { type: type.value };
    const at = /** @type {HTMLInputElement} */ (document.querySelector('input[name="start"]:checked')).value === "at";
    body.start = at && startAt.value ? new Date(startAt.value).toISOString() : "now";
    const duration = parseInt(/** @type {HTMLInputElement} */ ($("room-duration")).value, 10);
    if (duration > 0) body.duration_minutes = duration;
    if (type.value !== "individual") body.clients = parseInt(clients.value, 10) || DEFAULT_SEATS[/** @type {keyof typeof DEFAULT_SEATS} */ (type.value)];
    const host = /** @type {HTMLInputElement} */ ($("room-host")).value.trim();
    if (host) body.host = host;
    try {
      showCreated(await api("POST", "/api/rooms", body));
    } catch (ex) {
      err.textContent = t("admin.error", { message: /** @type {Error} */ (ex).message });
      err.hidden = false;
    }
  });
}

main();
