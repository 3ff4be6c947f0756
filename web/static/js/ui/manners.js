// Group manners and the therapist's side of the safety check, carried by end-to-end encrypted app messages
// (lib/e2ee-flow.js sendApp / "app" event): raise hand (members, to everyone), mute and ask to unmute (the
// therapist, privately to one member), spotlight (the therapist, to everyone), safety answers (a client,
// privately to the therapist). A message the therapist alone may send counts only when its authenticated sender is
// the therapist of the signed roster (e2ee keys), never because the server says so. Nothing here is stored.

import { t } from "../lib/i18n.js";
import { announce } from "./dom.js";
import { tileSlot } from "./tiles.js";
import { parseAnswers } from "./safety-check.js";

/** @typedef {ReturnType<typeof parseAnswers>} Answers */

export class Manners {
  /** @param {import("./session.js").Session} session */
  constructor(session) {
    this.session = session;
    /** @type {Set<string>} pids whose hand is raised */
    this.hands = new Set();
    /** @type {string|null} the pid in the spotlight ("" never) */
    this.spotlight = null;
    /** Therapist: the safety answers of each client, for this session only. @type {Map<string, NonNullable<Answers>>} */
    this.safety = new Map();
    /** @type {EventTarget|null} the e2ee flow whose events are wired */
    this._wired = null;
  }

  /** Family and group rooms: hands, mute, ask to unmute and spotlight. */
  get groupRoom() {
    const type = this.session.room && this.session.room.type;
    return type === "family" || type === "group";
  }

  /** The therapist's pid as the keys prove it (signed roster / grant), or null. */
  therapistPid() {
    if (this.session.isTherapist) return this.session.pid;
    const e2ee = this.session.e2ee;
    return (e2ee && e2ee.keys && e2ee.keys.therapistPid) || null;
  }

  /** Wires the page's e2ee flow (again after a new one) and shows the hand button to members. */
  attach() {
    const e2ee = this.session.e2ee;
    if (e2ee && this._wired !== e2ee) {
      this._wired = e2ee;
      e2ee.addEventListener("app", (/** @type {Event} */ ev) => this.onApp(/** @type {CustomEvent} */ (ev).detail));
      e2ee.addEventListener("change", () => this.render());
    }
    const hand = /** @type {HTMLButtonElement} */ (document.getElementById("btn-hand"));
    if (hand) {
      hand.hidden = !(this.groupRoom && !this.session.isTherapist && e2ee && typeof e2ee.sendApp === "function");
      hand.onclick = () => this.raiseHand(!this.hands.has(String(this.session.pid)));
    }
    this.render();
  }

  /** @param {{from: string, body: any, private: boolean}} d */
  onApp(d) {
    if (!d || typeof d.from !== "string" || !d.body || typeof d.body !== "object") return;
    const { from, body } = d;
    const fromTherapist = from === this.therapistPid();
    const who = this.session.roster.find((p) => p.pid === from);
    switch (body.k) {
      case "safety": {
        // Only the therapist's console takes answers, and only privately from a client of the roster.
        if (!this.session.isTherapist || !d.private || !who || who.role !== "client") return;
        const answers = parseAnswers(body);
        if (!answers) return;
        this.safety.set(from, answers);
        announce(t("console.safety.arrived", { name: who.name }));
        break;
      }
      case "hand": {
        if (!this.groupRoom || d.private || !who || who.role !== "client" || typeof body.up !== "boolean") return;
        if (body.up) {
          this.hands.add(from);
          if (this.session.isTherapist) announce(t("session.hand.raised.named", { name: this._nameOf(from) }));
        } else {
          this.hands.delete(from);
        }
        break;
      }
      case "mute": {
        if (!this.groupRoom || !fromTherapist || !d.private || this.session.isTherapist) return;
        this.session.setMicrophone(false);
        this.session.banner("manners-mute", () => t("session.muted-by-therapist"), "info", 0);
        break;
      }
      case "unmute-ask": {
        if (!this.groupRoom || !fromTherapist || !d.private || this.session.isTherapist) return;
        this.session.banner("manners-unmute", () => t("session.unmute-ask"), "info", 0, {
          key: "session.unmute-ask.action",
          run: () => { this.session.setMicrophone(true); this.session.removeBanner("manners-unmute"); },
        });
        break;
      }
      case "spotlight": {
        if (!this.groupRoom || !fromTherapist || d.private) return;
        const pid = typeof body.pid === "string" && body.pid ? body.pid : null;
        this.spotlight = pid;
        if (pid) announce(t("session.spotlight.named", { name: this._nameOf(pid) }));
        break;
      }
      default:
        return; // kinds this page does not know are ignored
    }
    this.render();
    this._console();
  }

  _console() {
    if (this.session.console) this.session.console.onRoster(this.session.roster);
  }

  /** The name this page shows for a pid: the signed one when there is one. @param {string} pid */
  _nameOf(pid) {
    if (pid === this.session.pid) return this.session.name || t("session.you");
    const e2ee = this.session.e2ee;
    const signed = e2ee ? e2ee.signedName(pid) : null;
    if (signed) return signed;
    const p = this.session.roster.find((x) => x.pid === pid);
    return p ? p.name : "?";
  }

  /** A member raises or lowers its hand (to everyone). @param {boolean} up */
  raiseHand(up) {
    const e2ee = this.session.e2ee;
    const me = this.session.pid;
    if (!e2ee || !me || !e2ee.sendApp({ k: "hand", up })) return false;
    if (up) this.hands.add(me); else this.hands.delete(me);
    this.render();
    return true;
  }

  /** Therapist: mute one member (its own page mutes its microphone). @param {string} pid */
  mute(pid) {
    return !!(this.session.e2ee && this.session.e2ee.sendApp({ k: "mute" }, pid));
  }

  /** Therapist: ask one member to unmute. @param {string} pid */
  askUnmute(pid) {
    return !!(this.session.e2ee && this.session.e2ee.sendApp({ k: "unmute-ask" }, pid));
  }

  /** Therapist: one speaker large on every page (null: nobody). @param {string|null} pid */
  setSpotlight(pid) {
    if (!this.session.e2ee || !this.session.e2ee.sendApp({ k: "spotlight", pid })) return false;
    this.spotlight = pid;
    this.render();
    this._console();
    return true;
  }

  /** Forgets what belongs to people no longer in the roster. @param {any[]} participants */
  onRoster(participants) {
    const now = new Set(participants.map((p) => p.pid));
    for (const pid of [...this.hands]) if (!now.has(pid)) this.hands.delete(pid);
    for (const pid of [...this.safety.keys()]) if (!now.has(pid)) this.safety.delete(pid);
    if (this.spotlight && !now.has(this.spotlight)) this.spotlight = null;
    this.render();
  }

  /** Tiles: hand badges, the spotlight, and (members) the signed roster's order. */
  render() {
    const tiles = this.session.tiles;
    const box = document.getElementById("tiles");
    if (!box) return;
    const me = this.session.pid;
    for (const [key, tile] of tiles.tiles) {
      const pid = key === "self" ? me : key;
      const up = !!pid && this.hands.has(pid);
      let badge = /** @type {HTMLElement|null} */ (tile.querySelector(".hand-badge"));
      if (up && !badge) {
        badge = document.createElement("span");
        badge.className = "hand-badge";
        tileSlot(tile, "bottom").prepend(badge);
      }
      if (badge) {
        badge.hidden = !up;
        // the hand, then its words (a narrow tile shows only the hand; the words stay for screen readers)
        const label = t("session.hand.raised");
        if (badge.dataset.label !== label) {
          const hand = document.createElement("span");
          hand.setAttribute("aria-hidden", "true");
          hand.textContent = "✋ ";
          const words = document.createElement("span");
          words.className = "hand-words";
          words.textContent = label;
          badge.replaceChildren(hand, words);
          badge.dataset.label = label;
        }
      }
      tile.classList.toggle("spotlight", !!pid && pid === this.spotlight);
    }
    box.classList.toggle("spotlit", !!this.spotlight && [...tiles.tiles.values()].some((x) => x.classList.contains("spotlight")));
    // Members: the tiles in the order of the therapist's signed roster (the server's order is only a hint).
    const e2ee = this.session.e2ee;
    const signed = !this.session.isTherapist && e2ee && e2ee.keys && e2ee.keys.roster instanceof Map
      ? [...e2ee.keys.roster.keys()] : null;
    if (signed) {
      for (const pid of signed) { const tile = tiles.tiles.get(pid); if (tile && pid !== me) box.append(tile); }
      const self = tiles.tiles.get("self");
      if (self) box.append(self);
    }
    const hand = document.getElementById("btn-hand");
    if (hand && me) {
      const up = this.hands.has(me);
      hand.textContent = t(up ? "session.hand.lower" : "session.hand.raise");
      hand.setAttribute("aria-pressed", String(up));
    }
  }

  /** The session is over: nothing of it stays, in memory or in the (hidden) console. */
  stop() {
    this.hands.clear();
    this.safety.clear();
    this.spotlight = null;
    document.querySelectorAll(".safety-answers, .hand-note, .hand-badge").forEach((n) => n.remove());
  }
}
