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
    // E2EE: the safety codes, the epoch and the worker's counters (no keys).
    e2ee: () => {
      const e = session.e2ee;
      if (!e) return null;
      const sasOf = e.sasOf ? Object.fromEntries([...e.sasOf].map(([p, v]) => [p, sasText(v)])) : null;
      return {
        epoch: e.epoch, sas: e.sas ? sasText(e.sas) : null, sasOf, peers: e.peerStats,
        failures: e.failures.map((/** @type {{pid: string}} */ f) => f.pid),
        refusals: e.refusals.map((/** @type {{what: string, pid: string|null}} */ r) => ({ what: r.what, pid: r.pid })),
        sendExpired: e.sendExpired,
        health: Object.fromEntries(session.roster.map((p) => [p.pid, e.health(p.pid)])),
      };
    },
  };
}
