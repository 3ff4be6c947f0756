// The admin page: create a session and copy its links; the list of upcoming sessions, where any link can be copied
// again or revoked. The admin key stays in this tab's sessionStorage; the therapist's key code (optional) in this
// browser's localStorage, added to the client links here (never sent).

import { t, tn, formatDay, formatTime, formatTimeZoned } from "../lib/i18n.js";
import { parseKeyCode, withKeyCode } from "../lib/keycode.js";
import { applyTranslations, onLocaleChange } from "./dom.js";

const KEY = "alcove.admin-key";
const KEY_CODE = "alcove.admin.key-code";
/** Which therapist's key code each session's client links carry (room id -> code), kept in this browser only. */
const ROOM_CODES = "alcove.admin.room-codes";

/** @returns {Record<string, string>} */
function roomCodes() {
  try { return JSON.parse(localStorage.getItem(ROOM_CODES) || "{}") || {}; } catch { return {}; }
}

/** @param {Record<string, string>} codes */
function keepRoomCodes(codes) {
  try { localStorage.setItem(ROOM_CODES, JSON.stringify(codes)); } catch { /* storage disabled: this page only */ }
}
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

/** @param {string} text @param {HTMLElement} code @param {string} [status] where to say it was copied */
async function copy(text, code, status = "created-status") {
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
  $(status).textContent = t("admin.copied");
}

/**
 * The therapist's key code typed on this page, canonical; "" when none; null when it is not a key code.
 * @returns {string|null}
 */
function keyCode() {
  const text = /** @type {HTMLInputElement} */ ($("room-key-code")).value;
  if (!text.trim()) return "";
  try { return parseKeyCode(text); } catch { return null; }
}

/** The session just created and its key code (its links are shown again when the language changes). @type {any} */
let shown = null;
let shownCode = "";

/**
 * @param {any} room @param {string} code the therapist's key code ("" for none), added to the client links here
 * @param {boolean} [focus]
 */
function showCreated(room, code, focus = true) {
  shown = room;
  shownCode = code;
  $("created-title").textContent = t("admin.created", { when: when(room) });
  const list = $("links");
  list.replaceChildren();
  const anchor = $("links-anchor");
  anchor.textContent = code ? t("admin.keycode.added") : t("admin.keycode.none");
  anchor.hidden = false;
  /** @type {[string, string][]} */
  const links = [[t("admin.links.therapist"), room.therapist_link]];
  (room.client_links || []).forEach((/** @type {string} */ l, /** @type {number} */ i) => links.push(
    [t("admin.links.client", { n: i + 1 }), code ? withKeyCode(l, code) : l]));
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
      loadUpcoming();
    } catch (e) {
      $("created-status").textContent = t("admin.error", { message: /** @type {Error} */ (e).message });
    }
  };
  if (focus) $("created-status").textContent = "";
  $("created").hidden = false;
  if (focus) $("created").focus();
}

/** "Tue 1 Dec, 08:00–08:50 CET": the day, the times and the time zone. @param {any} room */
function when(room) {
  return t("admin.when", { date: formatDay(room.starts_at), start: formatTime(room.starts_at), end: formatTimeZoned(room.ends_at) });
}

/** The upcoming sessions as the server last listed them (shown again when the language changes). @type {any[] | null} */
let upcoming = null;

async function loadUpcoming() {
  if (!adminKey()) {
    upcoming = null;
    renderUpcoming();
    return;
  }
  try {
    upcoming = (await api("GET", "/api/rooms")).rooms;
    const codes = Object.entries(roomCodes());  // forget the codes of sessions that are over
    const live = new Set((upcoming || []).map((/** @type {any} */ r) => r.room_id));
    if (codes.some(([id]) => !live.has(id))) keepRoomCodes(Object.fromEntries(codes.filter(([id]) => live.has(id))));
  } catch (e) {
    upcoming = null;
    $("upcoming-status").textContent = t("admin.upcoming.error", { message: /** @type {Error} */ (e).message });
  }
  renderUpcoming();
}

/** One link of a listed session: its label, the link, Copy and Revoke (which asks first). @param {any} room @param {any} link */
function linkRow(room, link) {
  const li = document.createElement("li");
  const name = document.createElement("span");
  name.id = `up-${room.room_id}-${link.n}`;
  name.textContent = link.role === "therapist" ? t("admin.links.therapist") : t("admin.links.client", { n: link.n });
  const described = `${name.id} up-${room.room_id}`;
  const code = document.createElement("code");
  const keyCodeOfRoom = roomCodes()[room.room_id];  // the code this browser added when it created the session
  const url = link.role === "client" && keyCodeOfRoom ? withKeyCode(link.link, keyCodeOfRoom) : link.link;
  code.textContent = url;
  code.title = url;
  li.append(name, code);
  if (link.revoked) {
    const gone = document.createElement("span");
    gone.className = "revoked";
    gone.textContent = t("admin.revoked");
    li.append(gone);
    return li;
  }
  const copyBtn = button(t("admin.copy"), "btn secondary", described, () => copy(url, code, "upcoming-status"));
  const revoke = button(t("admin.revoke"), "btn quiet", described, () => {
    // Nothing irreversible by one click: ask, in place.
    const ask = document.createElement("span");
    ask.className = "inline revoke-ask";
    const question = document.createElement("span");
    question.id = `${name.id}-ask`;
    question.textContent = t("admin.revoke.ask");
    const yes = button(t("admin.revoke.confirm"), "btn danger", `${question.id} ${described}`, async () => {
      try {
        await api("DELETE", `/api/rooms/${encodeURIComponent(room.room_id)}/links/${link.n}`);
        $("upcoming-status").textContent = t("admin.revoke.done");
        await loadUpcoming();
        document.getElementById(`up-${room.room_id}`)?.focus();
      } catch (e) {
        $("upcoming-status").textContent = t("admin.upcoming.error", { message: /** @type {Error} */ (e).message });
      }
    });
    const no = button(t("admin.revoke.keep"), "btn secondary", described, () => {
      ask.replaceWith(copyBtn, revoke);
      revoke.focus();
    });
    ask.append(question, yes, no);
    copyBtn.remove();
    revoke.replaceWith(ask);
    yes.focus();
  });
  li.append(copyBtn, revoke);
  return li;
}

/** @param {string} text @param {string} cls @param {string} describedBy @param {() => void} onClick */
function button(text, cls, describedBy, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  b.setAttribute("aria-describedby", describedBy);
  b.addEventListener("click", onClick);
  return b;
}

function renderUpcoming() {
  const list = $("upcoming-list");
  list.replaceChildren();
  const note = $("upcoming-note");
  $("upcoming-refresh").hidden = upcoming === null;
  if (upcoming === null) {
    note.textContent = t("admin.upcoming.locked");
    note.hidden = !!adminKey() && !!$("upcoming-status").textContent;
    return;
  }
  note.textContent = t("admin.upcoming.empty");
  note.hidden = upcoming.length > 0;
  for (const room of upcoming) {
    const item = document.createElement("li");
    const h = document.createElement("h3");
    h.id = `up-${room.room_id}`;
    h.tabIndex = -1;
    h.textContent = when(room);
    const what = document.createElement("p");
    what.className = "hint";
    what.textContent = `${t(`admin.type.${room.type}`)} · ${tn("admin.upcoming.seats", room.seats)}`;
    const links = document.createElement("ul");
    links.className = "links";
    links.setAttribute("aria-labelledby", h.id);
    for (const link of room.links) links.append(linkRow(room, link));
    item.append(h, what, links);
    list.append(item);
  }
}

function main() {
  applyTranslations();
  onLocaleChange(() => {
    if (shown) showCreated(shown, shownCode, false);
    renderUpcoming();
  });
  const keyInput = /** @type {HTMLInputElement} */ ($("admin-key"));
  keyInput.value = sessionStorage.getItem(KEY) || "";
  keyInput.addEventListener("input", () => sessionStorage.setItem(KEY, keyInput.value));
  keyInput.addEventListener("change", () => { $("upcoming-status").textContent = ""; loadUpcoming(); });
  $("upcoming-refresh").addEventListener("click", () => { $("upcoming-status").textContent = ""; loadUpcoming(); });
  $("key-form").addEventListener("submit", (e) => e.preventDefault());
  // The therapist's key code stays in this browser (it is not a secret, but it must come from the therapist).
  const codeInput = /** @type {HTMLInputElement} */ ($("room-key-code"));
  try { codeInput.value = localStorage.getItem(KEY_CODE) || ""; } catch { /* storage disabled */ }
  codeInput.addEventListener("change", () => {
    const code = keyCode();
    try {
      if (code) localStorage.setItem(KEY_CODE, code);
      else if (code === "") localStorage.removeItem(KEY_CODE);
    } catch { /* storage disabled: this page only */ }
  });
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
  $("room-plan").addEventListener("change", () => {
    /** @type {HTMLInputElement} */ ($("room-plan-minutes")).disabled = /** @type {HTMLSelectElement} */ ($("room-plan")).value !== "wait";
  });
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
    const code = keyCode();
    if (code === null) {
      // Refused before anything is sent: a session is not created with links the clients could not check.
      err.textContent = t("admin.keycode.bad");
      err.hidden = false;
      $("room-key-code").focus();
      return;
    }
    /** @type {Record<string, any>} */
    const body = { type: type.value };
    const at = /** @type {HTMLInputElement} */ (document.querySelector('input[name="start"]:checked')).value === "at";
    body.start = at && startAt.value ? new Date(startAt.value).toISOString() : "now";
    const duration = parseInt(/** @type {HTMLInputElement} */ ($("room-duration")).value, 10);
    if (duration > 0) body.duration_minutes = duration;
    if (type.value !== "individual") body.clients = parseInt(clients.value, 10) || DEFAULT_SEATS[/** @type {keyof typeof DEFAULT_SEATS} */ (type.value)];
    const host = /** @type {HTMLInputElement} */ ($("room-host")).value.trim();
    if (host) body.host = host;
    body.safety_check = /** @type {HTMLSelectElement} */ ($("room-safety")).value;
    const plan = /** @type {HTMLSelectElement} */ ($("room-plan")).value;
    if (plan) body.disconnect_plan = plan;
    if (plan === "wait") body.disconnect_wait_minutes = parseInt(/** @type {HTMLInputElement} */ ($("room-plan-minutes")).value, 10) || 10;
    try {
      const room = await api("POST", "/api/rooms", body);
      if (code) keepRoomCodes({ ...roomCodes(), [room.room_id]: code });
      showCreated(room, code);
      loadUpcoming();
    } catch (ex) {
      err.textContent = t("admin.error", { message: /** @type {Error} */ (ex).message });
      err.hidden = false;
    }
  });
}

main();
loadUpcoming();
