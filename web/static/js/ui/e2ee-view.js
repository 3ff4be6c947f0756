// End-to-end encryption in the session view (DOM): builds the E2EE flow of lib/e2ee-flow.js for the session,
// wires it to the signaling events, and shows its state: the safety-code panel (client), the room indicator
// "Private — end-to-end encrypted" with its details on demand, a health badge per tile and the full-page "Security check failed".

import { t } from "../lib/i18n.js";
import { store } from "../lib/store.js";
import {
  ClientE2ee, TherapistE2ee, encodedTransformSupported, linkInfo, keepLinkSecret, storedLinkSecret,
} from "../lib/e2ee-flow.js";
import { b64d } from "../lib/e2ee.js";
import { $, showEnded } from "./dom.js";
import { confirmServedCode } from "./codepin.js";
import { paintAvatar, tileSlot } from "./tiles.js";

/** @typedef {import("./session.js").Session} Session */

/**
 * Whether this page runs E2EE: the therapist always when the browser can (E2EE is on by default; the room's link
 * secret is created in this browser if it has none), and must when its link carries s or this browser keeps a
 * link secret for the room; the client must when its link carries s/tk (a plain link still offers an intro).
 * @param {"client"|"therapist"} role @param {string|null|undefined} room
 */
export function e2eeWanted(role, room) {
  if (role === "therapist") return encodedTransformSupported() || !!(store.linkS || (room && storedLinkSecret(room)));
  return !!(store.linkS || store.linkTk);
}

/**
 * The name the therapist signs into the roster for a participant (what the other members' pages show). Group
 * manners: in family and group rooms a client's first name only (the console itself shows what the client typed).
 * @param {Session} session @param {any} p roster entry
 */
export function signedNameFor(session, p) {
  const name = String(p.name ?? "");
  const type = session.room && session.room.type;
  if (p.role !== "client" || (type !== "family" && type !== "group")) return name;
  return name.trim().split(/\s+/)[0] || name;
}

/**
 * Builds and wires the E2EE flow for `session` (before it connects). Resolves to the flow, or null when the
 * session runs without E2EE. A client always offers an intro when it can; it falls back to no E2EE only when
 * its link has neither s nor tk and the therapist admits it without a grant.
 * @param {Session} session
 * @returns {Promise<ClientE2ee|TherapistE2ee|null>}
 */
export async function startE2ee(session) {
  const room = session.room && session.room.id;
  const s = session.signaling;
  if (!room || !encodedTransformSupported()) {
    if (e2eeWanted(session.isTherapist ? "therapist" : "client", room)) {
      // Required but impossible (join.js normally stops this earlier): never fall back to plain media.
      setTimeout(() => securityFailed(session, new Error("no end-to-end encryption in this browser")), 0);
    }
    return null;
  }
  /** @param {string} type @param {(m: any) => void} fn */
  const on = (type, fn) => s.addEventListener(type, (ev) => fn(/** @type {CustomEvent} */ (ev).detail));
  /** @type {ClientE2ee|TherapistE2ee} */
  let flow;
  if (session.isTherapist) {
    if (!e2eeWanted("therapist", room)) return null;
    const secret = keepLinkSecret(room, store.linkS);
    /** @type {(pid: string) => void} */
    let gotPid = () => {};
    /** @type {Promise<string>} */
    const pidP = new Promise((r) => { gotPid = r; });
    const th = new TherapistE2ee(s, room, pidP, b64d(secret), confirmServedCode);
    flow = th;
    on("welcome", (m) => { gotPid(m.pid); th.reconnected(); });
    on("queue", (m) => { th.checkQueue(m.waiting || []).catch((e) => refusedBanner(session, "intro", null, e)); });
    on("roster", (m) => {
      const all = m.participants || [];
      const clients = all.filter((/** @type {any} */ p) => p.role === "client");
      th.onRoster(clients.map((/** @type {any} */ p) => p.pid),
        clients.filter((/** @type {any} */ p) => p.connected === false).map((/** @type {any} */ p) => p.pid),
        Object.fromEntries(all.map((/** @type {any} */ p) => [p.pid, signedNameFor(session, p)])));
    });
    on("key", (m) => {
      th.onKey(m.from, m.data).catch((e) => th.onSecurityFailure(m.from, e));
    });
    th.addEventListener("security", (ev) => {
      const d = /** @type {CustomEvent} */ (ev).detail;
      const who = session.roster.find((p) => p.pid === d.pid);
      const name = who ? who.name : "?";
      session.banner(`security-${d.pid}`, () => t("e2ee.failed.peer", { name }), "warn", 0);
      renderHealth(session);
    });
  } else {
    const link = linkInfo(store.link);
    const cl = new ClientE2ee(s, room, link, (pid) => {
      const p = session.roster.find((x) => x.pid === pid);
      return p ? p.role : null;
    });
    flow = cl;
    on("welcome", (m) => { cl.welcome(m.pid, m.status).catch((e) => securityFailed(session, e)); });
    // A refused epoch or switch is shown by the "refused" event below (the flow records it first).
    on("key", (m) => { cl.onKey(m.from, m.data).catch(() => {}); });
    on("waiting", () => { cl.reset(); renderSafety(session); });
    cl.addEventListener("security", (ev) => securityFailed(session, /** @type {CustomEvent} */ (ev).detail.error));
  }
  on("app", (m) => { flow.onApp(m.from, m.data); });
  flow.addEventListener("refused", (ev) => {
    const d = /** @type {CustomEvent} */ (ev).detail;
    refusedBanner(session, d.what, d.pid, d.error);
  });
  flow.addEventListener("expired", () => renderStatus(session));
  flow.addEventListener("change", () => { renderSafety(session); renderStatus(session); renderHealth(session); renderNames(session); });
  flow.addEventListener("stats", () => { renderHealth(session); renderStatus(session); });
  return flow;
}

/**
 * Client, on `admitted`: checks the grant (then reveal and safety code). Returns false when the session
 * goes on without E2EE (a link without s/tk admitted by a therapist without E2EE).
 * @param {Session} session @param {any} m
 */
export function e2eeAdmitted(session, m) {
  const flow = session.e2ee;
  if (!(flow instanceof ClientE2ee)) return true;
  if ((m.grant === null || m.grant === undefined) && !flow.required) {
    flow.stop();
    session.e2ee = null;
    renderStatus(session);
    return false;
  }
  flow.admitted(m.grant ?? null, /** @type {string} */ (session.pid)).catch((e) => securityFailed(session, e));
  return true;
}

/**
 * Client, back in the session without a new admission (reload / resume). A network cut keeps the keys in
 * memory; a reload brings back this tab's kept identity and verified therapist state (same safety code) and the
 * therapist sends a new epoch. Without either there are no keys: a link without s/tk goes on without E2EE;
 * otherwise the page stops (fail closed) and offers to rejoin.
 * @param {Session} session
 */
export function e2eeResumed(session) {
  const flow = session.e2ee;
  if (!(flow instanceof ClientE2ee)) return;
  const check = () => {
    if (session.e2ee !== flow || flow.granted || flow.grantPending || session.status === "ended") return;
    if (!flow.required && !flow.lostState) {
      flow.stop();
      session.e2ee = null;
      renderStatus(session);
      renderHealth(session);
      return;
    }
    securityFailed(session, new Error("resumed without a grant: keys are gone after a reload"));
  };
  // The kept state is normally back before the page connects (the intro waits for the keys).
  if (flow.restoreSettled) {
    if (!flow.granted && !flow.grantPending && !flow.required && !flow.lostState) check();
    else setTimeout(check, 0);
  } else {
    flow.restoreP.then(check);
  }
}

/**
 * A refused key, epoch, switch or intro, shown to the person (never only logged). The therapist sees a new
 * person with a granted seat by name; everyone else sees that a key message was refused.
 * @param {Session} session @param {string} what @param {string|null} pid @param {any} error
 */
export function refusedBanner(session, what, pid, error) {
  const waiting = session.console ? session.console.queue : [];
  const who = pid ? session.roster.find((p) => p.pid === pid) || waiting.find((/** @type {any} */ p) => p.pid === pid) : null;
  const name = who ? who.name : "?";
  const text = () => what === "new-person" ? t("e2ee.refused.new-person", { name })
    : what === "app" ? (session.isTherapist ? t("e2ee.refused.app.therapist", { name }) : t("e2ee.refused.app.client"))
    : session.isTherapist ? t("e2ee.refused.therapist", { name }) : t("e2ee.refused.client");
  const el = session.banner(`refused-${what}-${pid ?? ""}`, text, "warn", 0);
  el.dataset.refused = what;
  el.dataset.detail = error && error.message ? String(error.message) : String(error);
}

/**
 * Tile names from the therapist-signed roster of the newest epoch (not from the server's roster), once there is
 * one; a tile whose pid is not in it is marked "not in the signed roster".
 * @param {Session} session
 */
export function renderNames(session) {
  const flow = session.e2ee;
  if (!flow || flow.epoch === null) return;
  for (const [pid, tile] of session.tiles.remote()) {
    const signed = flow.signedName(pid);
    const label = /** @type {HTMLElement|null} */ (tile.querySelector(".name"));
    if (!label) continue;
    const text = signed === null ? t("e2ee.name.unsigned") : signed;
    if (label.textContent !== text) label.textContent = text;
    tile.setAttribute("aria-label", text);
    paintAvatar(tile, signed ?? "");
    tile.dataset.signedName = signed === null ? "" : "1";
  }
}

/**
 * Full page "Security check failed": the session stops and this page leaves the room.
 * @param {Session} session @param {any} error
 */
export function securityFailed(session, error) {
  if (session.status === "ended") return;
  console.warn("security check failed:", error && error.message ? error.message : error);
  session.teardown(); // every connection closes now: no media either way
  // Leave the room a moment later, so the SDP already on its way to the therapist is still checked there
  // (the therapist sees the failure too instead of only "left").
  setTimeout(() => session.signaling.leave(), 2000);
  store.forgetSession();
  showEnded("e2ee.failed.title", "e2ee.failed.body", { state: "security-failed" });
}

/**
 * The safety-code panel (client): 7 emoji, each named under it in the page's language (the same words for
 * screen readers), and the decimal form, with one line of explanation.
 * @param {Session} session
 */
export function renderSafety(session) {
  const panel = document.getElementById("safety");
  if (!panel) return;
  const flow = session.e2ee;
  const sas = flow instanceof ClientE2ee ? flow.sas : null;
  panel.hidden = !sas || session.status !== "admitted";
  if (!sas) return;
  const list = $("safety-emoji");
  list.replaceChildren();
  sas.indices.forEach((index, i) => {
    const emoji = sas.emoji[i];
    const name = t(`sas.${index}`);
    const li = document.createElement("li");
    const e = document.createElement("span");
    e.className = "sas-emoji";
    e.textContent = emoji;
    e.setAttribute("aria-hidden", "true");
    const n = document.createElement("span");
    n.className = "sas-name";
    n.textContent = name;
    li.append(e, n);
    list.append(li);
  });
  $("safety-decimal").textContent = sas.decimal.join(" ");
  // What the code has proven so far: the link's key, the person's own comparison, or nothing yet.
  const state = /** @type {ClientE2ee} */ (flow).verification || "unverified";
  const line = $("safety-state");
  line.textContent = t(`e2ee.verify.${state}`);
  line.dataset.state = state;
  panel.dataset.verified = state;
  const match = /** @type {HTMLButtonElement} */ ($("safety-match"));
  match.hidden = state !== "unverified";
  // The button goes away once pressed: the focus moves to the line that now says "Verified" (read out as focused;
  // the line is not a live region, so it is not read again on every re-render).
  match.onclick = () => {
    /** @type {ClientE2ee} */ (flow).markCompared();
    line.focus();
  };
  const type = session.room ? session.room.type : "individual";
  $("safety-group").hidden = type === "individual";
  const hide = $("safety-hide");
  hide.onclick = () => { panel.classList.toggle("collapsed"); hide.setAttribute("aria-expanded", String(!panel.classList.contains("collapsed"))); };
}

/**
 * The room indicator: "Private — end-to-end encrypted" (or a plain warning without E2EE), a button that shows the
 * details on demand: what the verification says, the key epoch and what the encryption means. Not a live region:
 * the label changes quietly and the epoch is never read out unless the person opens the details.
 * @param {Session} session
 */
export function renderStatus(session) {
  const el = document.getElementById("e2ee-status");
  if (!el) return;
  const flow = session.e2ee;
  el.hidden = session.status !== "admitted";
  wireDetails();
  const label = $("e2ee-label");
  /** @param {string} text */
  const setLabel = (text) => { if (label.textContent !== text) label.textContent = text; };
  $("e2ee-details-explain").textContent = t(session.isTherapist ? "e2ee.details.explain.therapist" : "e2ee.details.explain.client");
  const epochLine = $("e2ee-details-epoch");
  const verifyLine = $("e2ee-details-verify");
  if (!flow) {
    setLabel(t("e2ee.status.off"));
    el.dataset.state = "off";
    epochLine.hidden = true;
    verifyLine.hidden = true;
    $("e2ee-details-explain").hidden = true;
    return;
  }
  $("e2ee-details-explain").hidden = false;
  const epoch = flow.epoch;
  el.dataset.epoch = epoch === null ? "" : String(epoch);
  epochLine.hidden = epoch === null;
  epochLine.textContent = epoch === null ? "" : t("e2ee.details.epoch", { epoch });
  verifyLine.hidden = false;
  verifyLine.textContent = verificationText(session, flow);
  if (flow.sendExpired) {
    setLabel(t("e2ee.status.reconnecting"));
    el.dataset.state = "reconnecting";
    return;
  }
  // A client whose therapist key is neither pinned by its link nor compared: encrypted, visibly not verified.
  const unverified = flow instanceof ClientE2ee && flow.verification === "unverified";
  setLabel(epoch === null ? t("e2ee.status.starting") : t(unverified ? "e2ee.status.unverified" : "e2ee.status.on"));
  el.dataset.state = epoch === null ? "starting" : "on";
  el.dataset.verified = unverified ? "no" : "yes";
}

/**
 * The details' verification line: the client's own state; for the therapist, whether every client is marked verified.
 * @param {Session} session @param {ClientE2ee|TherapistE2ee} flow
 */
function verificationText(session, flow) {
  if (flow instanceof ClientE2ee) return t(`e2ee.details.client.${flow.verification || "unverified"}`);
  const clients = session.roster.filter((p) => p.role === "client" && flow.sasOf.has(p.pid));
  if (!clients.length) return t("e2ee.details.verified.none");
  return t(clients.every((p) => flow.isVerified(p.pid)) ? "e2ee.details.verified.all" : "e2ee.details.verified.some");
}

/** The details button opens and closes its panel; Escape closes it and leaves the focus on the button. */
function wireDetails() {
  const toggle = /** @type {HTMLButtonElement} */ ($("e2ee-toggle"));
  if (toggle.dataset.wired) return;
  toggle.dataset.wired = "1";
  const details = $("e2ee-details");
  /** @param {boolean} open */
  const set = (open) => { details.hidden = !open; toggle.setAttribute("aria-expanded", String(open)); };
  toggle.addEventListener("click", () => set(details.hidden));
  $("e2ee-status").addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !details.hidden) { set(false); toggle.focus(); }
  });
}

/** A badge per remote tile from the worker's counters: no silent black video. @param {Session} session */
export function renderHealth(session) {
  const flow = session.e2ee;
  for (const [pid, tile] of session.tiles.remote()) {
    let badge = /** @type {HTMLElement|null} */ (tile.querySelector(".e2ee-badge"));
    if (!flow) {
      if (badge) badge.remove();
      continue;
    }
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "e2ee-badge"; // not a live region: a badge is looked at, never read out on each change
      tileSlot(tile, "start").prepend(badge);
    }
    let state = flow.health(pid);
    /** @type {string} */
    let text;
    if (flow.failures.some((/** @type {{pid: string|null}} */ f) => f.pid === pid)) {
      state = "failing";
      text = t("e2ee.badge.security");
    } else if (flow instanceof TherapistE2ee && flow.unkeyed().includes(pid)) {
      state = "failing";
      text = t("e2ee.badge.nokey");
    } else {
      text = t(`e2ee.badge.${state}`);
    }
    if (badge.textContent !== text) badge.textContent = text;
    badge.dataset.state = state;
    tile.dataset.e2ee = state;
    renderVerified(flow, pid, tile);
  }
}

/**
 * "Not verified yet" on a remote tile: on the therapist's screen for each client whose safety code is not
 * marked compared; on a client's screen for the therapist, until the link's key or the person's comparison
 * verified it. (Other clients in a group are not checked by a code: the therapist's signed roster admits them.)
 * @param {ClientE2ee|TherapistE2ee} flow @param {string} pid @param {HTMLElement} tile
 */
function renderVerified(flow, pid, tile) {
  const unverified = flow instanceof TherapistE2ee
    ? flow.sasOf.has(pid) && !flow.isVerified(pid)
    : flow.verification === "unverified" && flow.roleOf(pid) === "therapist";
  let tag = /** @type {HTMLElement|null} */ (tile.querySelector(".verify-badge"));
  if (!unverified) {
    if (tag) tag.remove();
    delete tile.dataset.verified;
    return;
  }
  if (!tag) {
    tag = document.createElement("span");
    tag.className = "verify-badge";
    tileSlot(tile, "start").append(tag);
  }
  // the words, and a shorter form a small tile shows instead (css; screen readers get the words)
  const text = t("e2ee.verify.not-yet");
  if (tag.dataset.text !== text) {
    const long = document.createElement("span");
    long.className = "long";
    long.textContent = text;
    const short = document.createElement("span");
    short.className = "short";
    short.setAttribute("aria-hidden", "true");
    short.textContent = t("e2ee.verify.short");
    tag.replaceChildren(long, short);
    tag.dataset.text = text;
  }
  tile.dataset.verified = "no";
}
