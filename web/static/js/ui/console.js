// The therapist's extras (DOM): waiting list, admitted participants, time controls, lock state, arrival cue.

import { t, formatTime } from "../lib/i18n.js";
import { $, announce, el, button } from "./dom.js";
import { renderInvitePanel } from "./invite-panel.js";
import { NotePanel } from "./waiting-note.js";

/**
 * A short, soft two-note chime made with an oscillator (no audio file).
 * @param {AudioContext|null} ctx
 */
function chime(ctx) {
  if (!ctx) return;
  try {
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
    const now = ctx.currentTime;
    for (const [i, freq] of [[0, 660], [1, 880]]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = freq;
      const start = now + i * 0.18;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.08, start + 0.03);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start);
      osc.stop(start + 0.4);
    }
  } catch { /* no audio output: the title and the list still show the arrival */ }
}

/**
 * Names a person's control by what it does, so the focus can find it again after the list is rebuilt.
 * @param {string} action @param {HTMLButtonElement} b
 */
function tagged(action, b) {
  b.dataset.action = action;
  return b;
}

export class Console {
  /** @param {import("./session.js").Session} session */
  constructor(session) {
    this.session = session;
    this.s = session.signaling;
    /** @type {any[]} */
    this.queue = [];
    /** @type {Set<string>} */
    this.seen = new Set();
    /** @type {Map<string, string>} the names the server listed admitted clients under (shown while unlisted) */
    this._knownNames = new Map();
    this.firstQueue = true;
    this.locked = false;
    /** @type {AudioContext|null} */
    this.audio = null;
    try { this.audio = new AudioContext(); } catch { this.audio = null; }
    /** @type {[string, EventListener][]} */
    this.listeners = [];
    /**
     * Whose control had the focus when a list was rebuilt (or Admit was pressed): the focus goes back to that
     * person's same control, or their next one, also once they moved from the waiting list to the participants.
     * @type {{pid: string, action: string, index: number, pos: number, list: string, until: number}|null}
     */
    this._focusFor = null;
    /** Where the focus was put while that person had no entry (moved away from it again by the next rebuild). */
    /** @type {HTMLElement|null} */
    this._focusFallback = null;
    this._on("queue", (m) => this.onQueue(m.waiting || []));
    this._on("error", (m) => this.onError(m));
    this._on("welcome", () => this.onLocked(false));
    this._wireButtons();
    this.notes = new NotePanel(this.s, () => this.queue);
  }

  /** @param {string} type @param {(m: any) => void} fn */
  _on(type, fn) {
    /** @type {EventListener} */
    const l = (ev) => fn(/** @type {CustomEvent} */ (ev).detail);
    this.s.addEventListener(type, l);
    this.listeners.push([type, l]);
  }

  /** The therapist's E2EE flow (lib/e2ee-flow.js TherapistE2ee), or null without E2EE. @returns {any} */
  get e2ee() {
    return this.session.e2ee;
  }

  /**
   * Admits one client; with E2EE the admission carries the signed grant (no grant: not admitted).
   * @param {string} pid
   */
  async admit(pid) {
    const e2ee = this.e2ee;
    if (!e2ee) { this.s.admit(pid, null); return; }
    const grant = await e2ee.grantFor(pid);
    if (grant) this.s.admit(pid, grant);
  }

  _wireButtons() {
    $("admit-all").onclick = async () => {
      if (!this.e2ee) { this.s.admitAll(); return; }
      // admit-all carries no grants: admit one by one, oldest first (the server enforces the seats).
      // "Admit all" never lets in a new person with a granted seat: that takes its own click.
      for (const w of this.queue) if (w.connected !== false && this._introUsable(w.pid) && !this._newPerson(w.pid)) await this.admit(w.pid);
    };
    $("extend-5").onclick = () => this.s.extend(5);
    $("extend-10").onclick = () => this.s.extend(10);
    const confirm = $("end-confirm");
    const endBtn = /** @type {HTMLButtonElement} */ ($("end-session"));
    endBtn.setAttribute("aria-expanded", "false");
    endBtn.setAttribute("aria-controls", "end-confirm");
    endBtn.onclick = () => {
      confirm.hidden = false;
      endBtn.setAttribute("aria-expanded", "true");
      $("end-confirm-yes").focus();
    };
    $("end-confirm-no").onclick = () => {
      confirm.hidden = true;
      endBtn.setAttribute("aria-expanded", "false");
      endBtn.focus();
    };
    $("end-confirm-yes").onclick = () => { this.s.end(); };
    const type = this.session.room ? this.session.room.type : "individual";
    $("admit-all").hidden = !(type === "couple" || type === "family" || type === "group");
    // Browsers allow sound only after a gesture: unlock the chime on the first one.
    const unlock = () => { if (this.audio && this.audio.state === "suspended") this.audio.resume().catch(() => {}); };
    document.addEventListener("pointerdown", unlock, { once: true });
    document.addEventListener("keydown", unlock, { once: true });
  }

  show() {
    const e2ee = this.e2ee;
    if (e2ee && !this._e2eeWired) {
      this._e2eeWired = true;
      e2ee.addEventListener("change", () => { this.renderQueue(); this.onRoster(this.session.roster); });
    }
    renderInvitePanel(this.session);
    this.renderQueue();
    this.renderLock();
    this.onRoster(this.session.roster);
  }

  /** The console's texts again, in the language just chosen. */
  relabel() {
    this.renderQueue();
    this.renderLock();
    this.onRoster(this.session.roster);
  }

  /** @param {any[]} waiting */
  onQueue(waiting) {
    const arrivals = waiting.filter((w) => !this.seen.has(w.pid));
    for (const w of waiting) this.seen.add(w.pid);
    this.queue = waiting;
    this.renderQueue();
    if (arrivals.length && !this.firstQueue) {
      chime(this.audio);
      announce(arrivals.map((w) => t("console.arrived", { name: w.name })).join(" "));
    } else if (arrivals.length) {
      chime(this.audio);
    }
    this.firstQueue = false;
  }

  renderQueue() {
    const list = $("queue-list");
    this._captureFocus(list);
    list.replaceChildren();
    for (const w of this.queue) {
      const li = el("li");
      li.dataset.pid = w.pid;
      li.append(el("span", "who", w.name));
      const meta = el("span", "meta");
      if (w.since) meta.append(el("span", "", t("console.waiting.since", { time: formatTime(w.since) })));
      if (w.connected === false) meta.append(el("span", "offline", t("console.waiting.offline")));
      li.append(meta);
      if (w.check === "direct" || w.check === "relay" || w.check === "blocked") {
        const hint = el("span", `check-note ${w.check === "blocked" ? "warn" : "quiet"}`, t(`console.check.${w.check}`));
        hint.dataset.check = w.check;
        hint.title = t("console.check.hint");
        li.append(hint);
      }
      const intro = this._introNote(w.pid);
      if (intro) {
        const note = el("span", `intro-note ${intro.kind}`, intro.text);
        note.dataset.intro = intro.status;
        li.append(note);
      }
      const row = el("div", "button-row");
      const admit = button(t("console.admit.short"), t("console.admit", { name: w.name }), "primary", () => {
        // Admitted, the person leaves this list for the participants: the focus follows them there.
        this._rememberFocus(admit, 5000);
        admit.disabled = true;
        this.admit(w.pid).catch((e) => this.onError({ code: "e2ee", message: String(e && e.message) }));
        setTimeout(() => { admit.disabled = false; }, 1500);
      });
      admit.disabled = this.locked || !this._introUsable(w.pid);
      admit.dataset.action = "admit";
      row.append(admit);
      row.append(tagged("decline", button(t("console.decline.short"), t("console.decline", { name: w.name }), "secondary",
        () => this.ask("decline", w))));
      li.append(row);
      list.append(li);
    }
    const n = this.queue.length;
    $("queue-empty").hidden = n > 0;
    $("queue-count").textContent = n ? String(n) : "";
    /** @type {HTMLButtonElement} */ ($("admit-all")).disabled = n === 0 || this.locked;
    if (this.notes) this.notes.render(n);
    document.title = n ? t("console.title.waiting", { n }) : t("console.title");
    this._restoreFocus();
  }

  /** @param {any[]} participants */
  onRoster(participants) {
    const list = $("people-list");
    this._captureFocus(list);
    list.replaceChildren();
    const clients = this._signedOrder(participants.filter((p) => p.role === "client"));
    for (const p of clients) {
      const li = el("li");
      li.dataset.pid = p.pid;
      li.append(el("span", "who", p.name));
      if (p.connected === false) li.append(el("span", "meta", t("console.offline")));
      if (this.e2ee) li.append(this._sasRow(p));
      const manners = this.session.manners;
      if (manners.hands.has(p.pid)) li.append(el("span", "hand-note", `✋ ${t("console.hand")}`));
      const answers = this._safetyAnswers(p);
      if (answers) li.append(answers);
      const row = el("div", "button-row");
      if (manners.groupRoom && this.e2ee && typeof this.e2ee.sendApp === "function") {
        row.append(tagged("mute", button(t("console.mute.short"), t("console.mute", { name: p.name }), "secondary",
          () => manners.mute(p.pid))));
        row.append(tagged("unmute-ask", button(t("console.unmute-ask.short"), t("console.unmute-ask", { name: p.name }),
          "secondary", () => manners.askUnmute(p.pid))));
        const lit = manners.spotlight === p.pid;
        const spot = button(lit ? t("console.spotlight.off") : t("console.spotlight.short"),
          lit ? t("console.spotlight.off") : t("console.spotlight", { name: p.name }), "secondary",
          () => manners.setSpotlight(lit ? null : p.pid));
        spot.setAttribute("aria-pressed", String(lit));
        row.append(tagged("spotlight", spot));
      }
      row.append(tagged("send-back", button(t("console.send-back.short"), t("console.send-back", { name: p.name }), "secondary",
        () => { this.s.sendToWaiting(p.pid); this._removedByMe(p.pid); })));
      row.append(tagged("remove", button(t("console.remove.short"), t("console.remove", { name: p.name }), "secondary",
        () => this.ask("remove", p))));
      if (this.e2ee) {
        // Screen sharing for this client: off by default, a signed permission (ui/share-view.js).
        const share = this.session.shareView;
        const on = share.isAllowed(p.pid);
        const b = button(t(on ? "console.share.revoke" : "console.share.allow"),
          t(on ? "console.share.revoke.named" : "console.share.allow.named", { name: p.name }), "secondary",
          () => share.toggle(p.pid));
        b.dataset.share = p.pid;
        b.dataset.allowed = String(on);
        row.append(tagged("share", b));
      }
      li.append(row);
      list.append(li);
    }
    // Admitted clients a restarted server does not list yet still hold the session key within the resume grace
    // (lib/e2ee-flow.js): shown, so the therapist can take them out of the key; the server cannot hide them.
    for (const p of clients) this._knownNames.set(p.pid, p.name);
    const unlisted = this._unlisted(new Set(clients.map((p) => p.pid)));
    for (const pid of unlisted) {
      const name = this._knownNames.get(pid) || t("console.unlisted.unknown");
      const li = el("li");
      li.dataset.pid = pid;
      li.dataset.unlisted = "true";
      li.append(el("span", "who", name), el("span", "meta", t("console.unlisted")));
      const row = el("div", "button-row");
      row.append(tagged("remove-key", button(t("console.remove.short"), t("console.unlisted.remove", { name }), "secondary",
        () => this._removedByMe(pid))));
      li.append(row);
      list.append(li);
    }
    $("people-empty").hidden = clients.length + unlisted.length > 0;
    $("people-sas-hint").hidden = !this.e2ee || clients.length === 0;
    const seats = this.session.room && this.session.room.seats;
    $("seats").textContent = seats ? t("console.seats", { admitted: clients.length, seats }) : "";
    this._restoreFocus();
  }

  /**
   * Notes whose control has the focus.
   * @param {HTMLElement} control a button in a person's entry
   * @param {number} [keep] ms to keep following that person once their entry is gone (Admit: into the participants)
   */
  _rememberFocus(control, keep = 0) {
    const li = /** @type {HTMLElement|null} */ (control.closest("li[data-pid]"));
    const list = li ? /** @type {HTMLElement|null} */ (li.parentElement) : null;
    if (!li || !list) return;
    this._focusFor = {
      pid: /** @type {string} */ (li.dataset.pid), action: control.dataset.action || "",
      index: [...li.querySelectorAll("button")].indexOf(/** @type {HTMLButtonElement} */ (control)),
      pos: [...list.children].indexOf(li), list: list.id, until: Date.now() + keep,
    };
  }

  /** Before a list is rebuilt: the focused control in it, if any. @param {HTMLElement} list */
  _captureFocus(list) {
    const active = document.activeElement;
    if (active instanceof HTMLElement && list.contains(active)) {
      const keep = this._focusFor && this._focusFor.until > Date.now() ? this._focusFor.until - Date.now() : 0;
      this._rememberFocus(active, keep);
    }
  }

  /**
   * After a rebuild: the focus back on the same person's same control, or their next one (after "Mark verified":
   * "Send back"); once admitted, on their first control among the participants. When their entry is gone, the
   * neighbour's first control, else the list's heading; a later rebuild still moves it to them for a few seconds.
   * The focus is never taken from somewhere else the person moved it to.
   */
  _restoreFocus() {
    const want = this._focusFor;
    if (!want) return;
    const active = document.activeElement;
    const lost = !active || active === document.body || !active.isConnected || active === this._focusFallback;
    if (!lost) {
      this._focusFor = null;
      return;
    }
    const usable = (/** @type {Element|null|undefined} */ li) =>
      li ? [...li.querySelectorAll("button")].filter((b) => !b.disabled) : [];
    const own = document.querySelector(`#${want.list} > li[data-pid="${CSS.escape(want.pid)}"]`);
    if (own) {
      const buttons = [...own.querySelectorAll("button")];
      const same = buttons.find((b) => b.dataset.action === want.action && !b.disabled);
      const next = buttons.slice(Math.max(0, want.index)).find((b) => !b.disabled) || usable(own).pop();
      const target = same || next;
      if (target) { this._focus(target, null); return; }
    }
    const moved = document.querySelector(`#people-list > li[data-pid="${CSS.escape(want.pid)}"]`);
    if (moved && want.list !== "people-list" && usable(moved).length) { this._focus(usable(moved)[0], null); return; }
    const list = document.getElementById(want.list);
    const others = list ? [...list.children] : [];
    const neighbour = others[Math.min(want.pos, others.length - 1)];
    const fallback = usable(neighbour)[0] || $(want.list === "queue-list" ? "queue-title" : "people-title");
    this._focus(fallback, want.until > Date.now() ? want : null);
  }

  /**
   * @param {HTMLElement} target
   * @param {{pid: string, action: string, index: number, pos: number, list: string, until: number}|null} still
   *        whom the focus should still go to when their entry comes back (null: done)
   */
  _focus(target, still) {
    if (target.tagName === "H3") target.tabIndex = -1;
    target.focus();
    this._focusFor = still;
    this._focusFallback = still ? target : null;
  }

  /**
   * The client's safety answers beside its name (this session only; never stored), or "not answered yet" when
   * the room asks for them.
   * @param {any} p roster entry
   * @returns {HTMLElement|null}
   */
  _safetyAnswers(p) {
    const a = this.session.manners.safety.get(p.pid);
    const check = this.session.room && this.session.room.safety ? this.session.room.safety.check : "off";
    if (!a && (!this.e2ee || check === "off" || check === undefined)) return null;
    const box = el("div", a ? "safety-answers" : "safety-answers missing");
    box.dataset.safetyFor = p.pid;
    box.append(el("span", "label", t("console.safety.label")));
    if (!a) {
      box.append(el("span", "", t("console.safety.missing")));
      return box;
    }
    const dl = el("dl");
    const plan = a.plan.kind === "call-back"
      ? t("console.safety.plan.call-back", { phone: a.plan.phone })
      : t("console.safety.plan.wait", { minutes: a.plan.minutes });
    for (const [key, value] of [["console.safety.where", a.where],
      ["console.safety.contact", `${a.contact.name}, ${a.contact.phone}`], ["console.safety.plan", plan]]) {
      dl.append(el("dt", "", t(key)), el("dd", "", value));
    }
    box.append(dl);
    return box;
  }

  /**
   * The clients in the order of the membership this console signed (the newest epoch's roster), those not in it yet
   * after them in the server's order (a hint).
   * @param {any[]} clients @returns {any[]}
   */
  _signedOrder(clients) {
    const keys = this.e2ee && this.e2ee.keys;
    const epoch = keys && (keys.current || keys.pending);
    if (!epoch || !epoch.roster) return clients;
    const order = Object.keys(epoch.roster);
    const rank = (/** @type {any} */ p) => { const i = order.indexOf(p.pid); return i < 0 ? order.length : i; };
    return clients.map((p, i) => ({ p, i })).sort((a, b) => rank(a.p) - rank(b.p) || a.i - b.i).map((x) => x.p);
  }

  /**
   * What the intro check says about a waiting client (E2EE only).
   * @param {string} pid
   * @returns {{status: string, kind: string, text: string}|null}
   */
  _introNote(pid) {
    const e2ee = this.e2ee;
    if (!e2ee) return null;
    const c = e2ee.intros.get(pid);
    if (!c) return { status: "checking", kind: "quiet", text: t("e2ee.intro.checking") };
    if (c.status === "ok") return e2ee.sLink ? { status: "ok", kind: "ok", text: t("e2ee.intro.ok") } : null;
    const kind = c.status === "bad" || c.status === "none" || c.status === "new-person" ? "danger"
      : c.status === "plain" ? "quiet" : "warn";
    return { status: c.status, kind, text: t(`e2ee.intro.${c.status}`) };
  }

  /** A waiting pid whose intro is a new person with a seat granted before. @param {string} pid */
  _newPerson(pid) {
    const c = this.e2ee ? this.e2ee.intros.get(pid) : null;
    return !!c && c.status === "new-person";
  }

  /** With E2EE only clients with a verified intro can be admitted (they would get no key). @param {string} pid */
  _introUsable(pid) {
    const e2ee = this.e2ee;
    if (!e2ee) return true;
    const c = e2ee.intros.get(pid);
    return !!c && (c.status === "ok" || c.status === "plain" || c.status === "no-link" || c.status === "new-person");
  }

  /**
   * The client's safety code next to its name, with "Mark verified" (trust on first use, per key).
   * @param {any} p roster entry
   */
  _sasRow(p) {
    const e2ee = this.e2ee;
    const box = el("div", "sas-row");
    box.dataset.sasFor = p.pid;
    const sas = e2ee.sasOf.get(p.pid);
    if (!sas) {
      box.append(el("span", "hint", t("e2ee.sas.waiting")));
      return box;
    }
    box.append(el("span", "sas-label", t("e2ee.sas.label")));
    const emoji = el("span", "sas-emoji-line");
    emoji.textContent = sas.emoji.join(" ");
    emoji.setAttribute("aria-label", sas.indices.map((/** @type {number} */ i) => t(`sas.${i}`)).join(", "));
    emoji.setAttribute("role", "img");
    box.append(emoji);
    box.append(el("span", "sas-decimal-line", sas.decimal.join(" ")));
    if (e2ee.isVerified(p.pid)) {
      box.dataset.verified = "yes";
      box.append(el("span", "verified", t("e2ee.sas.verified")));
    } else {
      // Media may flow, visibly unverified, until the therapist has read the code with this client.
      box.dataset.verified = "no";
      box.append(el("span", "unverified", t("e2ee.verify.not-yet")));
      box.append(tagged("verify", button(t("e2ee.sas.mark"), t("e2ee.sas.mark.named", { name: p.name }), "secondary small-btn",
        () => e2ee.markVerified(p.pid))));
    }
    return box;
  }

  /** Clients the key still holds that the server does not list (a restart's resume grace). @param {Set<string>} listed */
  _unlisted(listed) {
    const unconfirmed = /** @type {any} */ (this.e2ee)?.unconfirmed;
    return unconfirmed instanceof Map ? [...unconfirmed.keys()].filter((pid) => !listed.has(pid)) : [];
  }

  /** Removed or sent back by this console: no key for them from now on, whatever the server lists. @param {string} pid */
  _removedByMe(pid) {
    const e2ee = /** @type {any} */ (this.e2ee);
    if (e2ee && typeof e2ee.removedByMe === "function") e2ee.removedByMe(pid);
    if (this.session.call) this.session.call.forget(pid);  // no media to it meanwhile, even within a resume hold
  }

  /**
   * Decline and Remove ask first, in a modal dialog: an optional message the client sees, and whether to close the
   * link for good (unticked: it still opens the waiting room later). Cancel or Escape changes nothing.
   * @param {"decline"|"remove"} kind
   * @param {{pid: string, name: string}} who
   */
  ask(kind, who) {
    const dialog = /** @type {HTMLDialogElement} */ ($("pick-dialog"));
    const message = /** @type {HTMLTextAreaElement} */ ($("pick-message"));
    const block = /** @type {HTMLInputElement} */ ($("pick-block"));
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    $("pick-title").textContent = t(`console.${kind}.dialog`, { name: who.name });
    $("pick-open").textContent = t("console.dialog.open", { name: who.name });
    $("pick-message-label").textContent = t("console.dialog.message", { name: who.name });
    $("pick-block-hint").textContent = t("console.dialog.block.hint", { name: who.name });
    $("pick-confirm").textContent = t(`console.${kind}.short`);
    message.value = "";
    block.checked = false;
    dialog.returnValue = "";
    dialog.onclose = () => {
      if (dialog.returnValue === "confirm") {
        const text = message.value.trim() || undefined;
        if (kind === "decline") this.s.decline(who.pid, text, block.checked);
        else {
          this.s.remove(who.pid, text, block.checked);
          this._removedByMe(who.pid);
        }
        // the list is rebuilt without this person: the focus goes to the heading of the list they were in
        const heading = $(kind === "decline" ? "queue-title" : "people-title");
        heading.tabIndex = -1;
        heading.focus();
      } else if (opener && opener.isConnected) {
        opener.focus();
      } else if (opener) {
        // the list was rebuilt while the dialog was open: the same person's same button, if they are still there
        this._focusFor = { pid: who.pid, action: kind, index: 0, pos: 0, list: kind === "decline" ? "queue-list" : "people-list", until: 0 };
        this._focusFallback = null;
        this._restoreFocus();
      }
    };
    dialog.showModal();
    message.focus();
  }

  /** @param {boolean} locked */
  onLocked(locked) {
    this.locked = locked;
    this.renderLock();
    this.renderQueue();
  }

  renderLock() {
    const lock = $("console-lock");
    lock.textContent = this.locked ? t("console.lock.locked") : t("console.lock.open");
    lock.classList.toggle("locked", this.locked);
  }

  /** @param {any} _m */
  onTime(_m) {
    $("console-error").hidden = true;
  }

  /** @param {any} m */
  onError(m) {
    if (m.code === "room-locked") this.onLocked(true);
    const box = $("console-error");
    const known = ["room-full", "room-locked", "unknown-peer", "not-allowed", "extend-limit", "e2ee"];
    const reason = t(`console.error.${known.includes(m.code) ? m.code : "generic"}`);
    box.textContent = t("console.error", { message: reason });
    box.hidden = false;
    setTimeout(() => { box.hidden = true; }, 8000);
  }

  stop() {
    for (const [type, l] of this.listeners) this.s.removeEventListener(type, l);
    this.listeners = [];
    document.title = t("console.title");
    if (this.audio) this.audio.close().catch(() => {});
  }
}
