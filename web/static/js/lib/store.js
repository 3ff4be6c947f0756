// What a tab remembers, in sessionStorage only (gone when the tab closes): the room token, the link's E2EE
// fields (s, tk), the resume credential, the display name and the media choice (and, kept by e2ee-flow.js, a
// client's E2EE identity for a reload, dropped with the resume credential). No DOM. One per-browser choice
// (`prefs`) lives in localStorage instead: the "Blur my background" switch, remembered across visits.

const PREFIX = "alcove.";

/** @param {string} key */
function get(key) {
  try { return sessionStorage.getItem(PREFIX + key); } catch { return null; }
}
/** @param {string} key @param {string|null} value */
function set(key, value) {
  try {
    if (value === null || value === undefined) sessionStorage.removeItem(PREFIX + key);
    else sessionStorage.setItem(PREFIX + key, value);
  } catch { /* storage disabled: the tab just won't resume */ }
}

export const store = {
  get token() { return get("token"); },
  set token(v) { set("token", v); },
  get resume() { return get("resume"); },
  set resume(v) { set("resume", v); },
  get name() { return get("name"); },
  set name(v) { set("name", v); },
  /** "full" | "audio" | "none" */
  get mode() { return get("mode") || "full"; },
  set mode(v) { set("mode", v); },
  get camera() { return get("camera"); },
  set camera(v) { set("camera", v); },
  get mic() { return get("mic"); },
  set mic(v) { set("mic", v); },
  /** The link's E2EE fields (`s` link secret, `tk` therapist key hash), b64url; null when the link had none. */
  get linkS() { return get("s"); },
  set linkS(v) { set("s", v); },
  get linkTk() { return get("tk"); },
  set linkTk(v) { set("tk", v); },
  /** The whole link fragment as read (kept in memory and, for reloads, in sessionStorage). */
  get link() { return { t: this.token, s: this.linkS, tk: this.linkTk }; },
  /** Forgets the session (ended, declined, removed, left). Keeps the token so the link's state can be shown. */
  forgetSession() {
    set("resume", null);
    forgetClientE2ee();
  },
};

/** Choices remembered per browser (localStorage), not per tab: only whether to blur the background. */
export const prefs = {
  /** Off unless this browser turned it on. */
  get blur() {
    try { return localStorage.getItem(`${PREFIX}blur`) === "on"; } catch { return false; }
  },
  set blur(on) {
    try { localStorage.setItem(`${PREFIX}blur`, on ? "on" : "off"); } catch { /* storage disabled: not remembered */ }
  },
};

/** Drops the client's E2EE identity kept for a reload (`alcove.e2ee.client.<room>`, e2ee-flow.js). */
export function forgetClientE2ee() {
  try {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const k = sessionStorage.key(i);
      if (k && k.startsWith(`${PREFIX}e2ee.client.`)) sessionStorage.removeItem(k);
    }
  } catch { /* storage disabled: nothing kept */ }
}

/**
 * Reads the token from the link's fragment once (`#t=<token>`), keeps it in sessionStorage and strips the
 * fragment from the address bar and the history. A new token forgets what belonged to the old one.
 * @returns {{token: string|null, malformed: boolean}}
 */
export function takeToken() {
  const hash = location.hash;
  if (hash && hash.length > 1) {
    history.replaceState(null, "", location.pathname + location.search);
    const params = new URLSearchParams(hash.slice(1));
    const token = (params.get("t") || "").trim();
    if (!token || !/^[A-Za-z0-9_\-.~]+$/.test(token)) {
      return { token: null, malformed: true };
    }
    if (token !== store.token) {
      store.token = token;
      store.resume = null;
      store.name = null;
      forgetClientE2ee();
    }
    // E2EE (docs/security.md §3): the link secret and the therapist key hash never leave the browser.
    const b64 = /^[A-Za-z0-9_-]+$/;
    const s = (params.get("s") || "").trim();
    const tk = (params.get("tk") || "").trim();
    store.linkS = s && b64.test(s) ? s : null;
    store.linkTk = tk && b64.test(tk) ? tk : null;
    return { token, malformed: false };
  }
  const token = store.token;
  return { token, malformed: false };
}
