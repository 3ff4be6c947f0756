// The join page's "will this work?" check: a test sound for the speakers, the connection test against the
// server's echo peer (lib/echo-test.js) and the "audio only" choice. Renders itself into #prejoin-check; the
// camera preview and the microphone level meter stay where they are (ui/join.js).

import { t } from "../lib/i18n.js";
import { runConnectionTest } from "../lib/echo-test.js";
import { $, el } from "./dom.js";

/** @typedef {import("../lib/echo-test.js").CheckResult} CheckResult */

/**
 * A short, soft two-note chime made by the page itself (no sound file to fetch).
 * @returns {Promise<void>}
 */
async function playTestSound() {
  const ctx = new AudioContext();
  try {
    if (ctx.state === "suspended") await ctx.resume();
    const gain = ctx.createGain();
    gain.connect(ctx.destination);
    const start = ctx.currentTime + 0.05;
    gain.gain.setValueAtTime(0, start);
    [523.25, 659.25].forEach((freq, i) => {
      const osc = ctx.createOscillator();
      osc.type = "sine";
      osc.frequency.value = freq;
      osc.connect(gain);
      const at = start + i * 0.45;
      gain.gain.setTargetAtTime(0.25, at, 0.02);
      gain.gain.setTargetAtTime(0, at + 0.35, 0.05);
      osc.start(at);
      osc.stop(at + 0.6);
    });
    await new Promise((r) => setTimeout(r, 1200));
  } finally {
    ctx.close().catch(() => {});
  }
}

export class PrejoinCheck {
  /**
   * @param {{token: string, getStream: () => MediaStream|null, audioOnly: boolean,
   *          onAudioOnly: (on: boolean) => void}} options
   */
  constructor(options) {
    this.options = options;
    /** @type {CheckResult|null} what the last connection test found (sent to the therapist as a hint) */
    this.result = null;
    this.running = false;
    this.root = $("prejoin-check");
    this._render();
  }

  _render() {
    const root = this.root;
    root.replaceChildren();
    const heading = el("h2", "", t("prejoin.heading"));
    heading.id = "prejoin-heading";
    root.append(heading);

    const sound = el("div", "prejoin-row");
    const soundBtn = /** @type {HTMLButtonElement} */ (el("button", "btn secondary", t("prejoin.sound")));
    soundBtn.type = "button";
    soundBtn.id = "prejoin-sound";
    const soundNote = el("p", "hint", "");
    soundNote.id = "prejoin-sound-note";
    soundBtn.addEventListener("click", async () => {
      soundBtn.disabled = true;
      try {
        await playTestSound();
        soundNote.textContent = t("prejoin.sound.heard");
      } catch {
        soundNote.textContent = t("prejoin.sound.failed");
      }
      soundBtn.disabled = false;
    });
    sound.append(soundBtn, soundNote);

    const net = el("div", "prejoin-row");
    const notice = el("p", "hint", t("prejoin.connection.notice"));
    notice.id = "prejoin-connection-notice";
    const netBtn = /** @type {HTMLButtonElement} */ (el("button", "btn secondary", t("prejoin.connection")));
    netBtn.type = "button";
    netBtn.id = "prejoin-connection";
    netBtn.setAttribute("aria-describedby", "prejoin-connection-notice");
    const result = el("p", "prejoin-result", "");
    result.id = "prejoin-result";
    result.setAttribute("role", "status");
    netBtn.addEventListener("click", () => { this.runTest(netBtn, result).catch(() => {}); });
    net.append(notice, netBtn, result);

    const audio = el("div", "prejoin-row");
    const label = el("label", "checkbox");
    const box = /** @type {HTMLInputElement} */ (el("input"));
    box.type = "checkbox";
    box.id = "prejoin-audio-only";
    box.checked = this.options.audioOnly;
    box.addEventListener("change", () => this.options.onAudioOnly(box.checked));
    label.append(box, document.createTextNode(` ${t("prejoin.audio-only")}`));
    audio.append(label, el("p", "hint", t("prejoin.audio-only.hint")));

    root.append(sound, net, audio);
    root.hidden = false;
  }

  /**
   * @param {HTMLButtonElement} btn
   * @param {HTMLElement} out
   */
  async runTest(btn, out) {
    if (this.running) return;
    this.running = true;
    btn.disabled = true;
    out.dataset.result = "testing";
    out.textContent = t("prejoin.connection.testing");
    try {
      const r = await runConnectionTest({ token: this.options.token, stream: this.options.getStream() });
      this.result = r.result;
      out.dataset.result = r.result;
      out.textContent = t(`prejoin.connection.${r.result}`);
    } catch (e) {
      const code = /** @type {any} */ (e).code;
      out.dataset.result = "error";
      out.textContent = code === "rate-limited" || code === "busy" ? t("prejoin.connection.later") : t("prejoin.connection.error");
    } finally {
      btn.disabled = false;
      this.running = false;
    }
  }
}
