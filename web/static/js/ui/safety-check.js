// The safety check at the start (client side): right after admission the client's page asks where they are now,
// an emergency contact and the plan if the call drops. The answers go end to end encrypted to the therapist only
// (a private app message of kind "safety", lib/e2ee-flow.js sendApp); nothing is stored by the server or this
// browser (only whether this tab already answered, never what). The room's settings (`room.safety`: required /
// optional / off, the prefilled plan, the practice's emergency numbers) come from the server: a hint for the form.

import { t } from "../lib/i18n.js";
import { $ } from "./dom.js";

/** Longest texts the form sends (the app message stays far below its 4 KiB). */
export const LIMITS = { where: 300, name: 80, phone: 32 };

const PHONE = /^\+?[0-9][0-9 ()./-]{2,30}$/;

/** @param {string} s */
const clean = (s) => s.replace(/\s+/g, " ").trim();

/**
 * The answers as the therapist's console may show them: a well-formed `safety` body, or null.
 * @param {any} body
 * @returns {{where: string, contact: {name: string, phone: string}, plan: {kind: "call-back", phone: string}|{kind: "wait", minutes: number}}|null}
 */
export function parseAnswers(body) {
  if (!body || typeof body !== "object" || body.k !== "safety") return null;
  const str = (/** @type {any} */ v, /** @type {number} */ max) => (typeof v === "string" && v.length <= max ? clean(v) : null);
  const where = str(body.where, LIMITS.where);
  const c = body.contact && typeof body.contact === "object" ? body.contact : {};
  const name = str(c.name, LIMITS.name);
  const phone = str(c.phone, LIMITS.phone);
  const p = body.plan && typeof body.plan === "object" ? body.plan : {};
  if (!where || !name || !phone) return null;
  if (p.kind === "call-back") {
    const back = str(p.phone, LIMITS.phone);
    return back ? { where, contact: { name, phone }, plan: { kind: "call-back", phone: back } } : null;
  }
  if (p.kind === "wait" && Number.isInteger(p.minutes) && p.minutes >= 1 && p.minutes <= 60) {
    return { where, contact: { name, phone }, plan: { kind: "wait", minutes: p.minutes } };
  }
  return null;
}

/** The client's safety form. One per session page. */
export class SafetyCheck {
  /** @param {import("./session.js").Session} session */
  constructor(session) {
    this.session = session;
    /** @type {"required"|"optional"|"off"} */
    this.mode = "off";
    this.sent = false;
    /** Answers waiting for a key (sendApp said no key yet): sent on the next key change. @type {any} */
    this._pending = null;
    this._stateKey = `alcove.safetycheck.${session.room && session.room.id}`;
    this._wired = false;
  }

  /** The room's settings, checked (anything unknown: off). */
  get settings() {
    const s = this.session.room && this.session.room.safety;
    return s && typeof s === "object" ? s : {};
  }

  /** Whether this tab already sent its answers in this session (a reload asks no second time). */
  _answered() {
    try { return sessionStorage.getItem(this._stateKey) === "1"; } catch { return false; }
  }

  /** Called on each entry into the session (admission, resume): shows the form when the room asks for it. */
  start() {
    const s = this.settings;
    const mode = s.check === "required" || s.check === "optional" ? s.check : "off";
    // Only with end-to-end encryption: the answers go to the therapist alone, or nowhere.
    const e2ee = this.session.e2ee;
    if (mode === "off" || this.session.isTherapist || !e2ee || typeof e2ee.sendApp !== "function" || this.sent
      || this._answered()) return;
    if (this._wired) return; // already asking (a reconnect enters the session again): keep what is typed
    this.mode = mode;
    this._wire();
    this._prefill();
    // Required: the form comes first. Optional: a calm banner asks, the form opens on "Answer now" (the call
    // view stays as it is until then).
    if (mode === "required") this.open(); else this._prompt();
  }

  _prompt() {
    this.session.banner("safetycheck-ask", () => t("safetycheck.ask"), "info", 0,
      { key: "safetycheck.ask.action", run: () => this.open() });
  }

  _wire() {
    if (this._wired) return;
    this._wired = true;
    const form = /** @type {HTMLFormElement} */ ($("safetycheck-form"));
    form.onsubmit = (ev) => { ev.preventDefault(); this.submit(); };
    $("safetycheck-later").onclick = () => this.later();
    for (const id of ["safetycheck-plan-call", "safetycheck-plan-wait"]) {
      $(id).addEventListener("change", () => this._renderPlan());
    }
    const e2ee = this.session.e2ee;
    if (e2ee) e2ee.addEventListener("change", () => { if (this._pending) this._send(this._pending); });
  }

  _prefill() {
    const s = this.settings;
    const call = /** @type {HTMLInputElement} */ ($("safetycheck-plan-call"));
    const wait = /** @type {HTMLInputElement} */ ($("safetycheck-plan-wait"));
    call.checked = s.plan === "call-back";
    wait.checked = s.plan === "wait";
    if (s.plan === "wait" && Number.isInteger(s.wait_minutes)) {
      /** @type {HTMLInputElement} */ ($("safetycheck-wait")).value = String(s.wait_minutes);
    }
    this._renderPlan();
    this.relabel();
  }

  _renderPlan() {
    $("safetycheck-callback-field").hidden = !/** @type {HTMLInputElement} */ ($("safetycheck-plan-call")).checked;
    $("safetycheck-wait-field").hidden = !/** @type {HTMLInputElement} */ ($("safetycheck-plan-wait")).checked;
  }

  /** The texts that depend on the room (numbers, required/optional) in the current language. */
  relabel() {
    const numbers = Array.isArray(this.settings.numbers) ? this.settings.numbers : [];
    const list = numbers
      .filter((/** @type {any} */ n) => n && typeof n.number === "string")
      .map((/** @type {any} */ n) => (n.label ? `${n.number} (${String(n.label)})` : n.number));
    $("safetycheck-numbers").textContent = list.length ? t("safetycheck.numbers", { numbers: list.join(", ") }) : "";
    $("safetycheck-intro").textContent = t(this.mode === "required" ? "safetycheck.intro.required" : "safetycheck.intro");
    $("safetycheck-later").hidden = this.mode !== "optional";
    for (const id of ["safetycheck-error", "safetycheck-status"]) {
      const node = $(id);
      if (node.dataset.key && node.textContent) node.textContent = t(node.dataset.key);
    }
  }

  /** The session is over: the form is closed and emptied. */
  stop() {
    this._pending = null;
    /** @type {HTMLFormElement} */ ($("safetycheck-form")).reset();
    $("safetycheck").hidden = true;
    this.session.removeBanner("safetycheck-ask");
    delete document.body.dataset.safetycheck;
  }

  open() {
    if (this.sent) return;
    this.session.removeBanner("safetycheck-ask");
    $("safetycheck").hidden = false;
    document.body.dataset.safetycheck = this.mode;
    const title = $("safetycheck-title");
    title.focus();
  }

  later() {
    $("safetycheck").hidden = true;
    delete document.body.dataset.safetycheck;
    this._prompt();
    const again = /** @type {HTMLElement|null} */ (document.querySelector('#banners .banner[data-key="safetycheck-ask"] button'));
    if (again) again.focus();
  }

  /** Checks the form; returns the body to send, or null (the first missing field is marked and focused). */
  _collect() {
    const val = (/** @type {string} */ id) => clean(/** @type {HTMLInputElement} */ ($(id)).value);
    const where = val("safetycheck-where");
    const name = val("safetycheck-contact-name");
    const phone = val("safetycheck-contact-phone");
    const call = /** @type {HTMLInputElement} */ ($("safetycheck-plan-call")).checked;
    const wait = /** @type {HTMLInputElement} */ ($("safetycheck-plan-wait")).checked;
    const back = val("safetycheck-callback");
    const minutes = Number(val("safetycheck-wait"));
    /** @type {[string, boolean, string][]} field id, ok, error key */
    const checks = [
      ["safetycheck-where", !!where, "safetycheck.error.where"],
      ["safetycheck-contact-name", !!name, "safetycheck.error.contact"],
      ["safetycheck-contact-phone", PHONE.test(phone), "safetycheck.error.phone"],
      ["safetycheck-plan-call", call || wait, "safetycheck.error.plan"],
      ["safetycheck-callback", !call || PHONE.test(back), "safetycheck.error.phone"],
      ["safetycheck-wait", !wait || (Number.isInteger(minutes) && minutes >= 1 && minutes <= 60), "safetycheck.error.wait"],
    ];
    for (const [id] of checks) $(id).removeAttribute("aria-invalid");
    const bad = checks.find(([, ok]) => !ok);
    const err = $("safetycheck-error");
    if (bad) {
      err.dataset.key = bad[2];
      err.textContent = t(bad[2]);
      err.hidden = false;
      $(bad[0]).setAttribute("aria-invalid", "true");
      $(bad[0]).focus();
      return null;
    }
    err.hidden = true;
    return {
      k: "safety", where, contact: { name, phone },
      plan: call ? { kind: "call-back", phone: back } : { kind: "wait", minutes },
    };
  }

  submit() {
    const body = this._collect();
    if (body) this._send(body);
  }

  /** @param {any} body */
  _send(body) {
    const e2ee = this.session.e2ee;
    const therapist = this.session.roster.find((p) => p.role === "therapist");
    const ok = !!(e2ee && therapist && e2ee.sendApp(body, therapist.pid));
    const status = $("safetycheck-status");
    if (!ok) {
      // No key yet (or the therapist is away): kept in this page's memory only, sent when the keys are there.
      this._pending = body;
      status.dataset.key = "safetycheck.pending";
      status.textContent = t("safetycheck.pending");
      return;
    }
    this._pending = null;
    this.sent = true;
    try { sessionStorage.setItem(this._stateKey, "1"); } catch { /* storage disabled: a reload asks again */ }
    // The form forgets what was typed: nothing of it stays in this page.
    /** @type {HTMLFormElement} */ ($("safetycheck-form")).reset();
    status.textContent = "";
    $("safetycheck").hidden = true;
    delete document.body.dataset.safetycheck;
    this.session.banner("safetycheck", () => t("safetycheck.sent"), "info", 8000); // the banners are a live region
  }
}
