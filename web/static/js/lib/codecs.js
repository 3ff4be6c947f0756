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
