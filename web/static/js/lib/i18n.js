// Every string of the user interface, in one catalog. Add a language by adding a catalog with the same keys.
// Dates and times are shown with Intl.DateTimeFormat in the user's own time zone.

/** @type {Record<string, Record<string, string>>} */
export const CATALOG = {
  en: {
    "app.name": "Alcove",
    "app.skip": "Skip to content",
    "app.tagline": "Private video sessions for therapy practices.",
    "landing.title": "Alcove",
    "landing.body": "Your therapist sends you a personal link for each session. Open that link to join: no account and no installation needed.",
    "landing.admin": "Practice administration",

    "loading": "Preparing your session…",

    "join.heading": "Join your session",
    "join.when.today": "Your session with {host} is today at {start}–{end}.",
    "join.when.other": "Your session with {host} is on {date} at {start}–{end}.",
    "join.when.therapist": "You are hosting a {type} session today at {start}–{end}.",
    "join.when.therapist.other": "You are hosting a {type} session on {date} at {start}–{end}.",
    "join.host.default": "your therapist",
    "join.name": "Your name",
    "join.name.hint": "Your therapist sees this name while you wait.",
    "join.name.required": "Please enter your name.",
    "join.camera": "Camera",
    "join.microphone": "Microphone",
    "join.device.none": "None",
    "join.level": "Microphone level",
    "join.preview": "Your camera preview",
    "join.submit": "Join",
    "join.connecting": "Connecting…",
    "join.privacy": "Your picture and sound go only to the people your therapist lets into this session. Nothing is recorded.",
    "join.media.denied.title": "Camera and microphone are blocked",
    "join.media.denied.body": "Your browser did not allow access to the camera or microphone. You can allow it in the browser's site settings and try again, or join without them.",
    "join.media.none.title": "No camera or microphone found",
    "join.media.none.body": "We could not find a camera or microphone on this device. You can still join, and your therapist will not see or hear you until you connect one.",
    "join.media.audio-only": "Join with audio only",
    "join.media.neither": "Join without camera and microphone",
    "join.media.retry": "Try again",
    "join.media.mode.audio": "You will join with audio only.",
    "join.media.mode.none": "You will join without camera and microphone.",

    "error.title.token-invalid": "This link does not work",
    "error.body.token-invalid": "The link may be incomplete or mistyped. Please open it again from the message you received, or ask your therapist for a new one.",
    "error.title.missing": "This link does not work",
    "error.body.missing": "The link is incomplete. Please open it again from the message you received.",
    "error.title.token-revoked": "This link is no longer valid",
    "error.body.token-revoked": "Your therapist has withdrawn this link. Please contact them if you expected to join a session.",
    "error.title.room-not-open": "This session opens at {time}",
    "error.title.room-not-open.other": "This session opens on {date} at {time}",
    "error.body.room-not-open": "You are early. Please come back to this link then; this page will not open the session by itself.",
    "error.title.room-ended": "This session has ended",
    "error.body.room-ended": "This link can no longer be used. Thank you for joining.",
    "error.title.room-full": "This session is full",
    "error.body.room-full": "Every seat of this session is taken. Please contact your therapist.",
    "error.title.device-in-use": "This link is open somewhere else",
    "error.body.device-in-use": "The link is already in use in another window or on another device. Close it there, then reload this page.",
    "error.title.generic": "Something went wrong",
    "error.body.generic": "We could not connect you. Please check your connection and reload this page.",
    "error.reload": "Reload",

    "waiting.heading": "Waiting for your therapist",
    "waiting.body": "Your therapist will let you in shortly. You can keep this page open.",
    "waiting.therapist.present": "Your therapist is here.",
    "waiting.therapist.absent": "Your therapist has not arrived yet.",
    "waiting.therapist.reconnecting": "Your therapist is reconnecting.",
    "waiting.position": "You are number {position} in the queue.",
    "waiting.position.first": "You are next.",
    "waiting.sent-back": "You are back in the waiting room.",
    "waiting.therapist-away": "Your therapist's connection dropped. You are back in the waiting room.",
    "waiting.session-time": "Session time: {start}–{end}",

    "session.heading": "Session",
    "session.clock": "{remaining} left",
    "session.clock.label": "Time remaining",
    "session.clock.over": "Time is up",
    "session.minutes": "{n} min",
    "session.minutes.one": "1 min",
    "session.warning": "{n} minutes left in this session.",
    "session.warning.one": "1 minute left in this session.",
    "session.extended": "The session was extended by {n} minutes. It now ends at {end}.",
    "session.therapist.reconnecting": "Your therapist is reconnecting. Please stay on this page.",
    "session.therapist.back": "Your therapist is back.",
    "session.reconnecting": "Connection lost. Reconnecting…",
    "session.reconnected": "You are connected again.",
    "session.you": "You",
    "session.you.named": "{name} (you)",
    "session.muted": "Muted",
    "session.camera.off.label": "Camera is off",
    "session.mute": "Mute",
    "session.unmute": "Unmute",
    "session.camera.off": "Camera off",
    "session.camera.on": "Camera on",
    "session.leave": "Leave",
    "session.alone": "Nobody else has joined yet.",
    "session.sound": "Turn on sound",
    "session.joined": "{name} joined.",
    "session.left": "{name} left.",
    "session.toolbar": "Call controls",
    "session.participants": "Participants",

    "ended.title": "Session ended",
    "ended.body.time": "The session time is over. Thank you.",
    "ended.body.therapist": "Your therapist ended the session. Thank you.",
    "ended.body.admin": "The session was closed. Thank you.",
    "ended.body.left": "You left the session. You can close this page.",
    "ended.declined.title": "Your therapist could not let you in",
    "ended.declined.body": "Please contact your therapist if you have questions.",
    "ended.declined.message": "Message from your therapist: “{message}”",
    "ended.removed.title": "You were removed from the session",
    "ended.removed.body": "Please contact your therapist if you have questions.",
    "ended.replaced.title": "This session continues in another window",
    "ended.replaced.body": "You opened this link again elsewhere, so this page has stopped.",
    "ended.rejoin": "Rejoin",

    "console.waiting.heading": "Waiting room",
    "console.waiting.empty": "Nobody is waiting.",
    "console.waiting.since": "waiting since {time}",
    "console.waiting.offline": "connection lost",
    "console.admit": "Admit {name}",
    "console.admit.short": "Admit",
    "console.decline": "Decline {name}",
    "console.decline.short": "Decline",
    "console.admit-all": "Admit all",
    "console.participants.heading": "In the session",
    "console.participants.empty": "No client has been admitted yet.",
    "console.send-back": "Send {name} to waiting room",
    "console.send-back.short": "To waiting room",
    "console.remove": "Remove {name}",
    "console.remove.short": "Remove",
    "console.offline": "reconnecting",
    "console.extend5": "Extend 5 min",
    "console.extend10": "Extend 10 min",
    "console.end": "End session",
    "console.end.confirm.text": "End the session for everyone now?",
    "console.end.confirm": "Confirm",
    "console.end.cancel": "Cancel",
    "console.lock.open": "Room open: you can admit clients.",
    "console.lock.locked": "Room locked while you reconnect.",
    "console.title.waiting": "({n}) waiting – Alcove",
    "console.title": "Alcove",
    "console.arrived": "{name} is waiting.",
    "console.seats": "Clients admitted: {admitted} of {seats}",
    "console.error": "Could not do that: {message}",
    "console.heading": "Session console",

    "e2ee.unsupported.title": "End-to-end encryption is not available",
    "e2ee.unsupported.body": "This browser cannot encrypt video end to end; please use a current Chrome, Edge, Firefox or Safari.",
    "e2ee.failed.title": "Security check failed",
    "e2ee.failed.body": "We could not confirm that this connection goes only to your therapist, so we stopped before any picture or sound was sent. Please tell your therapist and try the link again later.",
    "e2ee.failed.peer": "Security check failed for {name}: not connected. Ask them to rejoin.",
    "e2ee.status.on": "End-to-end encrypted · epoch {epoch}",
    "e2ee.status.starting": "Setting up end-to-end encryption…",
    "e2ee.status.off": "Not end-to-end encrypted",
    "e2ee.badge.ok": "Encrypted",
    "e2ee.badge.verifying": "Verifying",
    "e2ee.badge.failing": "Can't decrypt — ask them to rejoin",
    "e2ee.badge.security": "Security check failed",
    "e2ee.badge.nokey": "No key — can't see or hear",
    "e2ee.sas.title": "Safety code",
    "e2ee.sas.explain": "Compare this code with your therapist. If it is the same, nobody is listening in.",
    "e2ee.sas.hide": "Hide",
    "e2ee.sas.label": "Safety code:",
    "e2ee.sas.waiting": "Safety code: waiting…",
    "e2ee.sas.mark": "Mark verified",
    "e2ee.sas.mark.named": "Mark {name} verified",
    "e2ee.sas.verified": "Verified ✓",
    "e2ee.intro.checking": "Checking…",
    "e2ee.intro.ok": "Came through your invite link",
    "e2ee.intro.no-link": "Did not come through your invite link: compare the safety code",
    "e2ee.intro.bad": "Security check failed: cannot admit",
    "e2ee.intro.none": "Their app cannot encrypt end to end: cannot admit",
    "e2ee.invite.heading": "Invite links",
    "e2ee.invite.create.hint": "Secure links for this session, one per client seat: they carry this room's secret and your key, so each client can check it is really you.",
    "e2ee.invite.create": "Create secure invite links",
    "e2ee.invite.seat": "Secure invite link for seat {n}",
    "e2ee.invite.copy.seat": "Copy the invite link for seat {n}",
    "e2ee.invite.failed": "The invite links could not be made. Try again.",
    "e2ee.invite.hint": "Or paste a client link from your practice's administration: you get it back with this room's secret and your key added.",
    "e2ee.invite.paste": "Client link to secure",
    "e2ee.invite.make": "Add encryption",
    "e2ee.invite.result": "Secure invite link",
    "e2ee.invite.bad": "That is not a session link.",
    "e2ee.invite.off": "This browser cannot encrypt video end to end, so this session is not end-to-end encrypted.",

    "type.individual": "individual",
    "type.couple": "couple",
    "type.family": "family",
    "type.group": "group",

    "admin.title": "Alcove administration",
    "admin.key": "Admin key",
    "admin.key.hint": "Kept in this tab only, never saved to disk.",
    "admin.key.forget": "Forget key",
    "admin.create.heading": "Create a session",
    "admin.type": "Session type",
    "admin.type.individual": "Individual",
    "admin.type.couple": "Couple",
    "admin.type.family": "Family",
    "admin.type.group": "Group",
    "admin.start": "Start",
    "admin.start.now": "Now",
    "admin.start.at": "At a set time",
    "admin.start.time": "Start time",
    "admin.duration": "Duration (minutes)",
    "admin.clients": "Client seats",
    "admin.host": "Therapist name",
    "admin.create": "Create session",
    "admin.created": "Session created: {start}–{end}.",
    "admin.links.therapist": "Therapist link",
    "admin.links.client": "Client link {n}",
    "admin.copy": "Copy",
    "admin.copied": "Copied.",
    "admin.end": "End this session",
    "admin.ended": "The session was ended.",
    "admin.error": "Could not create the session: {message}",
    "admin.error.key": "The admin key was refused.",
  },
};

/** @type {string} */
let locale = "en";

/** Picks the best catalog for the browser's languages. */
export function detectLocale() {
  const langs = typeof navigator !== "undefined" ? navigator.languages || [navigator.language] : [];
  for (const l of langs) {
    const short = String(l || "").toLowerCase().split("-")[0];
    if (CATALOG[short]) return short;
  }
  return "en";
}

/** @param {string} l */
export function setLocale(l) {
  locale = CATALOG[l] ? l : "en";
  if (typeof document !== "undefined") document.documentElement.lang = locale;
}

export function getLocale() { return locale; }

/**
 * Translates `key`, replacing `{param}` placeholders.
 * @param {string} key
 * @param {Record<string, string|number>} [params]
 */
export function t(key, params = {}) {
  const text = (CATALOG[locale] && CATALOG[locale][key]) ?? CATALOG.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** Formatting locale: the UI language, with the browser's regional preferences when they match. */
function fmtLocale() {
  const nav = typeof navigator !== "undefined" ? navigator.language : "en";
  return nav && nav.toLowerCase().startsWith(locale) ? nav : locale;
}

/** @param {string|Date} when */
export function formatTime(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { hour: "2-digit", minute: "2-digit" }).format(d);
}

/** @param {string|Date} when */
export function formatDate(when) {
  const d = when instanceof Date ? when : new Date(when);
  return new Intl.DateTimeFormat(fmtLocale(), { weekday: "long", day: "numeric", month: "long" }).format(d);
}

/** @param {string|Date} when */
export function isToday(when) {
  const d = when instanceof Date ? when : new Date(when);
  const n = new Date();
  return d.getFullYear() === n.getFullYear() && d.getMonth() === n.getMonth() && d.getDate() === n.getDate();
}

/**
 * "mm:ss" or "h:mm:ss" for a duration in milliseconds.
 * @param {number} ms
 */
export function formatDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(sec).padStart(2, "0")}`;
}

/** Fills every element with data-i18n (text) or data-i18n-<attr> (attributes) under `root`. */
export function applyTranslations(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => {
    el.textContent = t(/** @type {HTMLElement} */ (el).dataset.i18n || "");
  });
  for (const attr of ["aria-label", "placeholder", "title"]) {
    root.querySelectorAll(`[data-i18n-${attr}]`).forEach((el) => {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`) || ""));
    });
  }
}

setLocale(detectLocale());
