// Alcove signaling client (protocol version 1, see docs/protocol.md).
// No DOM here: the UI listens to the events this module dispatches.

/** Every message type of docs/protocol.md, by direction. Kept in line by tests/unit/test_protocol_doc.py. */
export const MESSAGE_TYPES = Object.freeze({
  client: Object.freeze([
    "hello",
    "admit",
    "admit-all",
    "decline",
    "send-to-waiting",
    "remove",
    "extend",
    "end",
    "leave",
    "offer",
    "answer",
    "candidate",
    "key",
    "app",
    "media-state",
  ]),
  server: Object.freeze([
    "welcome",
    "waiting",
    "queue",
    "admitted",
    "roster",
    "ice-servers",
    "therapist",
    "declined",
    "removed",
    "time",
    "warning",
    "session-ended",
    "resume",
    "offer",
    "answer",
    "candidate",
    "key",
    "app",
    "tracks",
    "media-ended",
    "media-state",
    "error",
  ]),
});

export const PROTOCOL_VERSION = 1;

/** The pseudo-pid of the forwarding SFU in `to`/`from` of offer, answer, candidate and tracks (docs/sfu.md). */
export const SFU = "sfu";

/** @typedef {{pid: string, role: string, name: string, connected?: boolean}} RosterEntry a roster participant */

/** Close codes after which reconnecting is pointless (docs/protocol.md, "Error codes"). */
const FINAL_CLOSE_CODES = new Map([
  [4002, "unsupported-version"],
  [4004, "room-not-open"],
  [4005, "room-ended"],
  [4006, "room-full"],
  [4007, "device-in-use"],
  [4010, "declined"],
  [4011, "removed"],
  [4012, "replaced"],
]);

/** Session (HTTP) error codes that no retry can fix. */
const FINAL_SESSION_ERRORS = new Set([
  "token-invalid",
  "token-revoked",
  "room-not-open",
  "room-ended",
  "room-full",
  "device-in-use",
  "declined",
  "removed",
]);

/**
 * @typedef {{id: string, type: string, opens_at: string, starts_at: string, ends_at: string,
 *            host?: string, seats?: number, topology?: string}} RoomInfo
 * @typedef {{ticket: string, role: "therapist"|"client", room: RoomInfo}} SessionGrant
 * @typedef {{code: string, message: string, opens_at?: string}} ApiError
 * @typedef {{name?: string|null, intro?: string|null, check?: "direct"|"relay"|"blocked"|null}} HelloFields
 */

/** An error from POST /api/session or from the socket, with its stable code. */
export class SessionError extends Error {
  /** @param {ApiError} error */
  constructor(error) {
    super(error.message || error.code);
    this.code = error.code;
    this.opensAt = error.opens_at || null;
    this.final = FINAL_SESSION_ERRORS.has(error.code);
  }
}

/**
 * Exchanges a room token for a websocket ticket.
 * @param {string} token
 * @param {string} [base]
 * @returns {Promise<SessionGrant>}
 */
export async function requestSession(token, base = "") {
  let response;
  try {
    response = await fetch(`${base}/api/session`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    const err = new SessionError({ code: "network", message: String(e) });
    err.final = false;
    throw err;
  }
  let body;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok || !body || body.error) {
    const error = body && body.error ? body.error : { code: response.status >= 500 ? "server-error" : "token-invalid", message: `HTTP ${response.status}` };
    const err = new SessionError(error);
    if (response.status >= 500 || response.status === 429) err.final = false;
    throw err;
  }
  return body;
}

/**
 * The signaling connection. Dispatches one `CustomEvent` per server message, named after its type, with the
 * message as `detail`; plus these lifecycle events:
 *  - `open`          the socket is up and `hello` was sent
 *  - `reconnecting`  the socket dropped; detail: {attempt, delay}
 *  - `credential`    a new resume credential; detail: {credential}
 *  - `closed`        final: no more reconnects; detail: {code, reason, error}
 *
 * A dropped socket is reconnected with exponential backoff: the token is posted again for a new ticket and
 * `hello` carries the stored resume credential, so an admitted participant comes back without admission.
 */
export class Signaling extends EventTarget {
  /**
   * @param {{token: string, resume?: string|null, base?: string,
   *          wsUrl?: string, maxDelayMs?: number}} options
   */
  constructor(options) {
    super();
    this.token = options.token;
    /** @type {string|null} */
    this.resume = options.resume || null;
    this.base = options.base || "";
    this.wsUrl = options.wsUrl || null;
    this.maxDelayMs = options.maxDelayMs || 8000;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {HelloFields} */
    this.hello = {};
    /** @type {SessionGrant|null} */
    this.grant = null;
    /** @type {any} */
    this.welcome = null;
    this.attempt = 0;
    this.finished = false;
    this.connected = false;
    /** @type {number|null} */
    this._timer = null;
    /** @type {any} */
    this._lastError = null;
    /** @type {string|null} */
    this._finishAfterClose = null;
    this._closedSent = false;
    this._onOffline = () => { if (this.ws) this._drop(); };
    this._onOnline = () => {
      // The network is back: try now instead of waiting for the backoff timer.
      if (this.finished || this.connected || this.ws) return;
      if (this._timer !== null) { clearTimeout(this._timer); this._timer = null; }
      this._schedule(0);
    };
  }

  /**
   * Posts the token, opens the socket and sends `hello`. Resolves with the `welcome` message; rejects with a
   * SessionError when the token is refused (for the first connection only: later drops reconnect by themselves).
   * @param {HelloFields} hello
   * @returns {Promise<any>}
   */
  connect(hello) {
    this.hello = { ...hello };
    // The page's online/offline events (globalThis is the window in a page; Node has no such events).
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("offline", this._onOffline);
      globalThis.addEventListener("online", this._onOnline);
    }
    return new Promise((resolve, reject) => {
      /** @param {Event} ev */
      const onWelcome = (ev) => { cleanup(); resolve(/** @type {CustomEvent} */ (ev).detail); };
      /** @param {Event} ev */
      const onClosed = (ev) => {
        cleanup();
        const d = /** @type {CustomEvent} */ (ev).detail;
        reject(d.error || new SessionError({ code: d.reason || "closed", message: "connection closed" }));
      };
      const cleanup = () => {
        this.removeEventListener("welcome", onWelcome);
        this.removeEventListener("closed", onClosed);
      };
      this.addEventListener("welcome", onWelcome);
      this.addEventListener("closed", onClosed);
      this._open(true);
    });
  }

  /**
   * @param {boolean} first
   */
  async _open(first) {
    if (this.finished) return;
    let grant;
    try {
      grant = await requestSession(this.token, this.base);
    } catch (e) {
      const err = /** @type {SessionError} */ (e);
      // After a reload the old socket may still hold the token for a moment: retry with the resume credential.
      const retryable = err.code === "device-in-use" && this.resume && this.attempt < 8;
      if (err.final && !retryable) {
        this._finish(0, err.code, err);
      } else {
        this._schedule();
      }
      return;
    }
    if (this.finished) return;
    this.grant = grant;
    const url = this.wsUrl || `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      ws.send(JSON.stringify({
        type: "hello",
        v: PROTOCOL_VERSION,
        ticket: grant.ticket,
        name: this.hello.name ?? null,
        resume: this.resume,
        intro: this.hello.intro ?? null,
        check: this.hello.check ?? null,
      }));
      this.dispatchEvent(new CustomEvent("open", { detail: { first } }));
    });
    ws.addEventListener("message", (ev) => {
      if (this.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(typeof ev.data === "string" ? ev.data : "");
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== "string") return;
      this._handle(msg);
    });
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.connected = false;
      const final = FINAL_CLOSE_CODES.get(ev.code);
      if (final) {
        this._finish(ev.code, final, new SessionError({ code: final, message: ev.reason || final }));
      } else if (this._lastError && FINAL_SESSION_ERRORS.has(this._lastError.code)) {
        this._finish(ev.code, this._lastError.code, new SessionError(this._lastError));
      } else {
        this._schedule();
      }
    });
  }

  /** @param {any} msg */
  _handle(msg) {
    switch (msg.type) {
      case "welcome":
        this.connected = true;
        this.attempt = 0;
        this.welcome = msg;
        this._lastError = null;
        if (msg.resume) this._setResume(msg.resume);
        break;
      case "resume":
        if (msg.credential) this._setResume(msg.credential);
        break;
      case "error":
        this._lastError = msg;
        break;
      case "session-ended":
        this._finishAfterClose = "session-ended";
        break;
      case "declined":
        this._finishAfterClose = "declined";
        break;
      case "removed":
        this._finishAfterClose = "removed";
        break;
      default:
        break;
    }
    if (this._finishAfterClose) this.finished = true;
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
    if (this._finishAfterClose) {
      const reason = this._finishAfterClose;
      this._finishAfterClose = null;
      this._finish(0, reason, null);
    }
  }

  /** @param {string} credential */
  _setResume(credential) {
    this.resume = credential;
    this.dispatchEvent(new CustomEvent("credential", { detail: { credential } }));
  }

  /** @param {number} [delay] */
  _schedule(delay) {
    if (this.finished || this._timer !== null) return;
    this.attempt += 1;
    const base = Math.min(this.maxDelayMs, 500 * 2 ** Math.min(this.attempt - 1, 6));
    const wait = delay ?? Math.round(base * (0.75 + Math.random() * 0.5));
    this.dispatchEvent(new CustomEvent("reconnecting", { detail: { attempt: this.attempt, delay: wait } }));
    this._timer = setTimeout(() => {
      this._timer = null;
      this._open(false);
    }, wait);
  }

  /** Force a reconnect now (e.g. when the network comes back). */
  _drop() {
    const ws = this.ws;
    this.ws = null;
    this.connected = false;
    if (ws) try { ws.close(); } catch { /* ignore */ }
    this._schedule(250);
  }

  /**
   * @param {number} code
   * @param {string} reason
   * @param {Error|null} error
   */
  _finish(code, reason, error) {
    const already = this._closedSent;
    this.finished = true;
    this._closedSent = true;
    if (this._timer !== null) { clearTimeout(this._timer); this._timer = null; }
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("offline", this._onOffline);
      globalThis.removeEventListener("online", this._onOnline);
    }
    if (!already) this.dispatchEvent(new CustomEvent("closed", { detail: { code, reason, error } }));
  }

  /**
   * Sends one typed message. Returns false when the socket is not open (the message is dropped: signaling
   * messages are not queued, negotiation restarts after a reconnect).
   * @param {string} type
   * @param {Record<string, any>} [fields]
   */
  send(type, fields = {}) {
    if (!MESSAGE_TYPES.client.includes(type)) throw new Error(`unknown message type ${type}`);
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({ type, ...fields }));
    return true;
  }

  // Typed helpers for the client → server messages.
  /** @param {string} pid @param {string|null} [grant] */
  admit(pid, grant = null) { return this.send("admit", { pid, grant }); }
  admitAll() { return this.send("admit-all"); }
  /** @param {string} pid @param {string} [message] @param {boolean} [block] the link never opens again */
  decline(pid, message, block = false) { return this.send("decline", message ? { pid, message, block } : { pid, block }); }
  /** @param {string} pid */
  sendToWaiting(pid) { return this.send("send-to-waiting", { pid }); }
  /** @param {string} pid @param {string} [message] @param {boolean} [block] the link never opens again */
  remove(pid, message, block = false) { return this.send("remove", message ? { pid, message, block } : { pid, block }); }
  /** @param {5|10} minutes */
  extend(minutes) { return this.send("extend", { minutes }); }
  end() { return this.send("end"); }
  /** @param {string} to @param {string} sdp */
  offer(to, sdp) { return this.send("offer", { to, sdp, sig: null }); }
  /** @param {string} to @param {string} sdp */
  answer(to, sdp) { return this.send("answer", { to, sdp, sig: null }); }
  /**
   * A trickled candidate. The end-of-candidates marker is not sent: browsers do not need it.
   * @param {string} to @param {RTCIceCandidateInit} c
   */
  candidate(to, c) {
    if (!c || !c.candidate) return false;
    return this.send("candidate", {
      to,
      candidate: c.candidate,
      sdp_mid: c.sdpMid ?? "0",
      sdp_mline_index: c.sdpMLineIndex ?? 0,
    });
  }
  /** @param {string|null} to @param {string} data */
  key(to, data) { return this.send("key", { to, data }); }
  /** An end-to-end encrypted app message (lib/e2ee-flow.js makes `data`). @param {string|null} to @param {string} data */
  app(to, data) { return this.send("app", { to, data }); }

  /** Leaves on purpose: no grace, no reconnect. */
  leave() {
    this.send("leave");
    this.close();
  }

  /** Closes without reconnecting. */
  close() {
    const ws = this.ws;
    this.ws = null;
    this._finish(1000, "closed", null);
    if (ws) try { ws.close(1000); } catch { /* ignore */ }
  }
}
