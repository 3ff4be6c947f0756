// The session's video tiles (DOM): one per remote participant in the roster's order and the self-view last;
// one remote peer fills the stage with the self-view floating, more share a grid. The active speaker is outlined.
// The floating self-view can be moved to another corner: dragged (mouse, touch) or with its own button.

import { t } from "../lib/i18n.js";
import { $ } from "./dom.js";

/** @typedef {import("../lib/protocol.js").RosterEntry} RosterEntry */

const SELF = "self";
/** The floating self-view's corners, in the order its button moves it. */
const CORNERS = ["br", "bl", "tl", "tr"];
/** The self-view's key in `TileGrid.tiles` (and for `setLink`). */
export const SELF_TILE = SELF;
/** Calm avatar colours (white initials on each are above 4.5:1), chosen by the person's name. */
const AVATAR_COLOURS = 6;

/** Up to two initials of a name ("Ana Maria Pop" → "AP"), by whole characters. @param {string} name */
export function initials(name) {
  const words = name.trim().split(/\s+/).filter((w) => /[\p{L}\p{N}]/u.test(w));
  if (!words.length) return "";
  const first = (/** @type {string} */ w) => ([...w.replace(/^[^\p{L}\p{N}]+/u, "")][0] || "").toLocaleUpperCase();
  return words.length === 1 ? first(words[0]) : first(words[0]) + first(words[words.length - 1]);
}

/** A stable colour index for a name. @param {string} name */
function colourOf(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + /** @type {number} */ (c.codePointAt(0))) >>> 0;
  return h % AVATAR_COLOURS;
}

/**
 * A remote tile's avatar: the person's initials on a calm colour (shown whenever there is no picture).
 * @param {HTMLElement} tile @param {string} name
 */
export function paintAvatar(tile, name) {
  const avatar = /** @type {HTMLElement|null} */ (tile.querySelector(".avatar"));
  if (!avatar || tile.classList.contains("self")) return;
  const text = initials(name);
  // drawn by CSS from the attribute: a picture of the name (aria-hidden), not text of the page
  avatar.dataset.initials = text;
  avatar.classList.toggle("initials", text !== "");
  avatar.dataset.colour = String(colourOf(name));
}

/**
 * Plays a video element; when the browser refuses sound without a user gesture, it plays muted and offers a
 * "Turn on sound" button.
 * @param {HTMLVideoElement} video
 */
function playWithSound(video) {
  video.play().catch(() => {
    video.muted = true;
    video.play().catch(() => {});
    const b = $("btn-sound");
    b.hidden = false;
    b.onclick = () => {
      document.querySelectorAll("video[data-remote]").forEach((v) => {
        const el = /** @type {HTMLVideoElement} */ (v);
        el.muted = false;
        el.play().catch(() => {});
      });
      b.hidden = true;
    };
  });
}

/**
 * Where a tile's overlays go, so that none covers another however small the tile: one column above the name
 * (css: .tile-over) of "start" (top left: the encryption and "not verified" badges), "end" (top right: the
 * connection and "offline" / "muted" badges), "middle" (the "video paused" note) and "bottom" (a raised hand and
 * the person's own muted / camera-off state). A tile made elsewhere without slots gets the badge itself.
 * @param {HTMLElement} tile @param {"start"|"end"|"middle"|"bottom"} where
 * @returns {HTMLElement}
 */
export function tileSlot(tile, where) {
  return /** @type {HTMLElement|null} */ (tile.querySelector(`.tile-${where}`)) || tile;
}

/**
 * @param {string} key
 * @param {string} label
 * @param {boolean} self
 */
function makeTile(key, label, self) {
  const tile = document.createElement("figure");
  tile.className = self ? "tile self" : "tile";
  tile.dataset.pid = key;
  // A figure named by its caption's text: its implicit role (axe accepts no other role on <figure>).
  tile.setAttribute("aria-label", label);
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  if (self) {
    video.muted = true;
    video.dataset.self = "";
  } else {
    video.dataset.remote = key;
  }
  video.setAttribute("aria-hidden", "true");
  const off = document.createElement("div");
  off.className = "tile-off";
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  off.append(avatar);
  const name = document.createElement("figcaption");
  name.className = "name";
  name.textContent = label;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  const slot = (/** @type {string} */ cls) => {
    const div = document.createElement("div");
    div.className = cls;
    return div;
  };
  const over = slot("tile-over");
  const top = slot("tile-top");
  const end = slot("tile-end");
  end.append(badge);
  top.append(slot("tile-start"), end);
  const bottom = slot("tile-bottom");
  over.append(top, slot("tile-middle"), bottom);
  tile.append(off, video, over, name); // the caption last (a figure's caption is its first or last child)
  if (!self) {
    // The person's own muted / camera-off state (their signed, encrypted "state" message), above the name.
    const state = document.createElement("span");
    state.className = "remote-state";
    bottom.append(state);
    paintAvatar(tile, label);
  }
  return tile;
}

/**
 * Lets the floating self-view be dragged; on release it settles in the nearest corner of the stage.
 * @param {HTMLElement} tile
 */
function dragToCorner(tile) {
  /** @type {{id: number, x: number, y: number}|null} */
  let drag = null;
  tile.addEventListener("pointerdown", (ev) => {
    const box = tile.parentElement;
    if (!box || !box.classList.contains("with-pip") || (ev.target instanceof Element && ev.target.closest("button"))) return;
    drag = { id: ev.pointerId, x: ev.clientX, y: ev.clientY };
    tile.setPointerCapture(ev.pointerId);
    tile.classList.add("dragging");
  });
  tile.addEventListener("pointermove", (ev) => {
    if (!drag || ev.pointerId !== drag.id) return;
    tile.style.translate = `${ev.clientX - drag.x}px ${ev.clientY - drag.y}px`;
  });
  /** @param {PointerEvent} ev */
  const drop = (ev) => {
    if (!drag || ev.pointerId !== drag.id) return;
    drag = null;
    tile.classList.remove("dragging");
    const box = tile.parentElement;
    if (box) {
      const r = tile.getBoundingClientRect();
      const b = box.getBoundingClientRect();
      const right = r.left + r.width / 2 > b.left + b.width / 2;
      const bottom = r.top + r.height / 2 > b.top + b.height / 2;
      tile.dataset.corner = (bottom ? "b" : "t") + (right ? "r" : "l");
    }
    tile.style.translate = "";
  };
  tile.addEventListener("pointerup", drop);
  tile.addEventListener("pointercancel", drop);
}

/** @param {HTMLElement} tile */
const videoOf = (tile) => /** @type {HTMLVideoElement} */ (tile.querySelector("video"));
/** @param {HTMLElement} tile */
const badgeOf = (tile) => /** @type {HTMLElement} */ (tile.querySelector(".badge"));

export class TileGrid {
  constructor() {
    /** @type {Map<string, HTMLElement>} pid (or "self") -> tile */
    this.tiles = new Map();
    /** What each remote participant said of their own microphone and camera. @type {Map<string, {mic: boolean, cam: boolean}>} */
    this.states = new Map();
    /** A screen share fills the stage (ui/share-view.js): every tile is small, none floats. */
    this.sharing = false;
  }

  /** @param {boolean} on */
  setSharing(on) {
    if (on === this.sharing) return;
    this.sharing = on;
    this._layout();
  }

  /** The remote tiles: [pid, tile]. */
  *remote() {
    for (const entry of this.tiles) if (entry[0] !== SELF) yield entry;
  }

  /**
   * The self-view (once).
   * @param {string|null} name @param {MediaStream|null} stream
   */
  ensureSelf(name, stream) {
    if (this.tiles.has(SELF)) return;
    const label = name ? t("session.you.named", { name }) : t("session.you");
    const tile = makeTile(SELF, label, true);
    const video = videoOf(tile);
    if (stream && stream.getVideoTracks().length) {
      video.srcObject = stream;
      video.play().catch(() => {});
    } else {
      video.hidden = true;
    }
    const move = document.createElement("button");
    move.type = "button";
    move.className = "move-self";
    move.setAttribute("aria-label", t("session.self.move"));
    move.addEventListener("click", () => {
      const at = CORNERS.indexOf(tile.dataset.corner || "br");
      tile.dataset.corner = CORNERS[(at + 1) % CORNERS.length];
    });
    tile.dataset.corner = "br";
    tile.insertBefore(move, tile.querySelector(".name"));
    dragToCorner(tile);
    this.tiles.set(SELF, tile);
    $("tiles").append(tile);
    this._layout();
  }

  /** The labels again, in the language just chosen. @param {string|null} name */
  relabel(name) {
    const self = this.tiles.get(SELF);
    if (self) {
      const label = name ? t("session.you.named", { name }) : t("session.you");
      self.setAttribute("aria-label", label);
      /** @type {HTMLElement} */ (self.querySelector(".name")).textContent = label;
      badgeOf(self).textContent = t("session.muted");
      self.querySelector(".move-self")?.setAttribute("aria-label", t("session.self.move"));
    }
    for (const [pid, tile] of this.remote()) {
      badgeOf(tile).textContent = t("console.offline");
      this._paintState(pid, tile);
    }
    for (const [, tile] of this.tiles) {
      const q = /** @type {HTMLElement|null} */ (tile.querySelector(".quality"));
      if (q && q.dataset.quality) q.textContent = t(`quality.${q.dataset.quality}`);
      const note = tile.querySelector(".paused-note");
      if (note) note.textContent = t("quality.paused.peer");
    }
  }

  /**
   * The self-view's camera picture and "muted" badge.
   * @param {MediaStream|null} stream @param {boolean} audioOn @param {boolean} videoOn
   */
  updateSelf(stream, audioOn, videoOn) {
    const tile = this.tiles.get(SELF);
    if (!tile) return;
    const hasVideo = !!(stream && stream.getVideoTracks().length);
    videoOf(tile).hidden = !(hasVideo && videoOn);
    const badge = badgeOf(tile);
    const hasAudio = !!(stream && stream.getAudioTracks().length);
    badge.hidden = hasAudio && audioOn;
    badge.textContent = t("session.muted");
  }

  /**
   * Follows the roster: a tile per other participant (an "offline" badge when its connection is down), in the
   * roster's order (arrivals and departures are told by ui/presence.js).
   * @param {RosterEntry[]} others
   */
  setRoster(others) {
    const now = new Set(others.map((p) => p.pid));
    for (const [key] of [...this.remote()]) if (!now.has(key)) this.remove(key);
    for (const key of [...this.states.keys()]) if (!now.has(key)) this.states.delete(key);
    for (const p of others) {
      let tile = this.tiles.get(p.pid);
      if (!tile) {
        tile = makeTile(p.pid, p.name, false);
        videoOf(tile).hidden = true;
        this.tiles.set(p.pid, tile);
        $("tiles").insertBefore(tile, this.tiles.get(SELF) || null);
        this._paintState(p.pid, tile);
      }
      /** @type {HTMLElement} */ (tile.querySelector(".name")).textContent = p.name;
      tile.setAttribute("aria-label", p.name);
      paintAvatar(tile, p.name);
      const badge = badgeOf(tile);
      badge.hidden = p.connected !== false;
      badge.textContent = t("console.offline");
    }
    // Grid order: the roster's order (therapist first), the self-view last.
    const box = $("tiles");
    for (const p of others) { const tile = this.tiles.get(p.pid); if (tile) box.append(tile); }
    const selfTile = this.tiles.get(SELF);
    if (selfTile) box.append(selfTile);
    this._layout();
  }

  /** A remote participant's media. @param {string} pid @param {MediaStream} stream */
  showStream(pid, stream) {
    const tile = this.tiles.get(pid);
    if (!tile) return;
    const video = videoOf(tile);
    if (video.srcObject !== stream) video.srcObject = stream;
    tile.dataset.hasVideo = String(stream.getVideoTracks().length > 0);
    this._paintState(pid, tile);
    playWithSound(video);
  }

  /**
   * A remote participant's own microphone and camera state (from their signed, encrypted message; the media
   * is never guessed from). Unknown pids are kept for their tile.
   * @param {string} pid @param {{mic: boolean, cam: boolean}} state
   */
  setState(pid, state) {
    if (pid === SELF) return;
    this.states.set(pid, { mic: state.mic, cam: state.cam });
    const tile = this.tiles.get(pid);
    if (tile) this._paintState(pid, tile);
  }

  /** The tile's "Muted" / "Camera off" badges, and the avatar instead of the picture when the camera is off. */
  _paintState(/** @type {string} */ pid, /** @type {HTMLElement} */ tile) {
    const state = this.states.get(pid);
    const box = /** @type {HTMLElement|null} */ (tile.querySelector(".remote-state"));
    if (box) {
      box.replaceChildren();
      for (const [on, key, cls] of /** @type {[boolean, string, string][]} */ ([
        [state ? !state.mic : false, "session.remote.muted", "mic-off"],
        [state ? !state.cam : false, "session.remote.camera-off", "cam-off"],
      ])) {
        if (!on) continue;
        const b = document.createElement("span");
        b.className = `state-badge ${cls}`;
        b.textContent = t(key);
        box.append(b);
      }
      box.hidden = !box.childElementCount;
    }
    tile.dataset.mic = state ? (state.mic ? "on" : "off") : "";
    tile.dataset.cam = state ? (state.cam ? "on" : "off") : "";
    videoOf(tile).hidden = tile.dataset.hasVideo !== "true" || (!!state && !state.cam);
  }

  /** @param {string} pid */
  remove(pid) {
    const tile = this.tiles.get(pid);
    if (!tile || pid === SELF) return;
    const video = /** @type {HTMLVideoElement|null} */ (tile.querySelector("video"));
    if (video) video.srcObject = null;
    tile.remove();
    this.tiles.delete(pid);
    this._layout();
  }

  clearRemote() {
    this.states.clear();
    for (const [key] of [...this.remote()]) this.remove(key);
  }

  /** Outlines the loudest participant. @param {Record<string, number>} levels */
  setLevels(levels) {
    let best = null;
    let bestLevel = 0.02;
    for (const [pid, level] of Object.entries(levels)) {
      if (level > bestLevel) { best = pid; bestLevel = level; }
    }
    for (const [key, tile] of this.tiles) tile.classList.toggle("speaking", key === best);
  }

  /**
   * The small connection indicator of a tile and its "video paused to keep the sound clear" note
   * (ui/quality-view.js). Unknown pids are ignored.
   * @param {string} pid a participant's pid, or SELF_TILE
   * @param {{quality?: "good"|"weak"|"reconnecting", paused?: boolean}} link
   */
  setLink(pid, link) {
    const tile = this.tiles.get(pid);
    if (!tile) return;
    if (link.quality) {
      let q = /** @type {HTMLElement|null} */ (tile.querySelector(".quality"));
      if (!q) {
        q = document.createElement("span");
        q.className = "quality";
        tileSlot(tile, "end").prepend(q);
      }
      q.dataset.quality = link.quality;
      const text = t(`quality.${link.quality}`);
      if (q.textContent !== text) q.textContent = text; // the text node once per change, not per stats tick
    }
    if (link.paused !== undefined) {
      let note = /** @type {HTMLElement|null} */ (tile.querySelector(".paused-note"));
      if (!note) {
        note = document.createElement("span");
        note.className = "paused-note";
        tileSlot(tile, "middle").append(note);
      }
      const text = t("quality.paused.peer");
      if (note.textContent !== text) note.textContent = text;
      note.hidden = !link.paused;
      tile.dataset.videoPaused = String(link.paused);
    }
  }

  _layout() {
    const tiles = $("tiles");
    const remote = this.tiles.size - (this.tiles.has(SELF) ? 1 : 0);
    // One remote peer: it fills the stage and the self-view floats. More: everyone in the grid.
    const pip = remote === 1 && !this.sharing;
    tiles.classList.toggle("with-pip", pip);
    tiles.dataset.count = String(pip ? 1 : Math.max(1, this.tiles.size));
    $("session-alone").hidden = remote > 0 || this.sharing;
  }
}
