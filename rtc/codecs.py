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
