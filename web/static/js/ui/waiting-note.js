// A word to the waiting room (DOM): the therapist's form in the console, and the note on the client's waiting page.
// The note is not end-to-end encrypted (a waiting client holds no key yet): a set word or one sentence, carried by
// the server and never kept by either page beyond the moment (docs/protocol.md, `note`).

import { t, formatTime } from "../lib/i18n.js";
import { $ } from "./dom.js";

/** The set words, in the order the form offers them. */
export const NOTE_PRESETS = Object.freeze(["late-5", "late-10", "soon", "technical"]);
/** The longest sentence of the therapist's own (the server refuses longer ones). */
export const NOTE_MAX_CHARS = 160;

/**
 * The client's waiting page: shows the newest note (a set word in this page's language, or the therapist's own
 * sentence as plain text), announced once through the polite region it sits in.
 */
export class WaitingNoteView {
  constructor() {
    /** @type {{preset: string|null, text: string|null, at: Date}|null} */
    this.note = null;
  }

  /** @param {{preset?: string|null, text?: string|null}} m */
  show(m) {
    const preset = typeof m.preset === "string" && NOTE_PRESETS.includes(m.preset) ? m.preset : null;
    const text = typeof m.text === "string" && m.text.trim() ? m.text.slice(0, NOTE_MAX_CHARS) : null;
    if (!preset && !text) return;
    this.note = { preset, text, at: new Date() };
    this.render();
  }

  /** Gone when the person leaves the waiting room (admitted, ended). */
  clear() {
    this.note = null;
    $("waiting-note").replaceChildren();
  }

  /** Draws the note again (also after a change of language). */
  render() {
    const region = $("waiting-note");
    const n = this.note;
    if (!n) { region.replaceChildren(); return; }
    const box = document.createElement("div");
    box.className = "notice note";
    const head = document.createElement("p");
    head.className = "note-head";
    head.textContent = t("waiting.note.heading", { time: formatTime(n.at.toISOString()) });
    const body = document.createElement("p");
    body.className = "note-body";
    body.textContent = n.preset ? t(`waiting.note.${n.preset}`) : `“${n.text}”`;
    box.append(head, body);
    region.replaceChildren(box);
  }
}

/**
 * The console's "Send a word to the waiting room" form, in a modal dialog: to everyone waiting or to one person,
 * a set word or a sentence of the therapist's own.
 */
export class NotePanel {
  /**
   * @param {{note: (to: string|null, note: {preset?: string, text?: string}) => boolean}} signaling
   * @param {() => {pid: string, name: string, connected?: boolean}[]} waiting the current waiting list
   */
  constructor(signaling, waiting) {
    this.s = signaling;
    this.waiting = waiting;
    const dialog = /** @type {HTMLDialogElement} */ ($("note-dialog"));
    $("note-open").onclick = () => this.open();
    const text = /** @type {HTMLInputElement} */ ($("note-text"));
    text.maxLength = NOTE_MAX_CHARS;
    // typing a sentence chooses "your own words"
    text.addEventListener("input", () => { /** @type {HTMLInputElement} */ ($("note-preset-own")).checked = true; });
    $("note-form").addEventListener("submit", (ev) => {
      const submitter = /** @type {SubmitEvent} */ (ev).submitter;
      if (!submitter || /** @type {HTMLButtonElement} */ (submitter).value !== "send") return;
      const error = this._send();
      if (error) {
        ev.preventDefault();
        const box = $("note-error");
        box.textContent = error;
        box.hidden = false;
      }
    });
    dialog.addEventListener("close", () => {
      const opener = this.opener;
      this.opener = null;
      if (opener && opener.isConnected && !/** @type {HTMLButtonElement} */ (opener).hidden) opener.focus();
      else $("queue-title").focus();
    });
    /** @type {HTMLElement|null} */
    this.opener = null;
    this.render(0);
  }

  /** Shows the opener only while someone waits. @param {number} waitingCount */
  render(waitingCount) {
    /** @type {HTMLButtonElement} */ ($("note-open")).hidden = waitingCount === 0;
    $("note-open").textContent = t("console.note.open");
  }

  open() {
    const dialog = /** @type {HTMLDialogElement} */ ($("note-dialog"));
    this.opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const to = /** @type {HTMLSelectElement} */ ($("note-to"));
    to.replaceChildren(new Option(t("console.note.to.all"), ""));
    for (const w of this.waiting()) if (w.connected !== false) to.append(new Option(w.name, w.pid));
    for (const preset of NOTE_PRESETS) $(`note-preset-${preset}-label`).textContent = t(`console.note.${preset}`);
    /** @type {HTMLInputElement} */ ($("note-preset-late-5")).checked = true;
    /** @type {HTMLInputElement} */ ($("note-text")).value = "";
    $("note-error").hidden = true;
    $("note-status").textContent = "";
    dialog.returnValue = "";
    dialog.showModal();
    to.focus();
  }

  /** Sends the chosen note; returns an error to show instead, or null. @returns {string|null} */
  _send() {
    const to = /** @type {HTMLSelectElement} */ ($("note-to"));
    const pid = to.value || null;
    const chosen = /** @type {HTMLInputElement|null} */ (document.querySelector('input[name="note-preset"]:checked'));
    const own = !chosen || chosen.value === "own";
    const text = /** @type {HTMLInputElement} */ ($("note-text")).value.replace(/\s+/g, " ").trim();
    if (own && !text) return t("console.note.empty");
    if (pid && !this.waiting().some((w) => w.pid === pid)) return t("console.note.gone");
    const sent = this.s.note(pid, own ? { text } : { preset: chosen.value });
    if (!sent) return t("console.note.offline");
    const name = pid ? (to.selectedOptions[0] ? to.selectedOptions[0].text : "") : "";
    $("note-status").textContent = pid ? t("console.note.sent.one", { name }) : t("console.note.sent.all");
    return null;
  }
}
