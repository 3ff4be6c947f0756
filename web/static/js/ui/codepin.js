// Code pinning: the therapist's browser remembers the hashes of the client code it last ran and warns, before the
// therapist's key is unlocked, when the served code changed. The hashes come from this page's own import map and
// integrity attributes, which the browser enforces (a module whose bytes differ from its hash does not run), so
// a server that changes the code must change these hashes too. Trust on first use: the first run pins silently.
// No paths: the page's elements are the only input (the console view passes confirmServedCode to the E2EE flow).

import { t } from "../lib/i18n.js";

const KEY = "alcove.codepin";

/** The integrity of every script, module and stylesheet this page loads (`{url: "sha256-…"}`).
 * @param {Document} doc @returns {Record<string, string>} */
export function servedCode(doc = document) {
  /** @type {Record<string, string>} */
  const found = {};
  const map = doc.querySelector('script[type="importmap"]');
  try {
    const integrity = map ? JSON.parse(map.textContent || "{}").integrity || {} : {};
    for (const [url, hash] of Object.entries(integrity)) found[url] = String(hash);
  } catch { /* an unreadable import map: nothing is pinned from it, so everything shows as changed */ }
  for (const el of doc.querySelectorAll("script[src][integrity], link[href][integrity]")) {
    found[el.getAttribute("src") || el.getAttribute("href") || ""] = el.getAttribute("integrity") || "";
  }
  return found;
}

/** The URLs added, removed or changed between two pins (sorted).
 * @param {Record<string, string>} pinned @param {Record<string, string>} served @returns {string[]} */
export function changedCode(pinned, served) {
  const urls = new Set([...Object.keys(pinned), ...Object.keys(served)]);
  return [...urls].filter((u) => pinned[u] !== served[u]).sort();
}

/** @type {Promise<{status: "first"|"same"|"accepted", changed: string[]}>|null} */
let confirmed = null;

/**
 * Resolves when the served code is the pinned one (or the first one), or once the person accepted the change
 * in a visible warning; until then the caller keeps its key locked.
 * @param {{storage?: Storage, doc?: Document}} [opts]
 */
export function confirmServedCode(opts = {}) {
  if (confirmed) return confirmed;
  const doc = opts.doc ?? document;
  let storage = opts.storage;
  try { storage = storage ?? globalThis.localStorage; } catch { storage = undefined; }
  const served = servedCode(doc);
  const pin = () => { try { storage && storage.setItem(KEY, JSON.stringify(served)); } catch { /* disabled */ } };
  /** @type {Record<string, string>|null} */
  let pinned;
  try { pinned = storage ? JSON.parse(storage.getItem(KEY) || "null") : null; } catch { pinned = {}; }
  if (!pinned) {
    pin();
    return (confirmed = Promise.resolve({ status: "first", changed: [] }));
  }
  const changed = changedCode(pinned, served);
  if (!changed.length) return (confirmed = Promise.resolve({ status: "same", changed }));
  confirmed = new Promise((resolve) => {
    const box = doc.createElement("section");
    box.id = "code-changed";
    box.className = "banner warn code-changed";
    box.setAttribute("role", "alert");
    const text = doc.createElement("div");
    const title = doc.createElement("strong");
    title.textContent = t("codepin.title");
    const body = doc.createElement("p");
    body.textContent = t("codepin.body", { n: changed.length });
    const list = doc.createElement("ul");
    for (const url of changed.slice(0, 12)) {
      const li = doc.createElement("li");
      li.textContent = url;
      list.append(li);
    }
    const button = doc.createElement("button");
    button.type = "button";
    button.textContent = t("codepin.continue");
    button.addEventListener("click", () => {
      pin();
      box.remove();
      resolve({ status: "accepted", changed });
    });
    text.append(title, body, list);
    box.append(text, button);
    (doc.getElementById("main") || doc.body).prepend(box);
    button.focus();
  });
  return confirmed;
}
