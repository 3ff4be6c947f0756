// Who came and who went (DOM): "<name> joined", "<name> left", "<name> is back" as a short polite notice in the
// session's banners (a live region: said once), with the names of the therapist-signed roster when the session is
// end-to-end encrypted (the server's roster only says that someone came; a name it sends is a hint, never shown as
// a person's name in a notice). The therapist's own comings and goings have their own banners (ui/session.js).

import { t } from "../lib/i18n.js";

/** @typedef {import("./session.js").Session} Session */

const NOTICE_MS = 8000;

export class Presence {
  /** @param {Session} session */
  constructor(session) {
    this.session = session;
    /** pid -> {name, role} of everyone seen in the session (the name signed, when known). @type {Map<string, {name: string|null, role: string}>} */
    this.known = new Map();
    /** The pids in the session now. @type {Set<string>} */
    this.present = new Set();
    /** Arrivals not told yet: their signed name is not known yet. @type {Set<string>} */
    this.pending = new Set();
    /** Names of people who left (told "is back" when they come again). @type {Set<string>} */
    this.gone = new Set();
    this.first = true;
  }

  /**
   * The name to tell: from the therapist-signed roster once the session has one; without E2EE, the roster's.
   * @param {string} pid @param {string} fallback
   * @returns {string|null} null: not known yet (or not in the signed roster)
   */
  nameOf(pid, fallback) {
    const flow = this.session.e2ee;
    if (flow && typeof flow.signedName === "function") return flow.epoch === null ? null : flow.signedName(pid);
    return fallback || null;
  }

  /** The server's roster changed. @param {{pid: string, name?: string, role?: string}[]} others everyone but me */
  onRoster(others) {
    const now = new Set(others.map((p) => p.pid));
    for (const p of others) {
      const name = this.nameOf(p.pid, String(p.name ?? ""));
      const before = this.known.get(p.pid);
      this.known.set(p.pid, { name: name ?? (before ? before.name : null), role: String(p.role ?? "") });
      if (!this.present.has(p.pid) && !this.first) this.pending.add(p.pid);
    }
    for (const pid of this.present) {
      if (now.has(pid)) continue;
      this.pending.delete(pid);
      const who = this.known.get(pid);
      if (who && who.name && who.role !== "therapist") {
        this.gone.add(who.name);
        this.tell(pid, "left", who.name);
      }
    }
    this.present = now;
    this.first = false;
    this.flush();
  }

  /** Signed names may have arrived (a new epoch): tell the arrivals waiting for theirs, remember the others. */
  flush() {
    for (const pid of this.present) {
      const who = this.known.get(pid);
      const name = this.nameOf(pid, who && who.name ? who.name : "");
      if (who && name) who.name = name;
    }
    for (const pid of [...this.pending]) {
      const who = this.known.get(pid);
      const name = who ? this.nameOf(pid, who.name || "") : null;
      if (!who || !name) continue;
      this.pending.delete(pid);
      if (who.role === "therapist") continue;
      const back = this.gone.delete(name);
      this.tell(pid, back ? "back" : "joined", name);
    }
  }

  /** @param {string} pid @param {"joined"|"left"|"back"} what @param {string} name */
  tell(pid, what, name) {
    const session = this.session;
    if (session.status !== "admitted") return;
    const key = `${session.isTherapist ? "console" : "session"}.${what}`;
    // One notice at a time (the newest replaces the one before): the banners stay one line, the controls in reach.
    const el = session.banner("presence", () => t(key, { name }), "info", NOTICE_MS);
    el.dataset.presence = what;
    el.dataset.pid = pid;
  }

  /** Back in the waiting room or ended: nobody is present for this page any more. */
  reset() {
    this.present.clear();
    this.pending.clear();
    this.first = true;
  }
}
