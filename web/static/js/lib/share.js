// Screen sharing, the media half (no DOM): capturing a screen, window or tab, the sender profile that keeps text
// legible at a low bitrate, and which transceivers of a connection carry a share.
//
// A share is one more video track (and the tab's audio where the browser gives it) on the connection(s) that
// already carry the camera: in mesh one more `sendonly` m-line per peer connection, in SFU rooms one more
// `sendonly` m-line on the connection to the SFU, forwarded untouched like the camera. With E2EE it has its own
// SFrame sender-key path: the KID's `stream` field (docs/security.md §5) is 2 for the screen's video and 3 for
// its audio, so a share frame never decrypts as camera media and the reverse.

/** SFrame KID streams (docs/security.md §5; peer/sframe.py STREAM_SCREEN_*). */
export const SCREEN_VIDEO_STREAM = 2;
export const SCREEN_AUDIO_STREAM = 3;

/**
 * The sender profile of a share: documents, not faces. Few frames, full resolution, a capped bitrate: under a
 * poor link the browser lowers the frame rate, never the resolution (text stays legible).
 */
export const SHARE_PROFILE = Object.freeze({ maxFramerate: 5, maxBitrate: 800_000, height: 1080 });

/**
 * Asks the browser for a screen, window or tab (the browser's own picker), with its audio where allowed.
 * @returns {Promise<MediaStream>}
 */
export async function captureScreen() {
  const stream = await navigator.mediaDevices.getDisplayMedia({
    video: { frameRate: { ideal: SHARE_PROFILE.maxFramerate, max: SHARE_PROFILE.maxFramerate },
      width: { ideal: 1920 }, height: { ideal: SHARE_PROFILE.height, max: SHARE_PROFILE.height } },
    audio: true,
  });
  for (const track of stream.getVideoTracks()) {
    try { track.contentHint = "detail"; } catch { /* older browsers: no hint */ }
  }
  return stream;
}

/**
 * Applies the share profile to a sender of the share's video (after negotiation; before it, nothing to set).
 * @param {RTCRtpSender} sender
 * @param {(...args: any[]) => void} [log]
 */
export function applyShareEncoding(sender, log = () => {}) {
  if (!sender.track || sender.track.kind !== "video") return;
  try {
    const params = /** @type {RTCRtpSendParameters & {degradationPreference?: string}} */ (sender.getParameters());
    if (!params.encodings || !params.encodings.length) return;
    params.degradationPreference = "maintain-resolution";
    for (const e of params.encodings) {
      e.active = true;
      e.maxFramerate = SHARE_PROFILE.maxFramerate;
      e.maxBitrate = SHARE_PROFILE.maxBitrate;
      e.scaleResolutionDownBy = 1;
    }
    sender.setParameters(params).catch((e) => log("share setParameters", e));
  } catch (e) {
    log("share encoding", e);
  }
}

/**
 * The kind of a transceiver (its receiver's track always exists).
 * @param {RTCRtpTransceiver} tr @returns {string}
 */
export function kindOf(tr) {
  return tr.receiver.track ? tr.receiver.track.kind : (tr.sender.track ? tr.sender.track.kind : "");
}

/**
 * Whether a mesh transceiver carries a share: the camera and microphone are the first transceiver of their kind
 * on a connection (both sides create them first), every later one of the same kind is a share.
 * @param {RTCPeerConnection} pc @param {RTCRtpTransceiver} tr
 */
export function isShareTransceiver(pc, tr) {
  const kind = kindOf(tr);
  const same = pc.getTransceivers().filter((x) => kindOf(x) === kind);
  return same.indexOf(tr) > 0;
}

/** The SFrame stream of a share track's kind. @param {string} kind */
export function shareStreamOf(kind) {
  return kind === "audio" ? SCREEN_AUDIO_STREAM : SCREEN_VIDEO_STREAM;
}
