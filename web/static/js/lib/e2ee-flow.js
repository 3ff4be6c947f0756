// The page side of end-to-end encryption: runs the key protocol of e2ee.js (docs/security.md) over the
// signaling connection, owns the one SFrame worker of the page (e2ee-worker.js), and implements the E2EE hook
// interface that call.js (mesh) and sfu.js take as `e2ee`:
//   prepareSender(sender, kind), prepareReceiver(receiver, kind, pid|null), signSdp(to, type, sdp),
//   verifySdp(from, type, sdp, sig), ready(pid), onSecurityFailure(pid, error).
// No DOM here: ui/session.js, ui/console.js and ui/e2ee-view.js render what this module reports through its events:
//   `change`    keys, epoch, safety codes or intro checks changed
//   `stats`     {peers: {pid: {encrypted, decrypted, failed, dropped}}} from the worker, every second
//   `security`  {pid, error}: a signed message or SDP did not verify (the SDP was not applied)
//   `refused`   {what, pid, error}: a key, epoch, switch or intro was refused (shown to the person, never only logged)
//   `expired`   {epoch}: the epoch this page sent with expired before a newer one came ("reconnecting encryption")
//   `app`       {from, body, private}: a verified, decrypted app message (docs/security.md §10); refused ones go to
//               `refused` with what "app"
// App messages (chat, safety, state, …) go out with `sendApp(body, to = null) → boolean` and come in through
// `onApp(from, data)` (the view wires the signaling's "app" event to it).

import * as E from "./e2ee.js";

/** How long a signed SDP waits for the sender's key to be bound (grant / signed roster / intro). */
const READY_TIMEOUT_MS = 10_000;
/** A peer counts as "can't decrypt" after this long with failures and no frame decrypted. */
const FAILING_AFTER_MS = 3000;
/** How often the therapist checks whether the current epoch is due for a periodic rekey (ms). */
const REKEY_CHECK_MS = 5000;
/** How long the therapist keeps an admitted client the server has not listed since the console's own return (a
 * restarted server learns about people only as they resume): the server's default resume grace (ms). */
export const RESUME_GRACE_MS = 120_000;

/** Encoded transforms (and WebCrypto) available: without them no end-to-end encryption is possible. */
export function encodedTransformSupported() {
  const subtle = !!(globalThis.crypto && globalThis.crypto.subtle);
  const script = typeof globalThis.RTCRtpScriptTransform === "function";
  const legacy = typeof globalThis.RTCRtpSender === "function"
    && typeof /** @type {any} */ (globalThis.RTCRtpSender.prototype).createEncodedStreams === "function";
  return subtle && typeof Worker === "function" && (script || legacy);
}

/**
 * The link info (t, s, tk) as e2ee.js wants it; null when s/tk are malformed (treated as missing).
 * @param {{t: string|null, s: string|null, tk: string|null}} link
 * @returns {E.LinkInfo|null}
 */
export function linkInfo(link) {
  if (!link.t) return null;
  try {
    return E.parseLinkFragment(E.makeLinkFragment(link.t).slice(1)
      + (link.s ? `&s=${link.s}` : "") + (link.tk ? `&tk=${link.tk}` : ""));
  } catch {
    return { token: link.t, sLink: null, tk: null };
  }
}

/** Hex of the first 8 bytes of SHA-256(bytes): a name-free label for "verified" marks. @param {Uint8Array} bytes */
async function shortHash(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...d.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Shared by both roles: the worker, the key state, transforms, readiness and health. */
class E2eeBase extends EventTarget {
  /** @param {import("./protocol.js").Signaling} signaling @param {string} room */
  constructor(signaling, room) {
    super();
    this.signaling = signaling;
    this.room = room;
    this.worker = new Worker(new URL("./e2ee-worker.js", import.meta.url), { type: "module" });
    this.keyState = new E.KeyState({ post: (m) => this.worker.postMessage(m) });
    /** @type {Record<string, {encrypted: number, decrypted: number, failed: number, dropped: number}>} */
    this.peerStats = {};
    /** @type {Record<string, {encrypted: number, decrypted: number}>} */
    this.streamStats = {};
    /** @type {Map<string, {decrypted: number, failed: number, lastOk: number, failingSince: number}>} */
    this._health = new Map();
    /** @type {Array<{check: () => boolean, resolve: () => void}>} */
    this._waiters = [];
    /** @type {Array<{pid: string|null, error: string}>} */
    this.failures = [];
    /** @type {WeakMap<RTCRtpReceiver, number>} SFU receivers (any publisher) -> their slot in the worker */
    this._slots = new WeakMap();
    this._slotSeq = 0;
    /** @type {Record<string, string>} slot -> the pid whose key decrypted its newest frame (from the worker) */
    this.slotOwners = {};
    /** @type {Record<string, number>} slot -> the SFrame KID stream of its newest decrypted frame (from the worker) */
    this.slotStreams = {};
    /** @type {Array<{what: string, pid: string|null, error: string}>} every refused key, epoch, switch or intro */
    this.refusals = [];
    /** The epoch this page sent with expired and no newer one came: nothing is sent ("reconnecting encryption"). */
    this.sendExpired = false;
    this.keyState.onExpire.push((epoch) => {
      this.sendExpired = true;
      this.dispatchEvent(new CustomEvent("expired", { detail: { epoch } }));
      this._changed();
    });
    /** @type {Promise<any>} key messages are handled one at a time, in order */
    this._keyChain = Promise.resolve();
    /** @type {Promise<any>} app messages go out in the order they were sent */
    this._appOut = Promise.resolve();
    /** @type {Promise<any>} app messages are opened one at a time, in arrival order */
    this._appIn = Promise.resolve();
    /** app messages under an epoch not received yet, waiting for it */
    this.appHeld = new E.AppHold();
    /** app messages ignored: sent under an epoch older than this page's membership */
    this.ignoredApps = 0;
    /** A client ignores an app message under an epoch older than its membership (sent before it was a member). */
    this.ignoresBeforeMembership = true;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this._holdTimer = null;
    this.worker.addEventListener("message", (ev) => {
      const m = ev.data || {};
      if (m.type === "stats") this._onStats(m);
    });
  }

  // ---- the hook interface ---------------------------------------------------------------------------

  /** @param {any} target @param {{operation: string, kind: string, peer?: string, slot?: number, stream?: number}} options */
  _attach(target, options) {
    if (typeof globalThis.RTCRtpScriptTransform === "function") {
      target.transform = new RTCRtpScriptTransform(this.worker, options);
    } else {
      const { readable, writable } = target.createEncodedStreams();
      this.worker.postMessage({ type: "transform", readable, writable, options }, [readable, writable]);
    }
  }

  /**
   * @param {RTCRtpSender} sender @param {string} kind
   * @param {number} [stream] the SFrame KID stream (a screen share: lib/share.js); default the camera/microphone
   */
  prepareSender(sender, kind, stream) {
    /** @type {{operation: string, kind: string, stream?: number}} */
    const options = { operation: "encrypt", kind };
    if (typeof stream === "number") options.stream = stream;
    this._attach(sender, options);
  }

  /**
   * @param {RTCRtpReceiver} receiver @param {string} kind @param {string|null} pid
   * @param {number} [stream] only frames of this SFrame KID stream decrypt (a share's receiver)
   */
  prepareReceiver(receiver, kind, pid, stream) {
    /** @type {{operation: string, kind: string, peer?: string, slot?: number, stream?: number}} */
    const options = { operation: "decrypt", kind };
    if (typeof stream === "number") options.stream = stream;
    if (pid) options.peer = pid;
    else {
      const slot = ++this._slotSeq;
      this._slots.set(receiver, slot);
      options.slot = slot;
    }
    this._attach(receiver, options);
  }

  /**
   * The authenticated sender of an SFU receiver's frames: the pid (signed roster) whose key decrypted the newest
   * frame it carried, or null before one did.
   * @param {RTCRtpReceiver} receiver @returns {string|null}
   */
  senderOfReceiver(receiver) {
    const slot = this._slots.get(receiver);
    return slot === undefined ? null : this.slotOwners[String(slot)] ?? null;
  }

  /**
   * The SFrame KID stream of an SFU receiver's newest decrypted frame (1 camera, 2 screen share, …), or null.
   * @param {RTCRtpReceiver} receiver @returns {number|null}
   */
  streamOfReceiver(receiver) {
    const slot = this._slots.get(receiver);
    const s = slot === undefined || !this.slotStreams ? undefined : this.slotStreams[String(slot)];
    return typeof s === "number" ? s : null;
  }

  /** @param {string|null} pid null: the SFU connection @param {any} error */
  onSecurityFailure(pid, error) {
    const text = error && error.message ? String(error.message) : String(error);
    this.failures.push({ pid, error: text });
    this.dispatchEvent(new CustomEvent("security", { detail: { pid, error: text } }));
  }

  /** Resolves when `check()` holds (re-checked on every key change) or after the timeout.
   * @param {() => boolean} check @param {number} [timeout] @returns {Promise<void>} */
  _until(check, timeout = READY_TIMEOUT_MS) {
    if (check()) return Promise.resolve();
    return new Promise((resolve) => {
      const w = { check, resolve };
      this._waiters.push(w);
      setTimeout(() => {
        this._waiters = this._waiters.filter((x) => x !== w);
        resolve();
      }, timeout);
    });
  }

  _changed() {
    const still = [];
    for (const w of this._waiters) {
      if (w.check()) w.resolve();
      else still.push(w);
    }
    this._waiters = still;
    this.dispatchEvent(new Event("change"));
  }

  // ---- app messages (docs/security.md §10) --------------------------------------------------------------

  /** @returns {E.AppChannel|null} */
  get _app() {
    const keys = /** @type {{app?: E.AppChannel}|null} */ (/** @type {any} */ (this).keys);
    return keys && keys.app ? keys.app : null;
  }

  /**
   * Sends an end-to-end encrypted app message: `body` a JSON object `{"k": kind, …}` (at most 4 KiB serialized),
   * `to` null (everyone admitted) or one pid (the therapist: one client; a client: the therapist only). False when
   * there is no key yet. Throws TypeError for a bad body or a private `to` this role may not use.
   * @param {Record<string, any>} body @param {string|null} [to] @returns {boolean}
   */
  sendApp(body, to = null) {
    const app = this._app;
    if (!app) return false;
    const prepared = app.prepare(body, to);
    if (!prepared.ready) return false;
    this._appOut = this._appOut
      .then(() => prepared.data)
      .then((data) => { this.signaling.app(to, data); })
      .catch((e) => this._refused("app", null, e));
    return true;
  }

  /**
   * An app message the server relayed: an `app` event when it verifies, else `refused` ("app"). One under an epoch
   * not received yet (a member's message sent just before this page's admission or its newest epoch) waits for
   * that epoch (E.AppHold: at most 32, at most 5 s) and is refused if it does not come; one under an epoch older
   * than this page's membership is ignored. `now` (ms): the caller's clock.
   * @param {string} from @param {string} data @param {number} [now]
   */
  onApp(from, data, now = Date.now()) {
    const run = this._appIn.then(() => this._appArrived(from, data, now));
    this._appIn = run;
    return run;
  }

  /** @param {string} from @param {string} data @param {number} now */
  async _appArrived(from, data, now) {
    const app = this._app;
    const epoch = E.appEpochOf(data);
    const what = app && epoch !== null ? app.disposition(epoch) : "open";
    if (what === "ignore" && this.ignoresBeforeMembership) {
      this.ignoredApps++;
      return;
    }
    if (what === "ignore") {  // the therapist's own epoch, whose key a reload lost: a message it cannot read, said so
      this._refused("app", from, new E.SecurityCheckFailed("a message under an epoch whose key this page no longer has"));
      return;
    }
    if (what === "hold") {
      if (this.appHeld.hold(from, data, now)) {
        this._scheduleHold(now);
        return;
      }
      this._refused("app", from, new E.SecurityCheckFailed("too many app messages waiting for their epoch"));
      return;
    }
    try {
      if (!app) throw new E.SecurityCheckFailed("app message without keys");
      const msg = await app.open(from, data);
      this.dispatchEvent(new CustomEvent("app", { detail: { from: msg.from, body: msg.body, private: msg.private } }));
    } catch (e) {
      this._refused("app", from, e);
    }
  }

  /** A new epoch is here: the held app messages it (or an older membership) settles, in arrival order. */
  releaseHeldApps() {
    const run = this._appIn.then(async () => {
      const app = this._app;
      if (!app || !this.appHeld.size) return;
      const released = this.appHeld.release((data) => {
        const epoch = E.appEpochOf(data);
        return epoch !== null && app.disposition(epoch) === "hold";
      });
      for (const [from, data] of released) await this._appArrived(from, data, Date.now());
    });
    this._appIn = run;
    return run;
  }

  /** Refuses the held app messages whose epoch did not come in time. @param {number} [now] */
  expireHeldApps(now = Date.now()) {
    this._holdTimer = null;
    for (const [from] of this.appHeld.expired(now)) {
      this._refused("app", from, new E.SecurityCheckFailed("its epoch did not come"));
    }
    this._scheduleHold(now);
  }

  /** @param {number} now */
  _scheduleHold(now) {
    const deadline = this.appHeld.nextDeadline();
    if (deadline === null || this._holdTimer !== null) return;
    this._holdTimer = setTimeout(() => this.expireHeldApps(), Math.max(0, deadline - now) + 10);
  }

  // ---- health -----------------------------------------------------------------------------------------

  /**
   * A refused key message or intro: recorded and reported (the view shows it to the person).
   * @param {string} what @param {string|null} pid @param {any} error
   */
  _refused(what, pid, error) {
    const text = error && error.message ? String(error.message) : String(error);
    this.refusals.push({ what, pid, error: text });
    this.dispatchEvent(new CustomEvent("refused", { detail: { what, pid, error: text } }));
  }

  /** @param {any} m */
  _onStats(m) {
    this.peerStats = m.peers || {};
    /** @type {Record<string, {encrypted: number, decrypted: number}>} per SFrame KID stream of a share */
    this.streamStats = m.streams || {};
    this.slotOwners = m.slots || {};
    this.slotStreams = m.slotStreams || {};
    if (m.sendExpired && !this.sendExpired) {
      this.sendExpired = true; // the worker dropped the expired epoch on its own clock
      this.dispatchEvent(new CustomEvent("expired", { detail: { epoch: m.sendEpoch } }));
      this._changed();
    } else if (!m.sendExpired && this.sendExpired && this.keyState.sendEpoch !== null && !this.keyState.sendExpired) {
      this.sendExpired = false;
      this._changed();
    }
    const now = Date.now();
    for (const [peer, s] of Object.entries(this.peerStats)) {
      let h = this._health.get(peer);
      if (!h) {
        h = { decrypted: 0, failed: 0, lastOk: 0, failingSince: 0 };
        this._health.set(peer, h);
      }
      if (s.decrypted > h.decrypted) {
        h.lastOk = now;
        h.failingSince = 0;
      } else if (s.failed > h.failed && !h.failingSince) {
        h.failingSince = now;
      }
      h.decrypted = s.decrypted;
      h.failed = s.failed;
    }
    this.dispatchEvent(new CustomEvent("stats", { detail: { peers: this.peerStats } }));
  }

  /**
   * The health of the media from `pid`: "ok" (frames decrypt), "failing" (frames arrive and do not
   * decrypt for a while) or "verifying" (no key yet / nothing received yet).
   * @param {string} pid @returns {"ok"|"failing"|"verifying"}
   */
  health(pid) {
    const h = this._health.get(pid);
    const now = Date.now();
    if (!h) return "verifying";
    if (h.lastOk && now - h.lastOk < FAILING_AFTER_MS) return "ok";
    if (h.failingSince && now - h.failingSince >= FAILING_AFTER_MS) return "failing";
    return h.lastOk ? "ok" : "verifying";
  }

  /** The epoch this page sends with (null before the first switch). */
  get epoch() {
    return this.keyState.sendEpoch;
  }

  /**
   * The name the therapist signed for `pid` in the newest epoch's roster, or null (not in it).
   * @param {string} pid @returns {string|null}
   */
  signedName(pid) {
    void pid;
    return null;
  }

  stop() {
    if (this._holdTimer !== null) clearTimeout(this._holdTimer);
    this._holdTimer = null;
    this.keyState.clear();
    for (const w of this._waiters) w.resolve();
    this._waiters = [];
    setTimeout(() => this.worker.terminate(), 200);
  }
}

/** A client: its keys, intro, grant check, reveal, epochs/acks, SAS; kept in this tab for a reload. */
export class ClientE2ee extends E2eeBase {
  /**
   * @param {import("./protocol.js").Signaling} signaling @param {string} room @param {E.LinkInfo|null} link
   * @param {(pid: string) => string|null} roleOf the role of a pid in the (server's) roster
   */
  constructor(signaling, room, link, roleOf) {
    super(signaling, room);
    this.link = link;
    this.roleOf = roleOf;
    /** The link pins the therapist's key or carries the link secret: E2EE is required. */
    this.required = !!(link && (link.sLink || link.tk));
    this._stateKey = `alcove.e2ee.client.${room}`;
    this.granted = false;
    /** @type {E.Sas|null} */
    this.sas = null;
    /** @type {string|null} the safety code this person said matches (see `verification`) */
    this._compared = null;
    /** @type {Promise<void>|null} */
    this._grantP = null;
    /** @type {string|null} this tab's kept identity (a reload during the session), checked on welcome */
    const saved = this._load();
    /** True while the keys come from this tab's kept state (a reload): same keys, same safety code. */
    this.restored = false;
    /** A kept state was there but could not be restored. */
    this.lostState = false;
    /** @type {Promise<E.ClientKeys>} */
    this.keysP = (async () => {
      if (saved) {
        try {
          const keys = await E.ClientKeys.restoreIdentity(room, link, saved, { keyState: this.keyState });
          this.sas = await keys.sas();
          this.granted = true;
          this.restored = true;
          return keys;
        } catch (e) {
          this._forget();
          this.lostState = true; // it had a grant: resuming must not go on without E2EE (shown by the view)
          this.lostReason = /** @type {Error} */ (e).message;
        }
      }
      return E.ClientKeys.create(room, link, { keyState: this.keyState, keepable: true });
    })();
    /** Resolves once the kept state (if any) is back: `granted` is then true when a reload kept it. */
    this.restoreSettled = false;
    this.restoreP = this.keysP.then(() => this.granted, () => false).then((ok) => { this.restoreSettled = true; return ok; });
    /** @type {E.ClientKeys|null} */
    this.keys = null;
    this.keysP.then((k) => { this.keys = k; if (this.granted) this._changed(); });
  }

  /** @returns {string|null} */
  _load() {
    try { return sessionStorage.getItem(this._stateKey); } catch { return null; }
  }

  /** Keeps this client's identity and the verified therapist state in this tab (never an epoch secret). */
  _save() {
    if (!this.granted || !this.keys) return;
    const text = this.keys.exportIdentity();
    if (!text) return;
    try { sessionStorage.setItem(this._stateKey, text); } catch { /* storage disabled: a reload needs a new admission */ }
  }

  _forget() {
    try { sessionStorage.removeItem(this._stateKey); } catch { /* storage disabled */ }
  }

  _changed() {
    this._save();
    super._changed();
  }

  /** True while an admission's grant is being checked (admitted() called, not settled or reset yet). */
  get grantPending() {
    return this._grantP !== null;
  }

  /** The hello.intro string. */
  async intro() {
    return (await this.keysP).makeIntro();
  }

  /**
   * The server's welcome: a kept state is used only when this tab resumed into the session as the same
   * participant; otherwise (back in the waiting room, another pid) it is dropped and a grant is needed again.
   * @param {string} pid @param {string} [status]
   */
  async welcome(pid, status) {
    const keys = await this.keysP;
    if (this.restored && (keys.pid !== pid || status !== "admitted")) {
      this.restored = false;
      this.reset();
    }
    keys.pid = pid;
  }

  /**
   * Checks the admitted.grant, sends the reveal and computes the safety code; throws SecurityCheckFailed.
   * @param {string|null} grant @param {string} pid
   */
  admitted(grant, pid) {
    this._grantP = (async () => {
      const keys = await this.keysP;
      this.restored = false;
      await keys.checkGrant(grant, pid);
      this.sas = await keys.sas();
      this.signaling.key(null, await keys.makeReveal());
      this.granted = true;
      this._changed();
    })();
    return this._grantP;
  }

  /** Key data from the therapist: epoch -> ack, switch (in arrival order). @param {string} from @param {string} data */
  onKey(from, data) {
    const run = this._keyChain.then(() => this._onKey(from, data));
    this._keyChain = run.catch(() => {});
    return run;
  }

  /** @param {string} from @param {string} data */
  async _onKey(from, data) {
    const keys = await this.keysP;
    // The first epoch can arrive while the grant is still being checked: keep the order.
    if (this._grantP) await this._grantP.catch(() => {});
    let reply;
    try {
      reply = await keys.handleKey(data);
    } catch (e) {
      this._refused(E.messageKind(data) || "key", from, e);
      throw e;
    }
    if (typeof reply === "string") {
      if (this.sendExpired && this.keyState.sendEpoch !== null && !this.keyState.sendExpired) this.sendExpired = false;
      this._changed(); // keeps the new HPKE key in this tab before the ack announces it
      this.signaling.key(null, reply);
      this.releaseHeldApps();
      return;
    }
    if (this.sendExpired && !this.keyState.sendExpired) this.sendExpired = false; // switched to a newer epoch
    this._changed();
  }

  /** Sent back to the waiting room: every media key is dropped at once, and the state kept in this tab. */
  reset() {
    this.keys?.reset();
    this.appHeld.clear(); // what waited for an epoch of that membership: it will not come
    this._grantP = null;
    this.granted = false;
    this.sas = null;
    this._compared = null;
    try { sessionStorage.removeItem(this._comparedKey); } catch { /* storage disabled */ }
    this._forget();
    this._changed();
  }

  /** @param {string} pid */
  ready(pid) {
    const role = this.roleOf(pid);
    if (role === "therapist" || role === null) return this._until(() => this.granted);
    return this._until(() => !!(this.granted && this.keys && this.keys.roster.has(pid)));
  }

  /** @param {string} to @param {"offer"|"answer"} type @param {string} sdp */
  async signSdp(to, type, sdp) {
    const sig = await (await this.keysP).signSdp(to, type, sdp);
    this._save(); // the SDP counters must keep growing across a reload
    return sig;
  }

  /** @param {string} from @param {"offer"|"answer"} type @param {string} sdp @param {string|null|undefined} sig */
  async verifySdp(from, type, sdp, sig) {
    const keys = await this.keysP;
    if (!this.granted) throw new E.SecurityCheckFailed("no verified therapist key yet");
    await keys.verifySdp(from, type, sdp, sig);
    this._save();
  }

  get epochNumber() {
    return this.keys && this.keys.newestEpoch >= 0 ? this.keys.newestEpoch : null;
  }

  /**
   * What this client knows about the therapist's key: "anchored" (its link carries tk and the granted key
   * matches it), "compared" (the person said the safety code matches the therapist's), "unverified", or null
   * before the grant. The therapist's own "Mark verified" stays on the therapist's device: a signed
   * confirmation could only come from the key the code is meant to check (a middleman holds its own).
   * @returns {"anchored"|"compared"|"unverified"|null}
   */
  get verification() {
    if (!this.granted || !this.sas) return null;
    if (this.link && this.link.tk) return "anchored"; // checkGrant refused any key that does not match tk
    return this._comparedCode() === this.sas.decimal.join(" ") ? "compared" : "unverified";
  }

  /** The person compared the safety code with the therapist's and it matches (this code, this tab). */
  markCompared() {
    if (!this.sas) return;
    try { sessionStorage.setItem(this._comparedKey, this.sas.decimal.join(" ")); } catch { /* this page only */ }
    this._compared = this.sas.decimal.join(" ");
    this._changed();
  }

  /** @returns {string|null} */
  _comparedCode() {
    if (this._compared) return this._compared;
    try { return sessionStorage.getItem(this._comparedKey); } catch { return null; }
  }

  get _comparedKey() {
    return `alcove.e2ee.compared.${this.room}`;
  }

  /** @param {string} pid @returns {string|null} */
  signedName(pid) {
    if (!this.keys || !this.keys.roster.has(pid)) return null;
    return this.keys.names.get(pid) ?? "";
  }
}

/**
 * What the therapist's check of an intro found: "ok" (its MAC proves the link secret, or the therapist has
 * none), "plain" (no MAC: a link without this room's secret, e.g. made by the practice's administration),
 * "no-link" (a MAC that is wrong: a link secret was expected and not proven), "bad" (refused), "none" (no intro),
 * "new-person" (a new identity for a pid the therapist had granted: it needs an Admit of its own).
 * @typedef {{intro: string|null, status: "ok"|"plain"|"no-link"|"bad"|"none"|"new-person", error?: string}} IntroCheck
 */

/** Whether an intro envelope carries a MAC at all (a link with a secret makes one). @param {string} intro */
function introHasMac(intro) {
  try { return typeof JSON.parse(intro).mac === "string"; } catch { return false; }
}

/** The therapist: persistent IK_T, intro checks, grants, reveals (SAS), epochs and switches. */
export class TherapistE2ee extends E2eeBase {
  /**
   * @param {import("./protocol.js").Signaling} signaling @param {string} room
   * @param {Promise<string>} pidP resolves with our pid (from welcome)
   * @param {Uint8Array|null} sLink the room's link secret
   * @param {() => Promise<unknown>} [beforeUnlock] resolves once the key may be unlocked (the view's served-code check)
   */
  constructor(signaling, room, pidP, sLink, beforeUnlock = async () => {}) {
    super(signaling, room);
    this.ignoresBeforeMembership = false;  // every epoch is the therapist's own: an older one is a lost key, not noise
    this.sLink = sLink;
    /** @type {Promise<E.TherapistKeys>} */
    this.keysP = (async () => {
      await beforeUnlock(); // the pinned code, or the therapist accepted the change: only then the key
      const identity = await E.loadOrCreateIdentity();
      const keys = await E.TherapistKeys.create(room, await pidP, { identity, sLink, keyState: this.keyState });
      await this._restore(keys);
      return keys;
    })();
    /** @type {E.TherapistKeys|null} */
    this.keys = null;
    this.keysP.then((k) => { this.keys = k; this._changed(); });
    /** @type {Map<string, IntroCheck>} */
    this.intros = new Map();
    /** @type {Map<string, E.Sas>} */
    this.sasOf = new Map();
    /** @type {Map<string, string>} pid -> short hash of its IK_P (for "verified") */
    this._ikHash = new Map();
    /** @type {string[]} clients of the current epoch */
    this._members = [];
    /** @type {Set<string>} admitted clients (server roster) */
    this._admitted = new Set();
    /** @type {Record<string, string>} display names as this console knows them (signed into each epoch's roster) */
    this._names = {};
    /** @type {ReturnType<typeof setInterval>|null} the periodic rekey (well before the epoch's expiry) */
    this._rekeyTimer = null;
    /** @type {Set<string>} admitted clients whose connection is down (roster connected:false) */
    this._offline = new Set();
    /** an admitted client came back: the next rekey makes a new epoch even for the same members */
    this._returned = false;
    /** @type {Set<string>} clients the server listed since this console's last (re)connection */
    this._listed = new Set();
    /** @type {Map<string, number>} admitted clients the server has not listed since this console came back (a
     * restarted server does not know them until they resume), each with the time (ms) until which it stays a member */
    this.unconfirmed = new Map();
    /** @type {Set<string>} clients this console removed or sent back: no key, whatever the server lists, until a new Admit */
    this._removedByMe = new Set();
    /** @type {ReturnType<typeof setTimeout>|null} */
    this._graceTimer = null;
    /** @type {[string[], string[], Record<string, string>]} the last roster, looked at again when a grace runs out */
    this._lastRoster = [[], [], {}];
    /** @type {Promise<void>} serialises rekeying */
    this._chain = Promise.resolve();
    this.epochsMade = 0;
    /** @type {any[]} */
    this._lastQueue = [];
    this._stateKey = `alcove.e2ee.therapist.${room}`;
    this.restored = false;
  }

  /**
   * Therapist return (docs/security.md §5): after a reload, the public session state kept in this tab
   * (sessionStorage; never sent to the server) brings back the admitted clients' intro keys, sender indices,
   * the next epoch number and the signed-SDP counters; the first roster then issues a new epoch to them.
   * @param {E.TherapistKeys} keys
   */
  async _restore(keys) {
    let saved;
    try { saved = JSON.parse(sessionStorage.getItem(this._stateKey) || "null"); } catch { saved = null; }
    if (!saved || typeof saved.state !== "string") return;
    try {
      await keys.importState(saved.state);
    } catch (e) {
      this._refused("state", null, e); // shown: the clients need to be let in again
      return;
    }
    keys.restoreSdpCounters(saved.sdpSeq);
    for (const [pid, m] of keys.members) if (m.sas) this.sasOf.set(pid, m.sas);
    this.restored = true;
  }

  _save() {
    const keys = this.keys;
    if (!keys) return;
    try {
      sessionStorage.setItem(this._stateKey, JSON.stringify({ state: keys.exportState(), sdpSeq: keys.sdpCounters() }));
    } catch { /* storage disabled: a reload starts afresh */ }
  }

  _changed() {
    this._save();
    super._changed();
  }

  /** The therapist's tk (b64url) for invite links. @returns {Promise<string>} */
  async tk() {
    return E.b64e((await this.keysP).tk);
  }

  /** Checks the intros of the waiting room. @param {any[]} waiting */
  async checkQueue(waiting) {
    this._lastQueue = waiting;
    const keys = await this.keysP;
    for (const w of waiting) {
      const seen = this.intros.get(w.pid);
      if (seen && seen.intro === (w.intro ?? null)) continue;
      if (!w.intro) {
        this.intros.set(w.pid, { intro: null, status: "none" });
        continue;
      }
      // The queue is a hint: a pid this console granted keeps its key for the session (checkIntro); a new key
      // for it is a new person, shown as such, who gets a key only by a new Admit.
      try {
        const info = await keys.checkIntro(w.pid, w.intro);
        this._ikHash.set(w.pid, await shortHash(info.ik));
        /** @type {IntroCheck["status"]} */
        let status = "ok";
        // A wrong MAC, or none where this room's links carry the secret: "did not come through your invite link".
        if (info.macOk === false) status = introHasMac(w.intro) || secretExpected(this.room) ? "no-link" : "plain";
        this.intros.set(w.pid, { intro: w.intro, status });
      } catch (e) {
        const error = String(/** @type {Error} */ (e).message);
        if (e instanceof E.NewPerson) {
          const info = keys.newcomers.get(w.pid);
          if (info) this._ikHash.set(w.pid, await shortHash(info.ik));
          this.intros.set(w.pid, { intro: w.intro, status: "new-person", error });
          this._refused("new-person", w.pid, e);
        } else {
          this.intros.set(w.pid, { intro: w.intro, status: "bad", error });
          this._refused("intro", w.pid, e);
        }
      }
    }
    this._changed();
  }

  /** The admit.grant for a waiting client (null when it sent no usable intro). @param {string} pid */
  async grantFor(pid) {
    const keys = await this.keysP;
    const check = this.intros.get(pid);
    if (!check || (check.status !== "ok" && check.status !== "plain" && check.status !== "no-link" && check.status !== "new-person")) return null;
    const grant = await keys.makeGrant(pid); // for a new person: this click is its new Admit
    if (check.status === "new-person") this.intros.set(pid, { ...check, status: "ok" });
    this._removedByMe.delete(pid); // a new Admit
    return grant;
  }

  /** Key data from a client (reveal, ack), in arrival order. @param {string} from @param {string} data */
  onKey(from, data) {
    const run = this._keyChain.then(() => this._onKey(from, data));
    this._keyChain = run.catch(() => {});
    return run;
  }

  /** @param {string} from @param {string} data */
  async _onKey(from, data) {
    const keys = await this.keysP;
    const result = await keys.handleKey(from, data);
    if (result && typeof result === "object") {
      this.sasOf.set(from, result);
      this._changed();
      // granted by this console and its reveal verified: only now it gets the key
      this._chain = this._chain.then(() => this._rekey()).catch((e) => this._refused("epoch", null, e));
    } else if (result === true && keys.switchDue()) {
      this._chain = this._chain.then(() => this._switch()).catch(() => {});
    }
  }

  /**
   * This console's signaling came back (its own drop, or a restart of the server): the epoch stays (the clients
   * hold it, media never stopped), and clients the maybe fresh server does not list yet stay members within the
   * resume grace (onRoster).
   */
  reconnected() {
    this._listed = new Set();
  }

  /** This console removed `pid` or sent it back: no key for it from now on, whatever the server lists. @param {string} pid */
  removedByMe(pid) {
    this._removedByMe.add(pid);
    this._forget(pid);
    this._admitted.delete(pid);
    this.unconfirmed.delete(pid);
    this._chain = this._chain.then(() => this._rekey()).catch((e) => this._refused("epoch", null, e));
    this._changed();
  }

  /** @param {string} pid */
  _forget(pid) {
    // Removed / sent back / left: no key for it any more; a new admission starts from its intro again.
    this.keys?.forget(pid);
    this.intros.delete(pid);
    this.sasOf.delete(pid);
  }

  /**
   * Follows the admitted clients: a new epoch on every admission, removal or send-back, and when an admitted
   * client comes back (its entry goes from connected:false to connected:true, or it is listed again after a
   * restart of the server: a reload or a network cut; a reloaded client keeps its keys but has no media key any
   * more).
   * The server's roster is a hint: only clients this console granted (its own Admit) and whose reveal verified
   * get a key, and never one this console removed or sent back. A client the server listed since this console's
   * last connection and lists no more has left for good (left, removed, or its grace ran out: within its grace
   * it stays listed, connected:false) and is forgotten. One it has not listed since then (a restarted server
   * knows only those who resumed) stays a member until it is listed again, or forgotten after RESUME_GRACE_MS.
   * @param {string[]} clientPids @param {string[]} [offline] the admitted clients whose connection is down
   * @param {Record<string, string>} [names] display names as this console shows them (therapist included)
   * @param {number} [now] ms, the caller's clock
   */
  onRoster(clientPids, offline = [], names = {}, now = Date.now()) {
    this._lastRoster = [clientPids, offline, names];
    this._names = { ...names };
    const listed = new Set(clientPids.filter((p) => !this._removedByMe.has(p)));
    const down = new Set(offline);
    for (const pid of this._offline) {
      if (listed.has(pid) && !down.has(pid) && this._admitted.has(pid)) this._returned = true;
    }
    this._offline = down;
    /** @type {string[]} */
    const gone = [];
    for (const pid of this._admitted) {
      if (listed.has(pid)) continue;
      if (this._listed.has(pid)) {
        gone.push(pid); // listed on this connection, then not: it left for good
        continue;
      }
      if (!this.unconfirmed.has(pid)) this.unconfirmed.set(pid, now + RESUME_GRACE_MS);
      if (now >= /** @type {number} */ (this.unconfirmed.get(pid))) gone.push(pid); // not back within the grace
    }
    for (const pid of gone) {
      this._forget(pid);
      this.unconfirmed.delete(pid);
      this._admitted.delete(pid);
    }
    for (const pid of listed) {
      if (this.unconfirmed.delete(pid) && !down.has(pid)) this._returned = true; // back after a restart
      this._listed.add(pid);
      this._admitted.add(pid);
    }
    this._scheduleGrace(now);
    if (this._lastQueue.length) this.checkQueue(this._lastQueue).catch(() => {});
    this._chain = this._chain.then(() => this._rekey()).catch((e) => this._refused("epoch", null, e));
    this._changed();
    if (this._rekeyTimer === null) {
      this._rekeyTimer = setInterval(() => {
        const keys = this.keys;
        if (!keys || !keys.rekeyDue()) return;
        this._returned = true; // nothing changed, yet the epoch must be renewed well before it expires
        this._chain = this._chain.then(() => this._rekey()).catch((e) => this._refused("epoch", null, e));
      }, REKEY_CHECK_MS);
    }
  }

  /** Looks again when the first unlisted client's grace runs out. @param {number} now */
  _scheduleGrace(now) {
    if (this._graceTimer !== null) clearTimeout(this._graceTimer);
    this._graceTimer = null;
    if (!this.unconfirmed.size) return;
    const first = Math.min(...this.unconfirmed.values());
    this._graceTimer = setTimeout(() => {
      this._graceTimer = null;
      this.onRoster(...this._lastRoster);
    }, Math.max(0, first - now) + 10);
  }

  async _rekey() {
    const keys = await this.keysP;
    const members = [...this._admitted].filter((p) => keys.keyable(p)).sort();
    const returned = this._returned;
    this._returned = false;
    if (members.join(",") === this._members.join(",") && !returned) return;
    this._members = members;
    if (!members.length) return;
    /** @type {Record<string, string>} */
    const names = {};
    for (const pid of [keys.pid, ...members]) if (typeof this._names[pid] === "string") names[pid] = this._names[pid];
    const result = await keys.makeEpoch(members, names);
    this.epochsMade++;
    this.releaseHeldApps();
    this.signaling.key(null, result.message);
    const until = Date.now() + E.SWITCH_TIMEOUT_MS + 20;
    while (!keys.switchDue() && Date.now() < until) await sleep(50);
    await this._switch();
  }

  async _switch() {
    const keys = await this.keysP;
    if (!keys.pending || !keys.switchDue()) return;
    this.signaling.key(null, await keys.makeSwitch());
    this._changed();
  }

  /** Admitted clients this console did not grant or whose reveal is not verified (they get no key). */
  unkeyed() {
    return [...this._admitted].filter((p) => !this.keys || !this.keys.keyable(p));
  }

  stop() {
    if (this._rekeyTimer !== null) clearInterval(this._rekeyTimer);
    this._rekeyTimer = null;
    if (this._graceTimer !== null) clearTimeout(this._graceTimer);
    this._graceTimer = null;
    super.stop();
  }

  /** @param {string} pid @returns {string|null} */
  signedName(pid) {
    const cur = this.keys && (this.keys.current ?? this.keys.pending);
    if (!cur || !(pid in cur.roster)) return null;
    return this._names[pid] ?? "";
  }

  /** @param {string} pid */
  ready(pid) {
    return this._until(() => !!(this.keys && this.keys.members.get(pid)?.nT));
  }

  /** @param {string} to @param {"offer"|"answer"} type @param {string} sdp */
  async signSdp(to, type, sdp) {
    const sig = await (await this.keysP).signSdp(to, type, sdp);
    this._save(); // the SDP counters must keep growing across a reload
    return sig;
  }

  /** @param {string} from @param {"offer"|"answer"} type @param {string} sdp @param {string|null|undefined} sig */
  async verifySdp(from, type, sdp, sig) {
    await (await this.keysP).verifySdp(from, type, sdp, sig);
  }

  /** Trust on first use: was this client's key marked verified on this device? @param {string} pid */
  isVerified(pid) {
    const h = this._ikHash.get(pid);
    try { return !!h && localStorage.getItem(`alcove.verified.${h}`) === "1"; } catch { return false; }
  }

  /** @param {string} pid */
  markVerified(pid) {
    const h = this._ikHash.get(pid);
    if (!h) return;
    try { localStorage.setItem(`alcove.verified.${h}`, "1"); } catch { /* storage disabled */ }
    this._changed();
  }

  get epochNumber() {
    return this.keys ? (this.keys.current ? this.keys.current.epoch : null) : null;
  }
}

// ---- the therapist's link secret and invite links ----------------------------------------------------------

/** @param {string} room */
const secretKey = (room) => `alcove.slink.${room}`;

/** The link secret's length: 128 bits, so a link with it fits in a text message (docs/security.md §3). */
export const LINK_SECRET_BYTES = 16;

/** The room's link secret kept in this browser (b64url), or null. @param {string} room */
export function storedLinkSecret(room) {
  try { return localStorage.getItem(secretKey(room)); } catch { return null; }
}

/** Keeps (or creates) the room's link secret; returns it (b64url). With `value` (the therapist's own link
 * carried it) the room's client links carry it too: a client without it is then unexpected.
 * @param {string} room @param {string|null} [value] */
export function keepLinkSecret(room, value = null) {
  let s = value || storedLinkSecret(room);
  if (!s) s = E.b64e(crypto.getRandomValues(new Uint8Array(LINK_SECRET_BYTES)));
  try { localStorage.setItem(secretKey(room), s); } catch { /* storage disabled: this page only */ }
  if (value) expectLinkSecret(room);
  return s;
}

/** @param {string} room */
const expectedKey = (room) => `alcove.slink-expected.${room}`;

/**
 * From now on this room's clients are expected to come with the link secret: this device handed out links
 * with it (the console's invite links), or the therapist's own link carried it. An intro without a MAC is
 * then "did not come through your invite link"; before, it is a link from the practice (no warning).
 * @param {string} room
 */
export function expectLinkSecret(room) {
  try { localStorage.setItem(expectedKey(room), "1"); } catch { /* storage disabled: this page only */ }
  expectedInMemory.add(room);
}

/** @type {Set<string>} */
const expectedInMemory = new Set();

/** @param {string} room */
function secretExpected(room) {
  if (expectedInMemory.has(room)) return true;
  try { return localStorage.getItem(expectedKey(room)) === "1"; } catch { return false; }
}

/**
 * An admin-made client link with the room's `s` and the therapist's `tk` added to its fragment. Throws
 * TypeError when the text is not an Alcove link with a token.
 * @param {string} text @param {string} s @param {string} tk
 */
export function inviteLink(text, s, tk) {
  const raw = text.trim();
  const hash = raw.indexOf("#");
  if (hash < 0) throw new TypeError("not a session link");
  const params = new URLSearchParams(raw.slice(hash + 1));
  const token = params.get("t");
  if (!token) throw new TypeError("not a session link");
  return `${raw.slice(0, hash)}#t=${token}&s=${s}&tk=${tk}`;
}
