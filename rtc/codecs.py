"""The codec preference, defined once: VP8 (+RTX) for video and Opus for audio.

E2EE (SFrame over encoded frames) protects only these codecs, and the forwarding SFU forwards only these.
"""

from __future__ import annotations

from typing import Final

from aiortc import RTCPeerConnection, RTCRtpCodecCapability, RTCRtpSender, RTCRtpTransceiver

WANTED_MIME_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "video": ("video/vp8", "video/rtx"),
    "audio": ("audio/opus",),
}
"""Lower-case MIME types offered and accepted, by kind."""

TRANSPORT_HEADER_EXTENSIONS: Final[frozenset[str]] = frozenset({
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
})
"""The only RTP header extensions negotiated where metadata is limited (E2EE rooms, the SFU): those the
transport needs (BUNDLE demultiplexing by MID, congestion control). Header extensions travel in clear next to
the SFrame payload, so everything else is left out: above all ``ssrc-audio-level`` (who speaks when), also
video orientation, timing and the like. ``web/static/js/lib/codecs.js`` keeps the same list."""

OPUS_CBR: Final[dict[str, int]] = {"cbr": 1}
"""The Opus format parameter asking the other side to encode at a constant bitrate (RFC 7587 §6.1): with
variable bitrate the sizes of encrypted packets still follow the speech."""


def preferred_codecs(kind: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities for ``kind`` ('audio' or 'video') restricted to :data:`WANTED_MIME_TYPES`."""
    wanted = WANTED_MIME_TYPES[kind]
    return [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() in wanted]


def prefer_vp8_opus(transceiver: RTCRtpTransceiver) -> None:
    """Offer/accept only VP8 (+RTX) for video and Opus for audio: E2EE cannot protect other codecs."""
    transceiver.setCodecPreferences(preferred_codecs(transceiver.kind))


def prefer_vp8_opus_all(pc: RTCPeerConnection) -> None:
    """:func:`prefer_vp8_opus` on every transceiver of ``pc`` (call before ``createOffer``)."""
    for transceiver in pc.getTransceivers():
        prefer_vp8_opus(transceiver)
