// The therapist's "Invite links" panel (DOM): secure client links made on this device, i.e. an admin-made link
// or fresh client tokens of this room (POST /api/invites) with the room's link secret and this device's
// therapist key hash added to the fragment (lib/e2ee-flow.js inviteLink).

import { t } from "../lib/i18n.js";
import { store } from "../lib/store.js";
import { expectLinkSecret, inviteLink, storedLinkSecret } from "../lib/e2ee-flow.js";
import { $, el, button } from "./dom.js";

/** @typedef {import("./session.js").Session} Session */

/** Copies text to the clipboard (or selects it for a manual copy). @param {string} text @param {HTMLInputElement} field */
async function copyText(text, field) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    field.select();
    document.execCommand?.("copy");
  }
}

/**
 * "Invite links": an admin-made client link + this room's link secret and this device's therapist key.
 * @param {Session} session
 */
export function renderInvitePanel(session) {
  const panel = document.getElementById("invite-panel");
  if (!panel) return;
  const room = session.room && session.room.id;
  const on = !!session.e2ee;
  $("invite-on").hidden = !on;
  $("invite-off").hidden = on;
  const input = /** @type {HTMLInputElement} */ ($("invite-input"));
  const out = /** @type {HTMLInputElement} */ ($("invite-output"));
  const err = $("invite-error");
  const copy = /** @type {HTMLButtonElement} */ ($("invite-copy"));
  $("invite-make").onclick = async () => {
    err.hidden = true;
    out.value = "";
    copy.disabled = true;
    const s = room ? storedLinkSecret(room) : null;
    if (!session.e2ee || !s) return;
    try {
      out.value = inviteLink(input.value, s, await session.e2ee.tk());
      if (room) expectLinkSecret(room); // this room's clients now come with the secret
      copy.disabled = false;
      out.focus();
      out.select();
    } catch {
      err.textContent = t("e2ee.invite.bad");
      err.hidden = false;
    }
  };
  copy.onclick = async () => {
    await copyText(out.value, out);
    $("invite-status").textContent = t("admin.copied");
  };
  // The therapist's key code (the links' tk), for the practice's administration: the admin page and
  // `alcove room create --therapist-key-code` add it to the client links they make, on the admin's side.
  const codeOut = /** @type {HTMLInputElement} */ ($("keycode-output"));
  $("keycode-show").onclick = async () => {
    if (!session.e2ee) return;
    codeOut.value = await session.e2ee.tk();
    $("keycode-box").hidden = false;
    codeOut.focus();
    codeOut.select();
  };
  $("keycode-copy").onclick = async () => {
    await copyText(codeOut.value, codeOut);
    $("invite-status").textContent = t("admin.copied");
  };
  // One secure link per seat, made here: fresh client tokens of this room from the server (POST /api/invites,
  // authorised by this therapist link) with the room secret and this device's key hash added to the fragment.
  const list = $("invite-list");
  $("invite-create").onclick = async () => {
    err.hidden = true;
    list.replaceChildren();
    const s = room ? storedLinkSecret(room) : null;
    if (!session.e2ee || !s || !store.token) return;
    try {
      const res = await fetch("/api/invites", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: store.token }), credentials: "same-origin", referrerPolicy: "no-referrer",
      });
      if (!res.ok) throw new Error(String(res.status));
      const data = await res.json();
      const tk = await session.e2ee.tk();
      if (room) expectLinkSecret(room); // this room's clients now come with the secret
      /** @type {string[]} */ (data.client_links).forEach((link, i) => {
        const secure = inviteLink(link, s, tk);
        const item = el("li", "invite-item");
        const field = /** @type {HTMLInputElement} */ (el("input", "invite-link"));
        field.type = "text";
        field.readOnly = true;
        field.value = secure;
        field.setAttribute("aria-label", t("e2ee.invite.seat", { n: i + 1 }));
        item.append(field, button(t("admin.copy"), t("e2ee.invite.copy.seat", { n: i + 1 }), "secondary small-btn",
          async () => { await copyText(secure, field); $("invite-status").textContent = t("admin.copied"); }));
        list.append(item);
      });
    } catch {
      err.textContent = t("e2ee.invite.failed");
      err.hidden = false;
    }
  };
}
