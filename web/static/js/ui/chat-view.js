// The session's chat (DOM): end-to-end encrypted app messages of kind "chat" (lib/e2ee-flow.js `sendApp` and
// its "app" event; docs/security.md §10). Everyone, or privately between the therapist and one client (never client
// to client). Messages live only in this object: nothing is stored, and everything is cleared when the session
// ends or this participant leaves or is sent back. Text is shown as text (a link is never fetched); no files.

import { t, tn, formatTime } from "../lib/i18n.js";
import { $, el } from "./dom.js";

/** @typedef {import("./session.js").Session} Session */

/** Longest chat text accepted, in characters (the textarea's maxlength; the body stays well under 4 KiB). */
export const MAX_CHAT = 1000;

/** @typedef {{from: string, to: string|null, text: string, at: Date, mine: boolean, private: boolean}} ChatLine */

export class ChatView {
  /** @param {Session} session */
  constructor(session) {
    this.session = session;
    /** @type {ChatLine[]} */
    this.lines = [];
    this.unread = 0;
    /** @type {any} the E2EE flow this view listens to */
    this._flow = null;
    this._onApp = (/** @type {Event} */ ev) => this._received(/** @type {CustomEvent} */ (ev).detail);
    this._onKeys = () => this.render(); // a new signed roster: names and recipients
    const form = /** @type {HTMLFormElement} */ ($("chat-form"));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); this.send(); });
    const input = /** @type {HTMLTextAreaElement} */ ($("chat-input"));
    input.maxLength = MAX_CHAT;
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.send();
      }
    });
    $("chat").addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.preventDefault(); this.close(); }
    });
    $("btn-chat").addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    $("chat-close").addEventListener("click", () => this.close());
  }

  get isOpen() { return !$("chat").hidden; }

  /** Shows the chat button once the session runs with E2EE (chat needs the epoch keys), and follows its flow. */
  attach() {
    const flow = this.session.e2ee;
    if (flow !== this._flow) {
      if (this._flow) {
        this._flow.removeEventListener("app", this._onApp);
        this._flow.removeEventListener("change", this._onKeys);
      }
      this._flow = flow;
      if (flow) {
        flow.addEventListener("app", this._onApp);
        flow.addEventListener("change", this._onKeys);
      }
    }
    $("btn-chat").hidden = !flow;
    this.render();
  }

  open() {
    $("chat").hidden = false;
    $("btn-chat").setAttribute("aria-expanded", "true");
    document.body.dataset.chat = "open";
    this.unread = 0;
    this.render();
    $("chat-input").focus();
    const log = $("chat-log");
    log.scrollTop = log.scrollHeight;
  }

  close() {
    if (!this.isOpen) return;
    $("chat").hidden = true;
    $("btn-chat").setAttribute("aria-expanded", "false");
    delete document.body.dataset.chat;
    $("btn-chat").focus();
  }

  /** The session ended, or this participant left or was sent back: every message is gone from the page. */
  clear() {
    this.lines = [];
    this.unread = 0;
    $("chat-log").replaceChildren();
    $("chat-live").textContent = "";
    /** @type {HTMLTextAreaElement} */ ($("chat-input")).value = "";
    $("chat").hidden = true;
    $("btn-chat").setAttribute("aria-expanded", "false");
    delete document.body.dataset.chat;
    this.render();
  }

  /** The name of `pid` as the therapist signed it (never the server's roster). @param {string} pid */
  _name(pid) {
    if (pid === this.session.pid) return t("chat.you");
    const flow = this.session.e2ee;
    const signed = flow ? flow.signedName(pid) : null;
    if (signed === null) return t("e2ee.name.unsigned");
    if (signed) return signed;
    return this.session.roster.find((p) => p.pid === pid)?.role === "therapist" ? t("chat.therapist") : "?";
  }

  /** The recipients this role may choose: everyone, and privately the therapist (client) or each client (therapist). */
  _recipients() {
    const s = this.session;
    /** @type {Array<{value: string, label: string}>} */
    const out = [{ value: "", label: t("chat.to.everyone") }];
    if (s.isTherapist) {
      for (const p of s.roster) {
        if (p.role !== "client" || !s.e2ee || s.e2ee.signedName(p.pid) === null) continue;
        out.push({ value: p.pid, label: t("chat.to.client", { name: this._name(p.pid) }) });
      }
    } else {
      const th = s.roster.find((p) => p.role === "therapist");
      if (th) out.push({ value: th.pid, label: t("chat.to.therapist") });
    }
    return out;
  }

  send() {
    const input = /** @type {HTMLTextAreaElement} */ ($("chat-input"));
    const status = $("chat-status");
    const text = input.value.trim();
    if (!text) return;
    const flow = this.session.e2ee;
    const to = /** @type {HTMLSelectElement} */ ($("chat-to")).value || null;
    let sent;
    try {
      sent = !!flow && flow.sendApp({ k: "chat", text: text.slice(0, MAX_CHAT) }, to);
    } catch {
      sent = false;
    }
    if (!sent) {
      status.dataset.key = "chat.nokey";
      status.textContent = t("chat.nokey");
      return;
    }
    status.textContent = "";
    delete status.dataset.key;
    input.value = "";
    this.lines.push({ from: /** @type {string} */ (this.session.pid), to, text, at: new Date(), mine: true, private: to !== null });
    this._appendLine(this.lines[this.lines.length - 1]);
    this.render();
    input.focus();
  }

  /** A verified app message: only kind "chat" with a text is shown; other kinds are left to their views.
   * @param {{from: string, body: any, private: boolean}} msg */
  _received(msg) {
    if (!msg.body || msg.body.k !== "chat" || typeof msg.body.text !== "string") return;
    if (this.session.status !== "admitted") return;
    const text = msg.body.text.slice(0, MAX_CHAT);
    const line = { from: msg.from, to: msg.private ? this.session.pid : null, text, at: new Date(), mine: false, private: msg.private };
    this.lines.push(line);
    this._appendLine(line);
    if (!this.isOpen || document.hidden) this.unread++;
    const name = this._name(msg.from);
    // The polite live region speaks incoming messages only (never what this person typed).
    const live = $("chat-live");
    live.textContent = "";
    setTimeout(() => {
      live.textContent = msg.private ? t("chat.announce.private", { name, text }) : t("chat.announce", { name, text });
    }, 50);
    this.render();
  }

  /** @param {ChatLine} line */
  _appendLine(line) {
    const log = $("chat-log");
    const li = el("li", `chat-msg${line.mine ? " mine" : ""}${line.private ? " private" : ""}`);
    li.dataset.from = line.from;
    if (line.private) li.dataset.private = "1";
    const meta = el("p", "chat-meta");
    const who = el("span", "chat-who", this._name(line.from));
    who.dataset.pid = line.from;
    meta.append(who);
    if (line.private) meta.append(el("span", "chat-private", this._privateLabel(line)));
    const time = /** @type {HTMLTimeElement} */ (el("time", "chat-time", formatTime(line.at)));
    time.dateTime = line.at.toISOString();
    meta.append(time);
    // textContent only: a link stays text and is never fetched or previewed
    li.append(meta, el("p", "chat-text", line.text));
    log.append(li);
    log.scrollTop = log.scrollHeight;
  }

  /** @param {ChatLine} line */
  _privateLabel(line) {
    if (!line.mine) return t("chat.private.to-you");
    if (this.session.isTherapist && line.to) return t("chat.private.to", { name: this._name(line.to) });
    return t("chat.private.to-therapist");
  }

  /** Everything again in the new language (the log is rebuilt from memory). */
  relabel() {
    $("chat-log").replaceChildren();
    for (const line of this.lines) this._appendLine(line);
    this.render();
  }

  /** Button, badge, recipients and note, in the current language. */
  render() {
    const badge = $("chat-badge");
    badge.hidden = this.unread === 0;
    badge.textContent = this.unread ? String(this.unread) : "";
    const button = $("btn-chat");
    button.setAttribute("aria-label", this.unread ? `${t("chat.open")} – ${tn("chat.unread", this.unread)}` : t("chat.open"));
    $("chat-note").textContent = this.session.isTherapist ? t("chat.note.therapist") : t("chat.note.client");
    $("chat-empty").hidden = this.lines.length > 0;
    const select = /** @type {HTMLSelectElement} */ ($("chat-to"));
    const chosen = select.value;
    const options = this._recipients();
    select.replaceChildren(...options.map((o) => {
      const opt = /** @type {HTMLOptionElement} */ (el("option", "", o.label));
      opt.value = o.value;
      return opt;
    }));
    select.value = options.some((o) => o.value === chosen) ? chosen : "";
    const status = $("chat-status");
    if (status.dataset.key) status.textContent = t(status.dataset.key);
    for (const li of $("chat-log").querySelectorAll(".chat-who")) {
      const pid = /** @type {HTMLElement} */ (li).dataset.pid;
      if (pid) li.textContent = this._name(pid);
    }
  }
}
