// The join page's connection test: a short WebRTC call to the server's echo peer (docs/security.md, "The pre-join
// connection test"). No DOM here. The server sees this media (it is the echo); the page says so before it runs.
//
//   POST /api/echo/ice    {token}       -> {ice_servers, expires_in, limit_s}
//   POST /api/echo/offer  {token, sdp}  -> {sdp, limit_s}
//
// The result is "direct" (media came back over a direct path), "relay" (it came back through the TURN relay) or
// "blocked" (nothing came back in time), from this browser's own getStats.

/** @typedef {"direct"|"relay"|"blocked"} CheckResult */

const GATHER_MS = 3000;
const MEDIA_MS = 8000;

/**
 * What the selected candidate pair of a getStats report says: "relay" if either end is a relay candidate,
 * "direct" if the pair carried data, null if there is no selected pair yet.
 * @param {any} report RTCStatsReport, Map or array
 * @returns {"direct"|"relay"|null}
 */
export function pathOf(report) {
  /** @type {any[]} */
  const list = [];
  if (Array.isArray(report)) list.push(...report); else report.forEach((/** @type {any} */ s) => list.push(s));
  const byId = new Map(list.map((s) => [s.id, s]));
  const transport = list.find((s) => s.type === "transport" && s.selectedCandidatePairId);
  const pair = transport ? byId.get(transport.selectedCandidatePairId)
    : list.find((s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded");
  if (!pair) return null;
  const local = byId.get(pair.localCandidateId);
  const remote = byId.get(pair.remoteCandidateId);
  if ((local && local.candidateType === "relay") || (remote && remote.candidateType === "relay")) return "relay";
  return "direct";
}

/**
 * Packets that came back from the echo peer, by kind.
 * @param {any} report
 */
export function returnedPackets(report) {
  const out = { audio: 0, video: 0 };
  report.forEach((/** @type {any} */ s) => {
    if (s.type === "inbound-rtp" && (s.kind === "audio" || s.kind === "video")) out[/** @type {"audio"|"video"} */ (s.kind)] += s.packetsReceived || 0;
  });
  return out;
}

/** An error of the test's HTTP calls, with the server's stable code. */
export class EchoError extends Error {
  /** @param {string} code @param {string} message @param {number|null} [retryAfter] */
  constructor(code, message, retryAfter = null) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * @param {string} path @param {Record<string, string>} body
 * @returns {Promise<any>}
 */
async function post(path, body) {
  let r;
  try {
    r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), cache: "no-store" });
  } catch {
    throw new EchoError("network", "the server cannot be reached");
  }
  /** @type {any} */
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) {
    const err = (data && data.error) || {};
    throw new EchoError(err.code || "server-error", err.message || `HTTP ${r.status}`, Number(r.headers.get("Retry-After")) || null);
  }
  return data;
}

/** @param {RTCPeerConnection} pc @param {number} ms */
function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(undefined); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

/**
 * Runs the test: sends copies of `stream`'s tracks to the echo peer and waits for them to come back.
 * @param {{token: string, stream: MediaStream|null, relayOnly?: boolean, mediaMs?: number}} options
 * @returns {Promise<{result: CheckResult, returned: {audio: number, video: number}, ms: number}>}
 */
export async function runConnectionTest({ token, stream, relayOnly = false, mediaMs = MEDIA_MS }) {
  const started = performance.now();
  const ice = await post("/api/echo/ice", { token });
  /** @type {RTCIceServer[]} only the server's own: never a public STUN server */
  const iceServers = (ice.ice_servers || []).map((/** @type {any} */ s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? "relay" : "all", bundlePolicy: "max-bundle" });
  /** @type {MediaStreamTrack[]} */
  const copies = [];
  try {
    const tracks = stream ? stream.getTracks().filter((t) => t.readyState === "live") : [];
    for (const track of tracks) {
      const copy = track.clone();
      copies.push(copy);
      pc.addTransceiver(copy, { direction: "sendrecv" });
    }
    if (!tracks.some((t) => t.kind === "audio")) pc.addTransceiver("audio", { direction: "sendrecv" });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, GATHER_MS);
    const local = pc.localDescription;
    if (!local) throw new EchoError("server-error", "no offer");
    const answer = await post("/api/echo/offer", { token, sdp: local.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const deadline = performance.now() + Math.min(mediaMs, (answer.limit_s || 10) * 1000 - 1000);
    const wantVideo = tracks.some((t) => t.kind === "video");
    const wantAudio = tracks.some((t) => t.kind === "audio");
    while (performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      if (pc.connectionState === "failed") break;
      const report = await pc.getStats();
      const back = returnedPackets(report);
      const path = pathOf(report);
      const mediaBack = (!wantVideo || back.video > 5) && (!wantAudio || back.audio > 5);
      if (path && pc.connectionState === "connected" && mediaBack) {
        return { result: path, returned: back, ms: Math.round(performance.now() - started) };
      }
    }
    const back = returnedPackets(await pc.getStats());
    return { result: "blocked", returned: back, ms: Math.round(performance.now() - started) };
  } finally {
    for (const c of copies) c.stop();
    pc.close();
  }
}
