// The session as the server describes it (no DOM): our pid and role, the room, the roster, the therapist's
// presence, our place in the queue and the end time. It mirrors the signaling messages; what the server says is
// a hint for display, never authority over keys or membership (the E2EE flow decides those).
//
// Events (CustomEvent): `roster` {participants, before} after the roster changed, `before` being the pids of the
// previous roster.

import { store } from "./store.js";

/** @typedef {import("./protocol.js").Signaling} Signaling */
/** @typedef {import("./protocol.js").RosterEntry} RosterEntry */

export class SessionState extends EventTarget {
  /**
   * @param {Signaling} signaling
   * @param {{role: string, room: any}} options
   */
  constructor(signaling, options) {
    super();
    this.role = options.role;
    this.room = options.room;
    /** @type {string|null} */
    this.pid = null;
    /** "connecting" | "waiting" | "admitted" | "ended" (set by the page that drives the session) */
    this.status = "connecting";
    /** @type {RosterEntry[]} */
    this.roster = [];
    this.therapist = "absent";
    /** @type {number|undefined} place in the waiting room */
    this.position = undefined;
    /** @type {Date|null} */
    this.endsAt = this.room && this.room.ends_at ? new Date(this.room.ends_at) : null;
    /** @param {string} type @param {(m: any) => void} fn */
    const on = (type, fn) => signaling.addEventListener(type, (ev) => fn(/** @type {CustomEvent} */ (ev).detail));
    on("credential", (d) => { store.resume = d.credential; });
    on("welcome", (m) => this._onWelcome(m));
    on("waiting", (m) => {
      if (m.therapist) this.therapist = m.therapist;
      this._position(m.position);
    });
    on("roster", (m) => this._onRoster(m.participants || []));
    on("therapist", (m) => { this.therapist = m.status; });
    on("time", (m) => {
      if (m.ends_at) this.endsAt = new Date(m.ends_at);
      if (this.room) this.room.ends_at = m.ends_at;
    });
    on("warning", (m) => { if (m.ends_at) this.endsAt = new Date(m.ends_at); });
  }

  get isTherapist() { return this.role === "therapist"; }

  /** @param {any} m */
  _onWelcome(m) {
    this.pid = m.pid;
    this.role = m.role || this.role;
    if (m.room) {
      this.room = { ...this.room, ...m.room };
      if (m.room.ends_at) this.endsAt = new Date(m.room.ends_at);
    }
    this.therapist = m.therapist || this.therapist;
    this._position(m.position);
  }

  /** @param {unknown} position */
  _position(position) {
    if (typeof position === "number") this.position = position;
  }

  /** @param {RosterEntry[]} participants */
  _onRoster(participants) {
    const before = new Set(this.roster.map((p) => p.pid));
    this.roster = participants;
    this.dispatchEvent(new CustomEvent("roster", { detail: { participants, before } }));
  }
}
