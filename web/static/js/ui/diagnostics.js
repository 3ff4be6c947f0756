// The page's diagnostics hook, `window.alcove`: numbers and states only (no media, no names, no keys). The
// browser tests and the `alcove bench` tools read it through Playwright; it reads the session's public state.

/** @typedef {import("./session.js").Session} Session */

/** @param {{indices: number[], decimal: number[]}} sas */
const sasText = (sas) => sas.indices.join(",") + "|" + sas.decimal.join(",");

/** @param {Session} session */
export function exposeDiagnostics(session) {
  /** @type {any} */ (window).alcove = {
    stats: async () => (session.call ? session.call.stats() : {}),
    status: () => session.status,
    pid: () => session.pid,
    connected: () => session.signaling.connected,
    // The video level we send at (lib/quality.js: 0 full, 1 low, 2 paused) and what each tile shows.
    video: () => (session.call ? session.call.videoLevel : null),
    // Screen sharing (ui/share-view.js): whether we send one, whose is shown, who sends one, refused pids,
    // and the decoded frames and size of the share's video per peer.
    share: async () => {
      const v = session.shareView;
      const call = /** @type {any} */ (session.call);
      return {
        sending: !!v.local, shown: v.shown, remote: [...v.remote.keys()], refused: [...v.refused],
        allowed: [...v.allowed], button: !document.getElementById("btn-share")?.hidden,
        frames: call && call.shareStats ? await call.shareStats() : {},
      };
    },
    // The background blur: its state, the moving average of its segmentation time (ms; `realMs` without any test
    // hook), of drawing an output frame (`drawMs`), and the output frames (`frames`) and masks (`segments`) so far.
    blur: () => (session.blur ? { state: session.blur.state, frameMs: session.blur.frameMs, ...session.blur.stats } : null),
    // E2EE: the safety codes, the epoch and the worker's counters (no keys).
    e2ee: () => {
      const e = session.e2ee;
      if (!e) return null;
      const sasOf = e.sasOf ? Object.fromEntries([...e.sasOf].map(([p, v]) => [p, sasText(v)])) : null;
      return {
        epoch: e.epoch, sas: e.sas ? sasText(e.sas) : null, sasOf, peers: e.peerStats,
        failures: e.failures.map((/** @type {{pid: string}} */ f) => f.pid),
        // SFU: for each publisher shown, the authenticated sender (SFrame KID -> signed roster) of its video slot
        shownFrom: shownFrom(session),
        refusals: e.refusals.map((/** @type {{what: string, pid: string|null}} */ r) => ({ what: r.what, pid: r.pid })),
        sendExpired: e.sendExpired,
        streams: e.streamStats,
        health: Object.fromEntries(session.roster.map((p) => [p.pid, e.health(p.pid)])),
      };
    },
  };
}

/**
 * SFU rooms with E2EE: {shown pid: the pid whose key decrypts the video it is shown with}. Null otherwise.
 * @param {Session} session @returns {Record<string, string|null>|null}
 */
function shownFrom(session) {
  const call = /** @type {any} */ (session.call);
  const e = session.e2ee;
  if (!call || !e || !call.peers || !call.conn || call.conn.closed) return null;
  /** @type {Record<string, string|null>} */
  const out = {};
  for (const [pid, entry] of call.peers) {
    const t = call.conn.receivers().find((/** @type {any} */ x) => x.receiver.track && x.receiver.track === entry.tracks.video);
    out[pid] = t ? e.senderOfReceiver(t.receiver) : null;
  }
  return out;
}
