// The one codec preference of the browser client: VP8 (and its RTX) for video, Opus for audio. SFrame's clear
// prefixes are defined for VP8 and Opus only (end-to-end encryption), and the SFU forwards VP8 and Opus only
// (no H.264: aiortc's pack() re-splits NAL units). The mesh (call.js) and the SFU connection (sfu-conn.js)
// both take it from here.

/**
 * The preferred codecs of `kind`, VP8 + RTX or Opus. Throws when the browser cannot do VP8/Opus: then nothing
 * is sent.
 * @param {string} kind "video" | "audio"
 * @returns {RTCRtpCodec[]}
 */
export function preferredCodecs(kind) {
  const caps = typeof RTCRtpReceiver !== "undefined" && typeof RTCRtpReceiver.getCapabilities === "function"
    ? RTCRtpReceiver.getCapabilities(kind) : null;
  const codecs = caps ? caps.codecs : [];
  const main = kind === "video" ? "video/vp8" : "audio/opus";
  const chosen = codecs.filter((c) => c.mimeType.toLowerCase() === main);
  if (!chosen.length) throw new Error(`${main} is not available: Alcove's media needs it`);
  if (kind === "video") chosen.push(...codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx"));
  return chosen;
}

/**
 * Puts the preferred codecs on a transceiver. Throws when the browser cannot choose codecs or has no VP8/Opus.
 * @param {RTCRtpTransceiver} transceiver @param {string} kind
 */
export function preferCodecs(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== "function") {
    throw new Error("this browser cannot choose codecs (setCodecPreferences)");
  }
  transceiver.setCodecPreferences(preferredCodecs(kind));
}

// ---- less metadata in encrypted rooms ----------------------------------------------------------------------

/**
 * The only RTP header extensions negotiated with end-to-end encryption: those the transport needs (BUNDLE
 * demultiplexing by MID, congestion control). Header extensions travel in clear next to the encrypted payload,
 * so the rest is left out: above all `ssrc-audio-level` (who speaks when), also video orientation, timing and
 * the like. `rtc/codecs.py` keeps the same list for aiortc.
 */
export const TRANSPORT_HEADER_EXTENSIONS = Object.freeze([
  "urn:ietf:params:rtp-hdrext:sdes:mid",
  "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
  "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
]);

/**
 * Stops every header extension of `transceiver` that the transport does not need (Chromium's
 * setHeaderExtensionsToNegotiate). Returns false when the browser has no such API: then `limitSdp` removes
 * them from the local description instead.
 * @param {RTCRtpTransceiver} transceiver
 */
export function limitHeaderExtensions(transceiver) {
  const t = /** @type {any} */ (transceiver);
  if (typeof t.setHeaderExtensionsToNegotiate !== "function" || typeof t.getHeaderExtensionsToNegotiate !== "function") {
    return false;
  }
  const wanted = t.getHeaderExtensionsToNegotiate().map((/** @type {{uri: string, direction: string}} */ e) => (
    TRANSPORT_HEADER_EXTENSIONS.includes(e.uri) || e.direction === "stopped" ? e : { ...e, direction: "stopped" }));
  t.setHeaderExtensionsToNegotiate(wanted);
  return true;
}

/**
 * A local description with less metadata: every Opus format line says `cbr=1` (constant bitrate: the other
 * side's encoder follows it, so packet sizes no longer follow the speech), and, with `stripExtensions`, every
 * header extension the transport does not need is removed (for browsers without setHeaderExtensionsToNegotiate).
 * @param {string} sdp @param {boolean} [stripExtensions]
 * @returns {string}
 */
export function limitSdp(sdp, stripExtensions = false) {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  const lines = sdp.split(eol);
  /** @type {Set<string>} */
  const opus = new Set();
  for (const line of lines) {
    const m = /^a=rtpmap:(\d+) opus\/48000/i.exec(line);
    if (m) opus.add(m[1]);
  }
  /** @type {Set<string>} */
  const withFmtp = new Set();
  /** @type {string[]} */
  const out = [];
  for (const line of lines) {
    const ext = /^a=extmap:\d+(?:\/\w+)? (\S+)/.exec(line);
    if (ext && stripExtensions && !TRANSPORT_HEADER_EXTENSIONS.includes(ext[1])) continue;
    const f = /^a=fmtp:(\d+) (.*)$/.exec(line);
    if (f && opus.has(f[1])) {
      withFmtp.add(f[1]);
      const params = f[2].split(";").map((p) => p.trim()).filter((p) => p && !/^cbr=/i.test(p));
      out.push(`a=fmtp:${f[1]} ${[...params, "cbr=1"].join(";")}`);
      continue;
    }
    out.push(line);
  }
  // An Opus payload type without a format line gets one, right after its rtpmap.
  for (const pt of opus) {
    if (withFmtp.has(pt)) continue;
    const at = out.findIndex((l) => l.startsWith(`a=rtpmap:${pt} `));
    if (at >= 0) out.splice(at + 1, 0, `a=fmtp:${pt} cbr=1`);
  }
  return out.join(eol);
}

/**
 * setLocalDescription with less metadata (E2EE): the offer or answer the state calls for, through `limitSdp`
 * (which also removes the header extensions when the browser cannot stop them per transceiver).
 * @param {RTCPeerConnection} pc
 */
export async function setLimitedLocalDescription(pc) {
  const api = typeof RTCRtpTransceiver !== "undefined"
    && typeof /** @type {any} */ (RTCRtpTransceiver.prototype).setHeaderExtensionsToNegotiate === "function";
  const d = pc.signalingState === "have-remote-offer" || pc.signalingState === "have-local-pranswer"
    ? await pc.createAnswer() : await pc.createOffer();
  await pc.setLocalDescription({ type: d.type, sdp: limitSdp(d.sdp || "", !api) });
}
