"""The one module of Alcove that touches aiortc (and aioice) internals.

aiortc has no public encoded-transform API, no way to hand out encoded frames from a receiver, and no way
to observe keyframe requests at a sender. Alcove needs all three (E2EE, the forwarding SFU), so this module
provides them as *per-instance* hooks on :class:`aiortc.RTCRtpSender` / :class:`aiortc.RTCRtpReceiver`.
Nothing here replaces a module global of aiortc, so two peer connections in one process can use different
keys, and a plain peer connection next to a hooked one is untouched.

Only this module may rely on aiortc internals; it is pinned to ``aiortc==1.16.*``. Every internal it relies
on is listed in :func:`check_internals`, which a contract test runs so that an aiortc upgrade fails loudly
instead of silently sending clear media.

How the hooks work (aiortc 1.16.0):

* **Send.** ``RTCRtpSender._run_rtp`` calls ``self._next_encoded_frame(codec)``, which lazily creates its
  encoder with the module global ``aiortc.rtcrtpsender.get_encoder`` and stores it in the private
  ``__encoder``. We shadow ``_next_encoded_frame`` on the *instance*: before delegating, it creates the
  encoder itself (same factory) if needed and wraps that encoder instance once.

  - ``Vp8Encoder``: the instance's ``_packetize(buffer, picture_id)`` is wrapped, so the transform sees the
    whole encoded VP8 frame before RTP packetization, for both ``encode()`` (raw frames) and ``pack()``
    (pre-encoded ``av.Packet``); the VP8 payload descriptor stays in clear, as in browsers.
  - ``OpusEncoder``: ``encode``/``pack`` are wrapped; each payload is one Opus frame.
  - Any other encoder with a transform set fails closed: nothing is sent (E2EE is VP8/Opus only).

  VP8 ``encode()`` runs in aiortc's executor thread, so the transform may be called from a worker thread.
  :func:`send_temporal_layers` makes the same factory moment create a :class:`TemporalVp8Encoder` (L1T3) instead
  of aiortc's ``Vp8Encoder``; it is a subclass, so the transform wraps it the same way. :func:`vp8_bitstream`
  (pre-encoded video for load generators) subclasses it too, keeping what ``_packetize`` is given.

* **Receive.** ``RTCRtpReceiver._handle_rtp_packet`` (event-loop thread) reassembles a ``JitterFrame`` and
  calls ``self.__decoder_queue.put((codec, frame))``; the ``decoder_worker`` thread takes it from there. We
  shadow ``put`` on that queue *instance*: the transform runs before the frame is queued (so the decoder
  thread never sees an untransformed or dropped frame and never shares a frame being mutated), a ``None``
  result drops the frame, and in pass-through mode the frame becomes an ``av.Packet`` pushed straight to the
  remote track's queue, bypassing the decoder entirely. Shadowing ``put`` (not ``get``) also makes the hook
  race-free when installed after ``receive()`` started the decoder thread.

* **Keyframes.** ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` on PLI/FIR; we shadow
  it on the instance to notify callbacks. ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)`` sends a PLI.

* **Metadata.** ``RTCPeerConnection.createOffer`` and ``setRemoteDescription`` assign each transceiver's
  private ``_headerExtensions`` (from the module global ``HEADER_EXTENSIONS``) and ``_codecs``, and the SDP
  and the RTP header-extension maps are built from them. :func:`limit_metadata` gives each transceiver of one
  peer connection (and those it creates later: ``__createTransceiver`` is shadowed on the instance) a
  subclass whose two attributes filter what is assigned: only the transport's header extensions, and Opus
  with ``cbr=1``. Its Opus encoders are set to constant bitrate (libopus ``vbr=off``) when created.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events as _sel
import contextlib
import dataclasses
import errno
import fractions
import inspect
import logging
import secrets
import struct
import threading
import time
import weakref
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aioice.ice
import aiortc
import aiortc.codecs
import aiortc.mediastreams
import aiortc.rtcdtlstransport as _dtls_mod
import aiortc.rtcicetransport
import aiortc.rtcpeerconnection as _pc_mod
import aiortc.rtcrtpreceiver as _rx_mod
import aiortc.rtcrtpsender as _tx_mod
import av
import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import PACKET_MAX as VP8_PACKET_MAX
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from av.frame import Frame

from rtc.codecs import OPUS_CBR, TRANSPORT_HEADER_EXTENSIONS

__all__ = [
    "SUPPORTED_AIORTC",
    "FrameTransform",
    "KeyframeCallback",
    "ReceiveReports",
    "ReceiverHookStats",
    "RtcpFeedback",
    "RtpSink",
    "RtpTap",
    "SenderHookStats",
    "TemporalVp8Encoder",
    "allow_loopback_candidates",
    "bind_host_candidates_in",
    "check_internals",
    "force_keyframe",
    "host_addresses",
    "impair_receive",
    "is_direct",
    "is_vp8_keyframe",
    "limit_metadata",
    "make_passthrough",
    "on_keyframe_request",
    "receiver_stats",
    "request_keyframe",
    "rtp_sink",
    "send_temporal_layers",
    "sender_stats",
    "set_receiver_transform",
    "set_sender_transform",
    "small_datagram_reads",
    "tap_rtp",
]

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = "1.16"
"""The aiortc release series whose internals this module was written against."""

FrameTransform = Callable[[str, bytes], bytes | None]
"""``fn(kind, frame) -> frame | None``; ``kind`` is ``"audio"`` or ``"video"``; ``None`` drops the frame.

Must be thread-safe: it can run on the event-loop thread and on aiortc's encoder executor threads."""

KeyframeCallback = Callable[[], object]
"""Called (on the event-loop thread) when a PLI/FIR reaches a sender; may return an awaitable."""

# Mangled names of the private attributes we read or write.
_TX_ENCODER = "_RTCRtpSender__encoder"
_TX_FORCE_KEYFRAME = "_RTCRtpSender__force_keyframe"
_RX_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_RX_RTCP_SSRC = "_RTCRtpReceiver__rtcp_ssrc"
_RX_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"
_RX_KIND = "_RTCRtpReceiver__kind"
_PC_CREATE_TRANSCEIVER = "_RTCPeerConnection__createTransceiver"
_WRAPPED = "_alcove_wrapped"


def is_vp8_keyframe(frame: bytes) -> bool:
    """True if ``frame`` (a whole encoded VP8 frame, descriptor removed) is a keyframe (RFC 6386 §9.1)."""
    return len(frame) > 0 and (frame[0] & 0x01) == 0


# --------------------------------------------------------------------------------------------------------
# ICE: loopback candidates
# --------------------------------------------------------------------------------------------------------


def allow_loopback_candidates() -> None:
    """Make aioice also gather ``127.0.0.1`` host candidates (it normally leaves loopback out).

    Process-wide (aioice has no per-connection switch) and idempotent. Meant for tests that run inside a
    loopback-only network namespace; production peers should not call it.
    """
    current = aioice.ice.get_host_addresses
    if getattr(current, _WRAPPED, False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = list(current(use_ipv4, use_ipv6))
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    setattr(get_host_addresses, _WRAPPED, True)
    aioice.ice.get_host_addresses = get_host_addresses


def host_addresses() -> list[str]:
    """The addresses aioice gathers host candidates on (``aioice.ice.get_host_addresses``), IPv4 and IPv6."""
    return list(aioice.ice.get_host_addresses(True, True))


def bind_host_candidates_in(loop: asyncio.AbstractEventLoop, first: int, last: int) -> None:
    """Make aioice bind the UDP sockets of its host candidates on ``loop`` to a port in ``first``–``last``.

    aioice binds each host candidate with ``loop.create_datagram_endpoint(..., local_addr=(address, 0))``
    (``Connection.get_component_candidates``) and has no port-range option, so this shadows that method on the
    ``loop`` *instance*: a bind to port 0 of a given address tries the ports of the range from a random start
    instead; every other call (TURN and STUN clients connect to a remote address) passes through. When the
    range is exhausted the bind fails with EADDRINUSE, aioice logs it and offers no candidate for it. Meant for
    the SFU worker processes (one event loop each); idempotent.
    """
    original = loop.create_datagram_endpoint
    if getattr(original, _WRAPPED, False):
        return
    span = last - first + 1

    async def create_datagram_endpoint(protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None,
                                       **kwargs: Any) -> Any:
        if local_addr is None or remote_addr is not None or local_addr[1] != 0:
            return await original(protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs)
        start = secrets.randbelow(span)
        for i in range(span):
            try:
                return await original(protocol_factory, local_addr=(local_addr[0], first + (start + i) % span),
                                      **kwargs)
            except OSError as exc:
                # asyncio raises EADDRINUSE itself; uvloop an OSError without errno, caused by EADDRINUSE
                if errno.EADDRINUSE not in (exc.errno, getattr(exc.__cause__, "errno", None)):
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {first}-{last}")

    setattr(create_datagram_endpoint, _WRAPPED, True)
    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]


DATAGRAM_READ_SIZE = 65536
"""Bytes asked for per datagram read: above the largest UDP payload (65,507 over IPv4, 65,527 over IPv6), so
nothing is ever cut, and below glibc's 128 KiB mmap threshold."""

_SMALL_READS = "_alcove_small_reads"


def small_datagram_reads(loop: asyncio.AbstractEventLoop) -> None:
    """Make every UDP socket later opened on ``loop`` read datagrams into a 64 KiB buffer instead of 256 KiB.

    asyncio's datagram transport reads each datagram with ``sock.recvfrom(self.max_size)``, ``max_size`` being a
    class attribute of 256 KiB: CPython allocates that much for every datagram and shrinks it to the datagram's
    size. 256 KiB is above glibc's mmap threshold, so each received packet costs an ``mmap``, an ``mremap`` and
    a ``munmap`` (measured on the SFU worker: the largest single cost of its receive path). This shadows
    ``create_datagram_endpoint`` on the ``loop`` *instance* (aioice opens its host, server-reflexive and TURN
    sockets through it) and sets :data:`DATAGRAM_READ_SIZE` on each new transport *instance*. Meant for the SFU
    worker processes (one event loop each); composes with :func:`bind_host_candidates_in`; idempotent.
    """
    original = loop.create_datagram_endpoint
    if getattr(original, _SMALL_READS, False):
        return

    async def create_datagram_endpoint(*args: Any, **kwargs: Any) -> Any:
        transport, protocol = await original(*args, **kwargs)
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = DATAGRAM_READ_SIZE  # type: ignore[attr-defined]
        return transport, protocol

    setattr(create_datagram_endpoint, _SMALL_READS, True)
    setattr(create_datagram_endpoint, _WRAPPED, getattr(original, _WRAPPED, False))
    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------------------
# Sender side
# --------------------------------------------------------------------------------------------------------


@dataclass
class SenderHookStats:
    """Counters of one hooked sender (read them on the event-loop thread; they are updated under a lock)."""

    frames_transformed: int = 0
    """Encoded frames handed to the transform."""
    frames_dropped: int = 0
    """Frames the transform dropped (returned ``None`` or raised), or refused because the codec is unsupported."""
    keyframe_requests: int = 0
    """PLI/FIR received from the remote side."""


class _SenderHook:
    def __init__(self) -> None:
        self.transform: FrameTransform | None = None
        self.callbacks: list[KeyframeCallback] = []
        self.stats = SenderHookStats()
        self.lock = threading.Lock()
        self.pending: set[asyncio.Future[Any]] = set()
        self.cbr = False
        self.temporal_layers = False

    def apply(self, kind: str, data: bytes) -> bytes | None:
        fn = self.transform
        if fn is None:
            return data
        try:
            out = fn(kind, data)
        except Exception:
            logger.exception("sender frame transform failed; dropping the frame")
            out = None
        with self.lock:
            self.stats.frames_transformed += 1
            if out is None:
                self.stats.frames_dropped += 1
        return out

    def refuse(self) -> None:
        with self.lock:
            self.stats.frames_dropped += 1


_sender_hooks: weakref.WeakKeyDictionary[RTCRtpSender, _SenderHook] = weakref.WeakKeyDictionary()
_hooks_lock = threading.Lock()


def _wrap_encoder(encoder: Any, kind: str, hook: _SenderHook) -> None:
    """Wrap one encoder *instance* so every encoded frame goes through ``hook``."""
    if getattr(encoder, _WRAPPED, False):
        return
    if isinstance(encoder, Vp8Encoder):
        orig_packetize = encoder._packetize

        def _packetize(buffer: bytes, picture_id: int) -> list[bytes]:
            out = hook.apply(kind, buffer)
            if out is None:
                return []
            return orig_packetize(out, picture_id)

        encoder._packetize = _packetize  # type: ignore[method-assign]
    elif isinstance(encoder, OpusEncoder):
        orig_encode = encoder.encode
        orig_pack = encoder.pack

        def _map(payloads: list[bytes]) -> list[bytes]:
            result = []
            for payload in payloads:
                out = hook.apply(kind, payload)
                if out is not None:
                    result.append(out)
            return result

        def encode(frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
            payloads, timestamp = orig_encode(frame, force_keyframe)
            return _map(payloads), timestamp

        def pack(packet: Any) -> tuple[list[bytes], int]:
            payloads, timestamp = orig_pack(packet)
            return _map(payloads), timestamp

        encoder.encode = encode  # type: ignore[method-assign]
        encoder.pack = pack  # type: ignore[method-assign]
    else:
        # Fail closed: a transform (E2EE) cannot be applied to this codec's packetized output.
        orig_encode = encoder.encode
        orig_pack = encoder.pack

        def encode_other(frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
            result = orig_encode(frame, force_keyframe)
            if hook.transform is None:
                return result  # type: ignore[no-any-return]
            hook.refuse()
            return [], result[1]

        def pack_other(packet: Any) -> tuple[list[bytes], int]:
            result = orig_pack(packet)
            if hook.transform is None:
                return result  # type: ignore[no-any-return]
            hook.refuse()
            return [], result[1]

        encoder.encode = encode_other
        encoder.pack = pack_other
    setattr(encoder, _WRAPPED, True)


def _sender_hook(sender: RTCRtpSender) -> _SenderHook:
    """Install (once) the per-instance hooks on ``sender`` and return its state."""
    with _hooks_lock:
        hook = _sender_hooks.get(sender)
        if hook is not None:
            return hook
        hook = _SenderHook()
        _sender_hooks[sender] = hook

    # Class-level originals called with a weak reference: no sender <-> closure reference cycle.
    sender_ref = weakref.ref(sender)
    orig_next = type(sender)._next_encoded_frame
    orig_keyframe = type(sender)._send_keyframe

    async def _next_encoded_frame(codec: RTCRtpCodecParameters) -> Any:
        s = sender_ref()
        if s is None:
            return None
        encoder = getattr(s, _TX_ENCODER)
        if encoder is None:
            # Same factory and same moment as aiortc would use; aiortc then finds it already set.
            encoder = _tx_mod.get_encoder(codec)  # type: ignore[attr-defined]
            if hook.temporal_layers and type(encoder) is Vp8Encoder:
                encoder = TemporalVp8Encoder()
            if hook.cbr and isinstance(encoder, OpusEncoder):
                _opus_cbr(encoder)
            setattr(s, _TX_ENCODER, encoder)
        _wrap_encoder(encoder, s.kind, hook)
        return await orig_next(s, codec)

    def _send_keyframe() -> None:
        s = sender_ref()
        if s is None:
            return
        orig_keyframe(s)
        with hook.lock:
            hook.stats.keyframe_requests += 1
        for callback in list(hook.callbacks):
            try:
                result = callback()
            except Exception:
                logger.exception("keyframe-request callback failed")
                continue
            if inspect.isawaitable(result):
                future = asyncio.ensure_future(result)
                hook.pending.add(future)
                future.add_done_callback(hook.pending.discard)

    sender._next_encoded_frame = _next_encoded_frame  # type: ignore[method-assign]
    sender._send_keyframe = _send_keyframe  # type: ignore[method-assign]
    return hook


def set_sender_transform(sender: RTCRtpSender, fn: FrameTransform | None) -> None:
    """Transform every encoded frame ``sender`` sends; ``fn=None`` removes the transform.

    VP8: ``fn("video", whole_frame)`` before RTP packetization. Opus: ``fn("audio", payload)`` per frame.
    ``fn`` returning ``None`` (or raising) drops the frame. With a transform set, any other codec sends
    nothing (fail closed). Works before or after negotiation; affects only this sender.
    """
    _sender_hook(sender).transform = fn


def on_keyframe_request(sender: RTCRtpSender, callback: KeyframeCallback) -> Callable[[], None]:
    """Call ``callback()`` whenever a PLI/FIR for ``sender`` arrives; returns an unsubscribe function.

    aiortc still sets its own force-keyframe flag (effective for senders that encode). For a sender fed
    ``av.Packet`` (SFU) the flag has no effect, so the callback should forward the request upstream with
    :func:`request_keyframe` (rate-limit it). An awaitable result is scheduled as a task.
    """
    hook = _sender_hook(sender)
    hook.callbacks.append(callback)

    def unsubscribe() -> None:
        if callback in hook.callbacks:
            hook.callbacks.remove(callback)

    return unsubscribe


def force_keyframe(sender: RTCRtpSender) -> None:
    """Make the next frame ``sender`` encodes a keyframe (e.g. after an E2EE epoch switch).

    Does not notify :func:`on_keyframe_request` callbacks. No effect on a sender fed ``av.Packet``.
    """
    RTCRtpSender._send_keyframe(sender)


def sender_stats(sender: RTCRtpSender) -> SenderHookStats:
    """The counters of ``sender`` (installs the hooks if needed; they are inert without a transform)."""
    return _sender_hook(sender).stats


# --------------------------------------------------------------------------------------------------------
# VP8 temporal layers (L1T3)
# --------------------------------------------------------------------------------------------------------

L1T3_LAYERS = (0, 2, 1, 2)
"""The temporal layer of each frame of the 4-frame L1T3 cycle (libvpx ``ts_layer_id``, as in browsers)."""
L1T3_SYNC = (False, True, True, False)
"""Per cycle position: the frame refers to the base layer only (VP8 descriptor Y bit, a safe point to switch
up to its layer). Position 3 refers to the layer-1 frame before it."""
L1T3_RATES = (0.4, 0.6, 1.0)
"""Cumulative share of the target bitrate per layer (libvpx ``ts_target_bitrate``; libwebrtc's split)."""
L1T3_VPX = "ts_number_layers=3:ts_periodicity=4:ts_rate_decimator=4,2,1:ts_layer_id=0,2,1,2:ts_layering_mode=3"
"""FFmpeg's libvpx wrapper (``ts-parameters``): mode 3 is libvpx's 3-layer pattern with one reference frame per
layer (position 0 refers to and updates LAST; 1 refers to LAST; 2 refers to LAST and updates GOLDEN; 3 refers to
GOLDEN). FFmpeg sets the per-frame reference flags and ``VP8E_SET_TEMPORAL_LAYER_ID``, counts frames through
the cycle and starts it again at a forced key frame; ``ts_layering_mode`` must come last."""


class TemporalVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder sending three temporal layers (L1T3), as browsers do in SFU rooms.

    The same libvpx settings as aiortc's encoder, plus FFmpeg's ``ts-parameters``; each frame's layer is its
    position in the cycle (counted here as FFmpeg counts it: from 0 at every new codec context and forced key
    frame; a key frame is always layer 0), and the VP8 payload descriptor carries it as browsers write it:
    picture id, TL0PICIDX, temporal layer id and layer-sync bit (RFC 7741). :meth:`pack` (pre-encoded packets)
    writes aiortc's plain descriptor."""

    def __init__(self) -> None:
        super().__init__()
        self._position = 0
        self._tl0picidx = secrets.randbelow(256)
        self._layer: tuple[int, bool] | None = None

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, av.VideoFrame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        codec: Any = self.codec
        if codec is not None and (frame.width != codec.width or frame.height != codec.height
                                  or abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > 0.1):
            codec = None
        if force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        if codec is None:
            codec = self.codec = self._open(frame.width, frame.height)
            self._position = 0
        elif force_keyframe:
            self._position = 0
        data = b"".join(bytes(p) for p in codec.encode(frame))
        position = self._position
        self._position = (position + 1) % len(L1T3_LAYERS)
        key = bool(data) and not data[0] & 0x01
        tid = 0 if key else L1T3_LAYERS[position]
        if data and tid == 0:
            self._tl0picidx = (self._tl0picidx + 1) & 0xFF
        self._layer = (tid, not key and L1T3_SYNC[position])
        try:
            payloads = self._packetize(data, self.picture_id)
        finally:
            self._layer = None
        timestamp = convert_timebase(frame.pts or 0, frame.time_base or VIDEO_TIME_BASE, VIDEO_TIME_BASE)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, timestamp

    def _open(self, width: int, height: int) -> Any:
        bitrate = self.target_bitrate
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000
        codec.qmin = 2
        codec.qmax = 56
        rates = ",".join(str(round(bitrate * share / 1000)) for share in L1T3_RATES)
        codec.options = {
            "bufsize": str(bitrate),
            "cpu-used": "-6",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
            "error-resilient": "default",  # no entropy carried over between frames: a layer can be dropped
            "ts-parameters": f"ts_target_bitrate={rates}:{L1T3_VPX}",
        }
        codec.thread_count = 1
        return codec

    def _packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        layer = self._layer
        if layer is None:
            return Vp8Encoder._packetize(buffer, picture_id)
        descriptor = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=picture_id,
                                          tl0picidx=self._tl0picidx, tid=(layer[0], int(layer[1])))
        payloads = []
        pos = 0
        while pos < len(buffer):
            head = bytes(descriptor)
            size = min(len(buffer) - pos, VP8_PACKET_MAX - len(head))
            payloads.append(head + buffer[pos:pos + size])
            descriptor.partition_start = 0
            pos += size
        return payloads


def send_temporal_layers(sender: RTCRtpSender) -> None:
    """Make ``sender`` encode VP8 with three temporal layers (:class:`TemporalVp8Encoder`) instead of aiortc's
    single-layer encoder. Call before it sends its first frame; other codecs are untouched; affects only this
    sender, and composes with :func:`set_sender_transform` (the transform sees each whole frame, the descriptor
    stays in clear)."""
    _sender_hook(sender).temporal_layers = True


class _Vp8Recorder(Vp8Encoder):
    """aiortc's VP8 encoder keeping each frame's bitstream instead of packetizing it."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []

    def _packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        self.frames.append(bytes(buffer))
        return []


def vp8_bitstream(frames: Iterable[av.VideoFrame], key_at: Container[int] = ()) -> list[bytes]:
    """``frames`` encoded by aiortc's own VP8 encoder (its libvpx settings and rate control; a key frame first and
    wherever ``key_at`` asks for one, as a PLI would), one bitstream per frame, without RTP payload descriptors:
    pre-encoded video that a load generator sends through aiortc's ``pack()`` path (a track yielding
    ``av.Packet``) on many connections without encoding per connection."""
    recorder = _Vp8Recorder()
    for i, frame in enumerate(frames):
        recorder.encode(frame, force_keyframe=i in key_at)
    return recorder.frames


# --------------------------------------------------------------------------------------------------------
# Metadata: header extensions and Opus bitrate
# --------------------------------------------------------------------------------------------------------


def _opus_cbr(encoder: OpusEncoder) -> None:
    """Constant bitrate for one Opus encoder *instance* (before its codec context opens on the first frame)."""
    encoder.codec.options = {**encoder.codec.options, "vbr": "off"}


def _with_cbr(codec: RTCRtpCodecParameters) -> RTCRtpCodecParameters:
    if codec.mimeType.lower() != "audio/opus" or all(codec.parameters.get(k) == v for k, v in OPUS_CBR.items()):
        return codec
    return dataclasses.replace(codec, parameters={**codec.parameters, **OPUS_CBR})


class _QuietTransceiver(RTCRtpTransceiver):
    """A transceiver whose negotiated header extensions are the transport's only and whose Opus says cbr=1."""

    @property
    def _headerExtensions(self) -> list[Any]:
        return self.__dict__["_alcove_header_extensions"]  # type: ignore[no-any-return]

    @_headerExtensions.setter
    def _headerExtensions(self, value: list[Any]) -> None:
        self.__dict__["_alcove_header_extensions"] = [e for e in value if e.uri in TRANSPORT_HEADER_EXTENSIONS]

    @property
    def _codecs(self) -> list[RTCRtpCodecParameters]:
        return self.__dict__["_alcove_codecs"]  # type: ignore[no-any-return]

    @_codecs.setter
    def _codecs(self, value: list[RTCRtpCodecParameters]) -> None:
        self.__dict__["_alcove_codecs"] = [_with_cbr(c) for c in value]


def _quiet(transceiver: RTCRtpTransceiver) -> None:
    if not isinstance(transceiver, _QuietTransceiver):
        extensions = transceiver.__dict__.pop("_headerExtensions", [])
        codecs = transceiver.__dict__.pop("_codecs", [])
        transceiver.__class__ = _QuietTransceiver
        transceiver._headerExtensions = extensions
        transceiver._codecs = codecs
    _sender_hook(transceiver.sender).cbr = True


def limit_metadata(pc: RTCPeerConnection) -> None:
    """Less metadata in clear on ``pc``: only :data:`rtc.codecs.TRANSPORT_HEADER_EXTENSIONS` are negotiated
    (no ``ssrc-audio-level``: aiortc then writes no audio level into its packets), the SDP's Opus format says
    ``cbr=1``, and its Opus encoders run at constant bitrate. For every transceiver of ``pc``, now and later
    (those ``addTrack``/``addTransceiver``/``setRemoteDescription`` create). Call before ``createOffer`` or
    ``setRemoteDescription``; idempotent; affects only ``pc``.
    """
    for transceiver in pc.getTransceivers():
        _quiet(transceiver)
    create = getattr(pc, _PC_CREATE_TRANSCEIVER)
    if getattr(create, _WRAPPED, False):
        return

    def create_transceiver(*args: Any, **kwargs: Any) -> RTCRtpTransceiver:
        transceiver: RTCRtpTransceiver = create(*args, **kwargs)
        _quiet(transceiver)
        return transceiver

    setattr(create_transceiver, _WRAPPED, True)
    setattr(pc, _PC_CREATE_TRANSCEIVER, create_transceiver)


# --------------------------------------------------------------------------------------------------------
# Receiver side
# --------------------------------------------------------------------------------------------------------


@dataclass
class ReceiverHookStats:
    """Counters of one hooked receiver (updated on the event-loop thread only)."""

    frames_received: int = 0
    """Whole encoded frames reassembled by the jitter buffer."""
    frames_dropped: int = 0
    """Frames the transform dropped (returned ``None`` or raised)."""
    frames_to_decoder: int = 0
    """Frames handed to aiortc's decoder thread."""
    frames_decoded: int = 0
    """Decoded ``av`` frames the decoder produced (0 for a pass-through receiver)."""
    packets_forwarded: int = 0
    """``av.Packet`` objects handed to the remote track in pass-through mode."""
    keyframes_forwarded: int = 0
    """Of those, VP8 keyframes."""
    plis_sent: int = 0
    """PLIs sent with :func:`request_keyframe`."""


@dataclass
class _ReceiverHook:
    transform: FrameTransform | None = None
    passthrough: bool = False
    stats: ReceiverHookStats = field(default_factory=ReceiverHookStats)
    counted_queue: asyncio.Queue[Any] | None = None
    last_pli: float = float("-inf")


_receiver_hooks: weakref.WeakKeyDictionary[RTCRtpReceiver, _ReceiverHook] = weakref.WeakKeyDictionary()


def _count_decoded(hook: _ReceiverHook, output_q: asyncio.Queue[Any]) -> None:
    """Shadow ``put`` on the remote track's queue to count what the decoder thread produces."""
    orig_put = output_q.put

    async def put(item: Any) -> None:
        if isinstance(item, Frame):
            hook.stats.frames_decoded += 1
        await orig_put(item)

    output_q.put = put  # type: ignore[method-assign]
    hook.counted_queue = output_q


def _receiver_hook(receiver: RTCRtpReceiver) -> _ReceiverHook:
    """Install (once) the per-instance hook on ``receiver``'s decoder queue and return its state."""
    with _hooks_lock:
        hook = _receiver_hooks.get(receiver)
        if hook is not None:
            return hook
        hook = _ReceiverHook()
        _receiver_hooks[receiver] = hook

    receiver_ref = weakref.ref(receiver)
    kind: str = getattr(receiver, _RX_KIND)
    decoder_queue = getattr(receiver, _RX_DECODER_QUEUE)
    orig_put = decoder_queue.put

    def put(item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # stop signal for the decoder thread
            orig_put(item, block, timeout)
            return
        codec, frame = item
        assert isinstance(frame, JitterFrame)
        stats = hook.stats
        stats.frames_received += 1
        if hook.transform is not None:
            try:
                out = hook.transform(kind, frame.data)
            except Exception:
                logger.exception("receiver frame transform failed; dropping the frame")
                out = None
            if out is None:
                stats.frames_dropped += 1
                return
            frame.data = out
        r = receiver_ref()
        track = r._track if r is not None else None
        if hook.passthrough:
            if track is None:
                return
            packet = av.Packet(frame.data)
            packet.pts = frame.timestamp
            packet.time_base = fractions.Fraction(1, codec.clockRate)
            if codec.mimeType.lower() == "video/vp8" and is_vp8_keyframe(frame.data):
                packet.is_keyframe = True
                stats.keyframes_forwarded += 1
            track._queue.put_nowait(packet)
            stats.packets_forwarded += 1
            return
        if track is not None and hook.counted_queue is not track._queue:
            _count_decoded(hook, track._queue)
        stats.frames_to_decoder += 1
        orig_put(item, block, timeout)

    decoder_queue.put = put
    return hook


def set_receiver_transform(receiver: RTCRtpReceiver, fn: FrameTransform | None) -> None:
    """Transform every reassembled encoded frame (``JitterFrame.data``) before it is decoded.

    ``fn(kind, frame)`` runs on the event-loop thread before the frame is queued for aiortc's decoder
    thread; ``None`` (or an exception) drops the frame so the decoder never sees it. ``fn=None`` removes the
    transform. Works before or after negotiation and while media flows; affects only this receiver.
    """
    _receiver_hook(receiver).transform = fn


def make_passthrough(receiver: RTCRtpReceiver) -> ReceiverHookStats:
    """Never decode: ``receiver.track.recv()`` yields encoded ``av.Packet`` objects instead of frames.

    Each packet has ``pts`` (RTP timestamp re-based to 0) and ``time_base`` (1/clock rate) set, and
    ``is_keyframe`` True for VP8 keyframes. Feeding such packets to another :class:`RTCRtpSender` uses
    aiortc's ``encoder.pack()`` path (re-packetized, no re-encode). A receiver transform, if any, runs
    first. Returns the receiver's counters (``frames_decoded`` stays 0).
    """
    hook = _receiver_hook(receiver)
    hook.passthrough = True
    return hook.stats


def receiver_stats(receiver: RTCRtpReceiver) -> ReceiverHookStats:
    """The counters of ``receiver`` (installs the inert hook if needed; counts from then on)."""
    return _receiver_hook(receiver).stats


def _media_ssrcs(receiver: RTCRtpReceiver) -> list[int]:
    rtx: dict[int, int] = getattr(receiver, _RX_RTX_SSRC)
    return [s.source for s in receiver.getSynchronizationSources() if s.source not in rtx]


async def request_keyframe(
    receiver: RTCRtpReceiver, ssrc: int | None = None, *, min_interval: float = 0.0
) -> bool:
    """Send a PLI upstream for ``ssrc`` (default: every media SSRC seen in the last 10 s).

    Returns False if nothing was sent: no RTCP SSRC yet (not negotiated), no known SSRC, or the previous
    PLI from this receiver was less than ``min_interval`` seconds ago (an SFU should pass ~0.5–1 s: every
    upstream PLI costs every subscriber a keyframe).
    """
    if getattr(receiver, _RX_RTCP_SSRC) is None:
        return False
    ssrcs = [ssrc] if ssrc is not None else _media_ssrcs(receiver)
    if not ssrcs:
        return False
    hook = _receiver_hook(receiver)
    now = time.monotonic()
    if now - hook.last_pli < min_interval:
        return False
    hook.last_pli = now
    for media_ssrc in ssrcs:
        await receiver._send_rtcp_pli(media_ssrc)
        hook.stats.plis_sent += 1
    return True


# --------------------------------------------------------------------------------------------------------
# RTP-level forwarding (the SFU): raw packets in after SRTP unprotect, raw packets out through SRTP protect
# --------------------------------------------------------------------------------------------------------

RtpTap = Callable[[bytes, int], bool]
"""``fn(rtp, arrival_ms) -> consumed``: called with each unprotected RTP packet a DTLS transport receives."""

RtcpFeedback = Callable[[str, Any], None]
"""``fn(kind, value)`` for RTCP feedback reaching a sender: ``("nack", [seq, ...])``, ``("remb", bps)``,
``("rr", (fraction_lost, jitter))``. PLI/FIR keep going to :func:`on_keyframe_request`."""

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

_DTLS_HANDLE_RTP = "_handle_rtp_data"
_DATAGRAM_RECEIVED = "datagram_received"
_TX_NTP = "_RTCRtpSender__ntp_timestamp"
_TX_RTP_TS = "_RTCRtpSender__rtp_timestamp"
_TX_PACKETS = "_RTCRtpSender__packet_count"
_TX_OCTETS = "_RTCRtpSender__octet_count"
_RX_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"


_direct_taps: weakref.WeakKeyDictionary[Any, Callable[[], None]] = weakref.WeakKeyDictionary()
"""Per tapped DTLS transport: take its datagrams in the socket callback from now on (:meth:`RtpSink._route`:
a connection that only subscribes sends no RTP, and its RTCP must take the direct path too)."""


def tap_rtp(dtls: Any, fn: RtpTap) -> Callable[[], None]:
    """Hand every RTP packet ``dtls`` (an ``RTCDtlsTransport``) receives to ``fn`` once, after SRTP unprotect
    and before aiortc parses it; a packet ``fn`` consumes (returns True) never reaches aiortc's receivers.

    aiortc's ``_recv_next`` calls ``self._handle_rtp_data(data, arrival_time_ms)`` with the unprotected bytes;
    this shadows that method on the *instance* (RTCP still goes through aiortc). Returns a function that
    removes the tap. One tap per transport (BUNDLE: one per peer connection).

    **Direct path.** Each datagram on aiortc's way crosses aioice's STUN parser (which raises on media),
    its data queue, a task switch into the transport's receive loop and a datetime-based arrival time. Once the
    first RTP packet has come that way (SRTP is set up, the ICE sockets are open), the tap also shadows
    ``datagram_received`` on each of the ICE connection's ``StunProtocol`` *instances*: an RTP datagram
    (RFC 7983: first byte 128–191, not RTCP) is unprotected with the transport's receive session and handed
    to ``fn`` right there, in the socket's read callback; SRTCP goes straight to aioice's data queue (not
    through its STUN parser first); STUN and DTLS take aioice's and aiortc's way as before. A packet that fails
    SRTP authentication is dropped, as aiortc drops it. Packets taken this way are not counted in the DTLS
    transport's ``bytesReceived``/``packetsReceived`` statistics."""
    orig = type(dtls)._handle_rtp_data
    dtls_ref = weakref.ref(dtls)
    failures = 0
    rx: list[Any] = [None, None]
    """The receive session last seen and its :class:`_InPlace` (None: pylibsrtp's own calls)."""
    direct: list[Any] = []
    """The protocols whose ``datagram_received`` is shadowed (empty until the first packet)."""
    untapped = False

    def on_datagram(protocol: Any, original: Any) -> Any:
        def datagram_received(data: bytes, addr: Any) -> None:
            if not data:
                return  # nothing to read (aiortc's receive loop would stop on it)
            if 127 < data[0] < 192:
                try:
                    media(data, addr)
                except Exception:  # a packet our handling cannot take is dropped, never raised into the loop
                    nonlocal failures
                    failures += 1
                    if failures == 1:  # once per connection, and never the packet
                        logger.warning("tap_rtp: a packet could not be handled and was dropped", exc_info=True)
                return
            original(data, addr)

        def media(data: bytes, addr: Any) -> None:
            d = dtls_ref()
            srtp = d._rx_srtp if d is not None else None
            if srtp is not rx[0]:
                rx[0], rx[1] = srtp, _InPlace.of(srtp)
            if len(data) > 1 and 191 < data[1] < 209:  # RTCP (aiortc's is_rtcp)
                if srtp is None or d is None:  # aiortc's way, without aioice's attempt to parse it as STUN first
                    protocol.receiver.data_received(data, protocol.local_candidate.component)
                    return
                plain = rx[1].unprotect_rtcp(data) if rx[1] is not None else _unprotect(srtp.unprotect_rtcp, data)
                if plain is None:
                    return
                rest = take_feedback(d, plain)
                if rest:
                    _spawn(_aiortc_rtcp(d, rest))
                return
            if srtp is not None:
                plain = rx[1].unprotect(data) if rx[1] is not None else _unprotect(srtp.unprotect, data)
                if plain is None:
                    return
                if not fn(plain, _arrival_ms()):
                    _spawn(orig(d, plain, _arrival_ms()))
                return
            original(data, addr)

        return datagram_received

    def go_direct(d: Any) -> None:
        ice = getattr(d, "transport", None)
        connection = getattr(ice, "_connection", None)
        recv = getattr(ice, "_recv", None)
        if recv is not None and getattr(recv, "__self__", None) is not connection:
            return  # not aiortc's connection.recv (impair_receive): the wire is impaired, every datagram must cross it
        for protocol in list(getattr(connection, "_protocols", None) or ()):
            if type(protocol) is aioice.ice.StunProtocol and _DATAGRAM_RECEIVED not in protocol.__dict__:
                setattr(protocol, _DATAGRAM_RECEIVED, on_datagram(protocol, protocol.datagram_received))
                direct.append(protocol)

    async def _handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        d = dtls_ref()
        if not direct and d is not None and not untapped:
            go_direct(d)
        if fn(data, arrival_time_ms):
            return
        if d is not None:
            await orig(d, data, arrival_time_ms)

    setattr(dtls, _DTLS_HANDLE_RTP, _handle_rtp_data)

    def direct_now() -> None:
        d = dtls_ref()
        if not direct and d is not None and not untapped:
            go_direct(d)

    _direct_taps[dtls] = direct_now
    _direct_paths[dtls] = direct

    def untap() -> None:
        nonlocal untapped
        untapped = True
        d = dtls_ref()
        if d is not None and _direct_taps.get(d) is direct_now:
            del _direct_taps[d]
        for protocol in direct:
            protocol.__dict__.pop(_DATAGRAM_RECEIVED, None)
        direct.clear()
        d = dtls_ref()
        if d is not None and d.__dict__.get(_DTLS_HANDLE_RTP) is _handle_rtp_data:
            del d.__dict__[_DTLS_HANDLE_RTP]

    return untap


NACK_MAX = 128
"""Sequence numbers one NACK packet may ask for (the rest is ignored: one datagram must not make the SFU resend
thousands of packets; a loss that long is repaired by the key frame the receiver asks for next)."""
_RTCP_HEAD = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_NACK_ITEM = struct.Struct("!HH")


_direct_paths: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
"""Per tapped DTLS transport: the protocols its tap takes datagrams from directly (empty: aiortc's way)."""


def is_direct(dtls: Any) -> bool:
    """Whether ``dtls``'s tap (:func:`tap_rtp`) takes its datagrams in the socket callback by now."""
    try:
        return bool(_direct_paths.get(dtls))
    except TypeError:  # not weak-referenceable: never tapped
        return False


def take_feedback(dtls: Any, data: bytes) -> bytes:
    """Handle the feedback in the unprotected compound RTCP packet ``data`` that is addressed to an
    :class:`RtpSink`'s sender of ``dtls`` without aiortc, and return the rest (b"" if nothing is left).

    Taken here (parsed with ``struct``, no aiortc packet objects, no task): a NACK (RTPFB 1) for a sink's SSRC
    goes to ``sink.feedback("nack", lost)``; a REMB (PSFB 15) to ``sink.feedback("remb", bps)`` of each sink
    it names; a PLI (PSFB 1) or FIR (PSFB 4) for a sink's SSRC to the sender's ``_send_keyframe`` (the
    keyframe hooks, hence the SFU's limiter); a receiver report whose every block is about a sink's SSRC to
    ``sink.feedback("rr", (fraction_lost, jitter))`` of each (aiortc would only keep a round-trip time no one
    reads); SDES is dropped (aiortc routes it nowhere). Everything else (sender reports, which aiortc's receivers
    need for their own reports, BYE, a receiver report about another sender, feedback for another sender) is
    returned as it came, for aiortc's ``_handle_rtcp_data``; a malformed compound packet is returned whole
    (aiortc drops it)."""
    router = getattr(dtls, "_rtp_router", None)
    senders: dict[int, Any] = getattr(router, "senders", None) or {}
    n = len(data)
    pos = 0
    rest: list[bytes] = []
    taken: list[tuple[Any, str, Any]] = []
    while pos < n:
        if pos + 4 > n:
            return data
        first, pt, words = _RTCP_HEAD.unpack_from(data, pos)
        end = pos + 4 * (words + 1)
        if first >> 6 != 2 or end > n:
            return data
        fmt = first & 0x1F
        body_end = end
        if first & 0x20:  # padding: its last byte counts it (aiortc drops the compound packet if it is wrong)
            pad = data[end - 1]
            if pad == 0 or pad > end - pos - 4:
                return data
            body_end = end - pad
        took = False
        if pt == 202:  # SDES: aiortc routes it nowhere
            took = True
        elif pt == 201 and body_end - pos >= 8 + 24 * fmt:  # RR: taken when every report block is about a sink
            blocks = []
            for off in range(pos + 8, pos + 8 + 24 * fmt, 24):
                sender = senders.get(_U32.unpack_from(data, off)[0])
                sink = _sinks.get(sender) if sender is not None else None
                if sink is None:
                    break
                blocks.append((sink, "rr", (data[off + 4], _U32.unpack_from(data, off + 12)[0])))
            else:
                taken.extend(blocks)
                took = True
        elif (pt == 205 and fmt == 1) or (pt == 206 and fmt in (1, 4)):
            if body_end - pos >= 12:
                sender = senders.get(_U32.unpack_from(data, pos + 8)[0])
                sink = _sinks.get(sender) if sender is not None else None
                if sink is not None:
                    if pt == 205:
                        lost: dict[int, None] = {}  # each sequence number once, at most NACK_MAX of them
                        for off in range(pos + 12, body_end - 3, 4):
                            pid, blp = _NACK_ITEM.unpack_from(data, off)
                            lost[pid] = None
                            for bit in range(16):
                                if blp >> bit & 1:
                                    lost[(pid + bit + 1) & 0xFFFF] = None
                            if len(lost) >= NACK_MAX:
                                break
                        taken.append((sink, "nack", list(lost)[:NACK_MAX]))
                    else:
                        taken.append((sender, "key", None))
                    took = True
        elif pt == 206 and fmt == 15:
            try:
                bitrate, ssrcs = unpack_remb_fci(data[pos + 12:body_end])
            except (ValueError, struct.error):  # struct.error: fewer SSRCs than it counts; aiortc's would raise
                took = True  # dropped
            else:
                sinks = [_sinks.get(senders[ssrc]) for ssrc in ssrcs if ssrc in senders]
                if sinks and all(sink is not None for sink in sinks):
                    taken.extend((sink, "remb", bitrate) for sink in sinks)
                    took = True
        if not took:
            rest.append(data[pos:end])
        pos = end
    for target, kind, value in taken:
        if kind == "key":
            target._send_keyframe()
        elif target.feedback is not None:
            target.feedback(kind, value)
    return b"".join(rest)


async def _aiortc_rtcp(dtls: Any, data: bytes) -> None:
    """aiortc's own handling of what :func:`take_feedback` left; a packet that makes it raise is dropped (in
    aiortc's receive loop the error would end the member's transport; here it would be an unretrieved task)."""
    try:
        await dtls._handle_rtcp_data(data)
    except Exception:
        logger.debug("aiortc could not handle an RTCP packet", exc_info=True)


def _arrival_ms() -> int:
    """aiortc's ``clock.current_ms()`` (milliseconds since the NTP epoch) without building datetimes."""
    return int((time.time() + _NTP_EPOCH_OFFSET) * 1000)


_NTP_EPOCH_OFFSET = 2208988800
_spawned: set[asyncio.Future[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)


class ReceiveReports:
    """Feeds aiortc's own receiver statistics for packets that bypass the receiver, so that its RTCP loop keeps
    sending receiver reports (loss, jitter, LSR/DLSR) upstream for them. Create it on the stream's first packet
    and :meth:`add` that packet at once, as aiortc does: statistics without a packet make aiortc's report loop fail
    for good (it cannot write a report block without a highest sequence number)."""

    __slots__ = ("_pkt", "_stats")

    def __init__(self, receiver: RTCRtpReceiver, ssrc: int, clock_rate: int) -> None:
        streams: dict[int, Any] = getattr(receiver, _RX_REMOTE_STREAMS)
        stats = streams.get(ssrc)
        if stats is None:
            stats = streams[ssrc] = _rx_mod.StreamStatistics(clock_rate)
        self._stats = stats
        self._pkt = _SeqTs()

    @property
    def packets_lost(self) -> int:
        """Packets missing from the sequence so far (aiortc's count, as its reports say)."""
        return int(self._stats.packets_lost)

    def add(self, sequence_number: int, timestamp: int) -> None:
        pkt = self._pkt
        pkt.sequence_number = sequence_number
        pkt.timestamp = timestamp
        self._stats.add(pkt)  # type: ignore[arg-type]  # it reads only these two fields (contract check)


async def send_remb(receiver: RTCRtpReceiver, bitrate: int, ssrcs: list[int]) -> bool:
    """Send a REMB (``bitrate`` bps for ``ssrcs``) from ``receiver``, the way aiortc's receiver sends the estimate of
    its bitrate estimator: for a receiver whose packets bypass it (a load generator's light subscriber, which must
    keep sending the feedback a subscriber sends). False, and nothing sent, if the receiver has no RTCP SSRC yet or
    its DTLS transport is not connected (aiortc's ``_send_rtcp`` would drop it silently)."""
    ssrc = getattr(receiver, _RX_RTCP_SSRC)
    if ssrc is None or receiver.transport.state != "connected":
        return False
    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs))
    await receiver._send_rtcp(packet)
    return True


class _SeqTs:
    __slots__ = ("sequence_number", "timestamp")

    def __init__(self) -> None:
        self.sequence_number = 0
        self.timestamp = 0


class RtpSink:
    """Sends finished RTP packets as one :class:`aiortc.RTCRtpSender`'s stream, below aiortc's send path.

    The sender keeps doing what it does well: it is negotiated, registered for RTCP routing, and sends its
    sender reports (fed from :meth:`send_rtp`). The packets themselves skip ``encoder.pack()``,
    ``RtpPacket`` and the async ``_send_rtp`` chain: they are SRTP-protected with the sender's transport's
    ``pylibsrtp`` session and written to the nominated ICE pair's UDP socket directly (through the pair's
    ``send_data`` for relayed pairs). Attributes set once the sender is negotiated: ``ssrc``, ``payload_type``,
    ``mime_type``, ``clock_rate``, ``mid``, ``mid_id`` / ``abs_send_time_id`` (0 if not negotiated).

    :meth:`send_rtp` (the forwarder's path) protects in place: header and payload are copied once into the
    session's own buffer, ``srtp_protect`` runs on it and the socket sends from it (a ``memoryview``), instead of
    ``Session.protect``'s new C allocation, argument checks and copy of the result per packet. Its output is
    byte for byte that of ``Session.protect`` (tested); when pylibsrtp's internals are not as expected it uses
    ``Session.protect``."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.sender = sender
        self.ssrc: int = sender._ssrc
        self.payload_type = -1
        self.mime_type = ""
        self.clock_rate = 0
        self.mid = ""
        self.mid_id = 0
        self.abs_send_time_id = 0
        self.ready = False
        self.feedback: RtcpFeedback | None = None
        self._pair: Any = None
        self._addr: Any = None
        self._nominated: dict[int, Any] = {}
        self._fast: Any = None
        self._sock: Any = None
        """The raw socket of ``_fast`` (asyncio's datagram transport) and its send queue (``_buffer``)."""
        self._queue: Any = None
        self._copy = False
        self._srtp: Any = None
        self._in_place: tuple[Any, Any, memoryview, int, Any] | None = None
        self._sender_attrs: dict[str, Any] = sender.__dict__
        self._pending: set[asyncio.Future[Any]] = set()

    def configure(self, parameters: Any) -> None:
        codec = parameters.codecs[0]
        self.payload_type = codec.payloadType
        self.mime_type = codec.mimeType.lower()
        self.clock_rate = codec.clockRate
        self.mid = parameters.muxId or ""
        for ext in parameters.headerExtensions:
            if ext.uri == MID_URI:
                self.mid_id = ext.id
            elif ext.uri == ABS_SEND_TIME_URI:
                self.abs_send_time_id = ext.id
        self.ready = True

    def _route(self) -> Any:
        dtls = self.sender.transport
        if dtls.state != "connected" or dtls._tx_srtp is None:
            return None
        self._nominated = dtls.transport._connection._nominated
        pair = self._nominated.get(1)
        if pair is None:
            return None
        self._pair = pair
        self._addr = pair.remote_addr
        if dtls._tx_srtp is not self._srtp:
            self._srtp = dtls._tx_srtp
            self._in_place = _srtp_in_place(self._srtp)
        protocol = pair.protocol
        self._fast = protocol.transport if type(protocol) is aioice.ice.StunProtocol else None
        self._sock = getattr(self._fast, "_sock", None)
        self._queue = getattr(self._fast, "_buffer", None)
        self._copy = not isinstance(self._fast, _SELECTOR_DATAGRAM)
        """A transport other than asyncio's (uvloop's) may keep the buffer it is given when it has to queue it."""
        try:
            direct_now = _direct_taps.get(dtls)
        except TypeError:  # not weak-referenceable: never tapped
            direct_now = None
        if direct_now is not None:  # SRTP is up, the pair is nominated: its feedback in the socket callback
            direct_now()
        return pair

    def send_rtp(self, header: bytes | bytearray, payload: bytes, rtp_timestamp: int, ntp_timestamp: int) -> bool:
        """SRTP-protect and send the RTP packet ``header + payload`` and count it for the sender's RTCP sender
        reports (A/V sync, RTT at the receiver: ``ntp_timestamp`` is when the packet with ``rtp_timestamp`` was
        sent, 64-bit NTP fixed point); False if the transport is not connected. ``header`` may be reused once this
        returns."""
        pair = self._pair
        if pair is None or self._nominated.get(1) is not pair:
            pair = self._route()
            if pair is None:
                return False
        head = len(header)
        size = head + len(payload)
        in_place = self._in_place
        data: bytes | memoryview
        if in_place is not None and size <= in_place[3]:
            srtp, cdata, view, _room, size_p = in_place
            view[:head] = header
            view[head:size] = payload
            size_p[0] = size
            if _srtp_protect(srtp, cdata, size_p):  # not srtp_err_status_ok: the session is gone
                self._pair = None
                return False
            data = view[:size_p[0]]
        else:
            try:
                data = self._srtp.protect(bytes(header) + payload)
            except Exception:
                self._pair = None
                return False
        self._write(data)
        attrs = self._sender_attrs
        attrs[_TX_NTP] = ntp_timestamp
        attrs[_TX_RTP_TS] = rtp_timestamp
        attrs[_TX_PACKETS] += 1
        attrs[_TX_OCTETS] += len(payload)
        return True

    def _write(self, data: bytes | memoryview) -> None:
        fast = self._fast
        if fast is not None:
            sock = self._sock
            if sock is not None and not self._queue:  # nothing queued in the transport: its socket, directly
                try:
                    sock.sendto(data, self._addr)
                    return
                except OSError:  # full, interrupted, or closed: the transport's own way (it queues or reports)
                    pass
            # asyncio copies what it has to queue; another transport gets a copy (the buffer is reused at once)
            fast.sendto(bytes(data) if self._copy else data, self._addr)
        else:  # a relayed pair: TURN wraps the datagram (ordering is kept: tasks run in creation order)
            future = asyncio.ensure_future(self._pair.protocol.send_data(bytes(data), self._addr))
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)


_srtp_protect = pylibsrtp.lib.srtp_protect  # type: ignore[attr-defined]
_SELECTOR_DATAGRAM: type = getattr(_sel, "_SelectorDatagramTransport", type(None))
"""asyncio's datagram transport class (private: :func:`check_internals`)."""
_srtp_unprotect = pylibsrtp.lib.srtp_unprotect  # type: ignore[attr-defined]
_srtp_unprotect_rtcp = pylibsrtp.lib.srtp_unprotect_rtcp  # type: ignore[attr-defined]


def _unprotect(method: Callable[[bytes], bytes], data: bytes) -> bytes | None:
    try:
        return method(data)
    except pylibsrtp.Error:  # authentication or replay check failed: dropped, as aiortc drops it
        return None


class _InPlace:
    """SRTP/SRTCP unprotect in a ``pylibsrtp.Session``'s own buffer (its private ``_srtp``, ``_cdata``,
    ``_buffer``: :func:`check_internals`), without ``Session.unprotect``'s argument checks and C allocation per
    packet: the datagram is copied in, unprotected there and copied out once. Same result as ``unprotect`` and
    ``unprotect_rtcp`` (tested); None where that raises ``pylibsrtp.Error``."""

    __slots__ = ("_buf", "_cdata", "_len", "_room", "_srtp")

    def __init__(self, session: Any) -> None:
        self._srtp = session._srtp[0]
        self._cdata = session._cdata
        self._buf = session._buffer
        self._room = len(session._buffer)
        self._len = pylibsrtp.ffi.new("int *")  # type: ignore[attr-defined]

    @classmethod
    def of(cls, session: Any) -> _InPlace | None:
        """The in-place view of ``session``, or None (no session, or pylibsrtp's internals are not as expected)."""
        if session is None:
            return None
        try:
            return cls(session)
        except Exception:
            return None

    def unprotect(self, data: bytes) -> bytes | None:
        return self._run(_srtp_unprotect, data)

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        return self._run(_srtp_unprotect_rtcp, data)

    def _run(self, func: Any, data: bytes) -> bytes | None:
        n = len(data)
        if n > self._room:
            return None
        buf = self._buf
        buf[0:n] = data
        size = self._len
        size[0] = n
        if func(self._srtp, self._cdata, size):
            return None
        return buf[0:size[0]]  # type: ignore[no-any-return]


def _srtp_in_place(session: Any) -> tuple[Any, Any, memoryview, int, Any] | None:
    """(``srtp_t``, its buffer, a writable view of it, the largest packet it protects, an ``int *``) of a
    ``pylibsrtp.Session`` (its private ``_srtp``, ``_cdata``, ``_buffer``: :func:`check_internals`), or None."""
    try:
        view = memoryview(session._buffer)
        if view.readonly or view.itemsize != 1:
            return None
        return session._srtp[0], session._cdata, view, len(view) - pylibsrtp.SRTP_MAX_TRAILER_LEN, \
            pylibsrtp.ffi.new("int *")  # type: ignore[attr-defined]
    except Exception:
        return None


_sinks: weakref.WeakKeyDictionary[RTCRtpSender, RtpSink] = weakref.WeakKeyDictionary()


def rtp_sink(sender: RTCRtpSender) -> RtpSink:
    """The :class:`RtpSink` of ``sender`` (created once; install before negotiation completes).

    Shadows on the instance: ``send(parameters)`` (public; recorded, then aiortc's runs) and
    ``_handle_rtcp_packet`` (NACK, REMB and receiver reports go to ``sink.feedback``; aiortc keeps RR/SR
    bookkeeping and PLI/FIR handling; its own retransmission and REMB handling are skipped: it never sent these
    packets and has no encoder to tune)."""
    with _hooks_lock:
        sink = _sinks.get(sender)
        if sink is not None:
            return sink
        sink = _sinks[sender] = RtpSink(sender)
    sink_ref = weakref.ref(sink)
    sender_ref = weakref.ref(sender)
    orig_send = type(sender).send
    orig_rtcp = type(sender)._handle_rtcp_packet

    async def send(parameters: Any) -> None:
        s, k = sender_ref(), sink_ref()
        if s is None:
            return
        if k is not None and not k.ready:
            k.configure(parameters)
        await orig_send(s, parameters)

    async def _handle_rtcp_packet(packet: Any) -> None:
        s, k = sender_ref(), sink_ref()
        if s is None:
            return
        callback = k.feedback if k is not None else None
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            if callback is not None:  # aiortc's parser does not wrap a number past 65535 (a PID near it, a BLP bit)
                callback("nack", [seq & 0xFFFF for seq in packet.lost])
            return
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            # REMB: aiortc would only hand it to an encoder this sender does not use
            if callback is not None:
                with contextlib.suppress(ValueError):
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                    if s._ssrc in ssrcs:
                        callback("remb", bitrate)
            return
        if callback is not None:
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == s._ssrc:
                        callback("rr", (report.fraction_lost, report.jitter))
        await orig_rtcp(s, packet)

    async def _run_rtcp() -> None:
        # aiortc's loop, one per sender, sends an SR + SDES compound packet about every second; the sinks of one
        # event loop share one timer instead, and each connection gets one compound packet for all its sinks
        s = sender_ref()
        if s is None:
            return
        attrs = s.__dict__
        attrs[_TX_RTCP_STARTED].set()
        reports = _SenderReports.of(asyncio.get_running_loop())
        reports.add(s)
        try:
            await asyncio.get_running_loop().create_future()  # until aiortc's stop() cancels it
        except asyncio.CancelledError:
            pass
        finally:
            reports.discard(s)
        with contextlib.suppress(ConnectionError):  # aiortc's goodbye, as its own loop sends it
            await s._send_rtcp([RtcpByePacket(sources=[s._ssrc])])
        attrs[_TX_RTCP_EXITED].set()

    sender.send = send  # type: ignore[method-assign]
    sender._handle_rtcp_packet = _handle_rtcp_packet  # type: ignore[method-assign]
    sender._run_rtcp = _run_rtcp  # type: ignore[method-assign]
    return sink


_TX_RTCP_STARTED = "_RTCRtpSender__rtcp_started"
_TX_RTCP_EXITED = "_RTCRtpSender__rtcp_exited"
_TX_CNAME = "_RTCRtpSender__cname"
_TX_LSR = "_RTCRtpSender__lsr"
_TX_LSR_TIME = "_RTCRtpSender__lsr_time"
SDES_CNAME = 1
SDES_MAX_CHUNKS = 31
"""Chunks one SDES packet can carry (its 5-bit source count)."""


class _SenderReports:
    """The RTCP sender reports of every :class:`RtpSink`'s sender on one event loop, on one timer.

    aiortc gives each sender its own task that wakes about once a second (0.5–1.5 s) to send an SR and an SDES
    packet: a subscriber with eight slots costs the SFU eight wake-ups and eight datagrams a second. Here one
    task wakes at the same randomised interval and sends each connection (DTLS transport) one compound packet:
    an SR per sender (from the counters :meth:`RtpSink.send_rtp` feeds, as aiortc's would be), then one SDES
    with every sender's CNAME (RFC 3550 §6.1 compound packets; several SSRCs of one endpoint in one, RFC 8108
    §5.3). aiortc's round-trip bookkeeping (``__lsr``, ``__lsr_time``) is kept as its own loop keeps it."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SenderReports]] = \
        weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.senders: dict[RTCRtpSender, None] = {}
        """In the order they started (a dict: ordered, no duplicates)."""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _SenderReports:
        reports = cls._by_loop.get(loop)
        if reports is None:
            reports = cls._by_loop[loop] = cls()
        return reports

    def add(self, sender: RTCRtpSender) -> None:
        self.senders[sender] = None
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def discard(self, sender: RTCRtpSender) -> None:
        self.senders.pop(sender, None)
        if not self.senders and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.5 + secrets.randbelow(1000) / 1000)
            try:
                self.send_now()
            except Exception:  # never end the one timer every connection's reports depend on
                logger.warning("sender reports could not be sent", exc_info=True)

    def send_now(self) -> None:
        """The compound packets of each connection, for every sender registered now."""
        by_transport: dict[Any, list[RTCRtpSender]] = {}
        for sender in self.senders:
            by_transport.setdefault(sender.transport, []).append(sender)
        for transport, senders in by_transport.items():
            try:  # one connection's failure must not stop the others' reports (one timer for all)
                compounds = compound_sender_reports(senders)
            except Exception:
                logger.warning("sender reports of a connection could not be built", exc_info=True)
                continue
            for compound in compounds:
                _spawn(_send_compound(transport, compound))


RTCP_COMPOUND_MAX = 1100
"""Bytes of one compound packet before SRTCP: below WebRTC's ~1200-byte safe datagram with SRTCP's trailer and
IP/UDP (and TURN) headers, and well below what pylibsrtp protects (1,352 bytes)."""


def compound_sender_reports(senders: list[RTCRtpSender]) -> list[bytes]:
    """Compound packets of at most :data:`RTCP_COMPOUND_MAX` bytes: each an SR for some of ``senders`` (as aiortc's
    ``_run_rtcp`` builds it), then one SDES packet with their CNAMEs."""
    now = time.time()
    compounds: list[bytes] = []
    reports: list[bytes] = []
    chunks: list[RtcpSourceInfo] = []
    size = 4  # the SDES header

    def close() -> None:
        if reports:
            compounds.append(b"".join(reports) + (bytes(RtcpSdesPacket(chunks=chunks)) if chunks else b""))
        reports.clear()
        chunks.clear()

    for sender in senders:
        attrs = sender.__dict__
        ntp = attrs[_TX_NTP]
        report = bytes(RtcpSrPacket(ssrc=sender._ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=attrs[_TX_RTP_TS], packet_count=attrs[_TX_PACKETS] & 0xFFFFFFFF,
            octet_count=attrs[_TX_OCTETS] & 0xFFFFFFFF)))
        cname = attrs.get(_TX_CNAME)
        chunk = RtcpSourceInfo(ssrc=sender._ssrc, items=[(SDES_CNAME, cname.encode("utf8")[:255])]) \
            if cname is not None else None
        grows = len(report) + (len(bytes(RtcpSdesPacket(chunks=[chunk]))) - 4 if chunk is not None else 0)
        if reports and (size + grows > RTCP_COMPOUND_MAX or len(chunks) == SDES_MAX_CHUNKS):
            close()
            size = 4
        reports.append(report)
        if chunk is not None:
            chunks.append(chunk)
        size += grows
        attrs[_TX_LSR] = (ntp >> 16) & 0xFFFFFFFF
        attrs[_TX_LSR_TIME] = now
    close()
    return compounds


async def _send_compound(transport: Any, payload: bytes) -> None:
    try:
        await transport._send_rtp(payload)
    except ConnectionError:  # as aiortc's _send_rtcp: a transport that is not (yet) up
        pass
    except Exception:
        logger.warning("a compound sender report could not be sent", exc_info=True)


def impair_receive(dtls: Any, keep: Callable[[bytes], bool]) -> Callable[[], None]:
    """Emulate a bad link into one connection: every datagram ``dtls`` (an ``RTCDtlsTransport``) would read from
    the wire goes through ``keep(datagram)`` first (still SRTP-protected, as on the wire); False drops it.

    For benchmarks and tests (a lossy, rate-limited subscriber). Shadows ``_recv`` on the transport's
    ``RTCIceTransport`` *instance* (aiortc sets it to the aioice connection's ``recv``). Returns a function
    that restores it."""
    ice = dtls.transport
    wire = ice._recv

    async def _recv() -> bytes:
        while True:
            data: bytes = await wire()
            if keep(data):
                return data

    ice._recv = _recv

    def restore() -> None:
        if ice.__dict__.get("_recv") is _recv:
            ice._recv = wire

    return restore


# --------------------------------------------------------------------------------------------------------
# Contract check
# --------------------------------------------------------------------------------------------------------


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def selected_pair_types(pc: Any) -> list[tuple[str, str]]:
    """(local, remote) candidate types of the nominated ICE pairs of ``pc`` (aioice's private ``_nominated``)."""
    out: list[tuple[str, str]] = []
    seen: set[int] = set()
    for t in pc.getTransceivers():
        transport = getattr(t.sender, "transport", None)
        ice = getattr(transport, "transport", None)
        conn = getattr(ice, "_connection", None)
        if conn is None or id(conn) in seen:
            continue
        seen.add(id(conn))
        for pair in dict(getattr(conn, "_nominated", {}) or {}).values():
            out.append((pair.local_candidate.type, pair.remote_candidate.type))
    return out


def check_internals() -> list[str]:
    """List every way the installed aiortc/aioice differs from what the hooks rely on ([] = all good).

    Checks attribute presence, signatures, and (through the compiled code's referenced names) that the
    private attributes and call sites the hooks depend on are still used where we expect them.
    """
    problems: list[str] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            problems.append(what)

    def names(fn: Any) -> set[str]:
        code = getattr(fn, "__code__", None)
        return set(code.co_names) if code is not None else set()

    def expect_sig(owner: Any, attr: str, params: list[str], *, is_async: bool | None = None) -> Any:
        fn = getattr(owner, attr, None)
        label = f"{getattr(owner, '__name__', owner)}.{attr}"
        if fn is None or not callable(fn):
            problems.append(f"{label} is missing")
            return None
        try:
            got = _params(fn)
        except (TypeError, ValueError):
            problems.append(f"{label}: signature unavailable")
            return fn
        if got != params:
            problems.append(f"{label} signature changed: {got} != {params}")
        if is_async is not None and inspect.iscoroutinefunction(fn) != is_async:
            problems.append(f"{label} async-ness changed (expected async={is_async})")
        return fn

    version = getattr(aiortc, "__version__", "")
    expect(version.startswith(SUPPORTED_AIORTC + "."), f"aiortc {version!r} is not {SUPPORTED_AIORTC}.*")

    # aioice
    expect_sig(aioice.ice, "get_host_addresses", ["use_ipv4", "use_ipv6"])
    check_complete = getattr(aioice.ice.Connection, "check_complete", None)
    expect(check_complete is not None and "_nominated" in names(check_complete),
           "aioice Connection no longer records nominated pairs in _nominated (selected_pair_types)")
    gather = getattr(aioice.ice.Connection, "gather_candidates", None)
    expect(gather is not None and "get_host_addresses" in names(gather),
           "aioice Connection.gather_candidates no longer calls get_host_addresses")
    component = getattr(aioice.ice.Connection, "get_component_candidates", None)
    expect(component is not None and {"get_running_loop", "create_datagram_endpoint"} <= names(component),
           "aioice Connection.get_component_candidates no longer binds host candidates with the running loop's "
           "create_datagram_endpoint (bind_host_candidates_in)")

    # sender
    expect(callable(getattr(_tx_mod, "get_encoder", None)), "aiortc.rtcrtpsender.get_encoder is missing")
    expect_sig(aiortc.codecs, "get_encoder", ["codec"])
    nxt = expect_sig(RTCRtpSender, "_next_encoded_frame", ["self", "codec"], is_async=True)
    if nxt is not None:
        used = names(nxt)
        for needed in (_TX_ENCODER, _TX_FORCE_KEYFRAME, "get_encoder", "encode", "pack"):
            expect(needed in used, f"RTCRtpSender._next_encoded_frame no longer uses {needed}")
    run_rtp = getattr(RTCRtpSender, "_run_rtp", None)
    expect(run_rtp is not None and "_next_encoded_frame" in names(run_rtp),
           "RTCRtpSender._run_rtp no longer calls self._next_encoded_frame")
    expect(_TX_ENCODER in names(RTCRtpSender.__init__), f"RTCRtpSender.__init__ no longer sets {_TX_ENCODER}")
    expect_sig(RTCRtpSender, "_send_keyframe", ["self"], is_async=False)
    skf = getattr(RTCRtpSender, "_send_keyframe", None)
    expect(skf is not None and _TX_FORCE_KEYFRAME in names(skf),
           f"RTCRtpSender._send_keyframe no longer sets {_TX_FORCE_KEYFRAME}")
    rtcp = getattr(RTCRtpSender, "_handle_rtcp_packet", None)
    expect(rtcp is not None and "_send_keyframe" in names(rtcp),
           "RTCRtpSender._handle_rtcp_packet no longer calls _send_keyframe on PLI/FIR")

    # encoders
    expect_sig(Vp8Encoder, "_packetize", ["buffer", "picture_id"])  # classmethod: cls is bound
    expect_sig(Vp8Encoder, "encode", ["self", "frame", "force_keyframe"])
    expect_sig(Vp8Encoder, "pack", ["self", "packet"])
    for method in ("encode", "pack"):
        expect("_packetize" in names(getattr(Vp8Encoder, method, None)),
               f"Vp8Encoder.{method} no longer goes through _packetize")
    # TemporalVp8Encoder (send_temporal_layers): aiortc's VP8 encoder state and descriptor writer
    expect({"codec", "picture_id"} <= names(Vp8Encoder.__init__),
           "Vp8Encoder.__init__ no longer sets codec / picture_id (TemporalVp8Encoder)")
    expect(isinstance(getattr(Vp8Encoder, "target_bitrate", None), property),
           "Vp8Encoder.target_bitrate is no longer a property (TemporalVp8Encoder)")
    expect_sig(VpxPayloadDescriptor, "__init__", ["self", "partition_start", "partition_id", "picture_id",
                                                   "tl0picidx", "tid", "keyidx"])
    expect(isinstance(VP8_PACKET_MAX, int), "aiortc.codecs.vpx.PACKET_MAX is missing")
    expect_sig(aiortc.mediastreams, "convert_timebase", ["pts", "from_base", "to_base"])
    expect_sig(OpusEncoder, "encode", ["self", "frame", "force_keyframe"])
    expect_sig(OpusEncoder, "pack", ["self", "packet"])
    expect("options" in names(OpusEncoder.__init__) and "codec" in names(OpusEncoder.__init__),
           "OpusEncoder.__init__ no longer sets codec.options (limit_metadata's constant bitrate)")

    # metadata: header extensions and codecs per transceiver
    expect_sig(RTCPeerConnection, _PC_CREATE_TRANSCEIVER, ["self", "direction", "kind", "sender_track"])
    for method in ("addTrack", "addTransceiver", "setRemoteDescription"):
        expect(_PC_CREATE_TRANSCEIVER in names(getattr(RTCPeerConnection, method, None)),
               f"RTCPeerConnection.{method} no longer creates transceivers with {_PC_CREATE_TRANSCEIVER}")
    for method in ("createOffer", "setRemoteDescription"):
        used = names(getattr(RTCPeerConnection, method, None))
        expect({"_headerExtensions", "_codecs", "HEADER_EXTENSIONS"} <= used,
               f"RTCPeerConnection.{method} no longer assigns transceiver._headerExtensions/_codecs")
    expect({"_headerExtensions", "_codecs"} <= names(RTCRtpTransceiver.__init__),
           "RTCRtpTransceiver.__init__ no longer sets _headerExtensions/_codecs")
    expect(callable(getattr(_pc_mod, "find_common_header_extensions", None)),
           "aiortc.rtcpeerconnection.find_common_header_extensions is missing")

    # receiver
    expect_sig(_rx_mod, "decoder_worker", ["loop", "input_q", "output_q", "decode_error"])
    worker_names = names(getattr(_rx_mod, "decoder_worker", None))
    for needed in ("get", "get_decoder", "decode", "put", "run_coroutine_threadsafe"):
        expect(needed in worker_names, f"aiortc.rtcrtpreceiver.decoder_worker no longer uses {needed}")
    expect(_RX_DECODER_QUEUE in names(RTCRtpReceiver.__init__)
           and _RX_KIND in names(RTCRtpReceiver.__init__)
           and _RX_RTX_SSRC in names(RTCRtpReceiver.__init__)
           and _RX_RTCP_SSRC in names(RTCRtpReceiver.__init__),
           "RTCRtpReceiver.__init__ no longer sets the decoder queue / kind / rtx / rtcp-ssrc attributes")
    handle = expect_sig(RTCRtpReceiver, "_handle_rtp_packet", ["self", "packet", "arrival_time_ms"],
                        is_async=True)
    if handle is not None:
        used = names(handle)
        for needed in (_RX_DECODER_QUEUE, "put"):
            expect(needed in used, f"RTCRtpReceiver._handle_rtp_packet no longer uses {needed}")
    receive = getattr(RTCRtpReceiver, "receive", None)
    expect(receive is not None and {"_track", "_queue", _RX_DECODER_QUEUE} <= names(receive),
           "RTCRtpReceiver.receive no longer hands decoder_queue/_track._queue to the decoder thread")
    expect_sig(RTCRtpReceiver, "_send_rtcp_pli", ["self", "media_ssrc"], is_async=True)
    expect(callable(getattr(RTCRtpReceiver, "getSynchronizationSources", None)),
           "RTCRtpReceiver.getSynchronizationSources is missing")
    expect("_queue" in names(_rx_mod.RemoteStreamTrack.__init__),
           "RemoteStreamTrack no longer has an asyncio queue _queue")
    expect_sig(JitterFrame, "__init__", ["self", "data", "timestamp"])

    # RTP-level forwarding (tap_rtp, RtpSink, ReceiveReports)
    dtls_cls = _dtls_mod.RTCDtlsTransport
    expect_sig(dtls_cls, _DTLS_HANDLE_RTP, ["self", "data", "arrival_time_ms"], is_async=True)
    recv_next = getattr(dtls_cls, "_recv_next", None)
    expect(recv_next is not None and {_DTLS_HANDLE_RTP, "_rx_srtp", "unprotect"} <= names(recv_next),
           "RTCDtlsTransport._recv_next no longer hands unprotected RTP to self._handle_rtp_data")
    setup = getattr(dtls_cls, "_setup_srtp", None)
    expect(setup is not None and {"_tx_srtp", "allow_repeat_tx"} <= names(setup),
           "RTCDtlsTransport._setup_srtp no longer keeps its tx pylibsrtp Session in _tx_srtp (repeat allowed)")
    send_rtp = getattr(dtls_cls, "_send_rtp", None)
    expect(send_rtp is not None and {"_tx_srtp", "protect", "transport", "_send"} <= names(send_rtp),
           "RTCDtlsTransport._send_rtp no longer protects with _tx_srtp and sends on its ICE transport")
    expect({"_connection", "_recv"} <= names(aiortc.RTCIceTransport.__init__),
           "RTCIceTransport no longer keeps its aioice Connection in _connection and its recv in _recv")
    expect(recv_next is not None and {"transport", "_recv"} <= names(recv_next),
           "RTCDtlsTransport._recv_next no longer reads datagrams with self.transport._recv() (impair_receive)")
    sendto = getattr(aioice.ice.Connection, "sendto", None)
    expect(sendto is not None and {"_nominated", "protocol", "send_data", "remote_addr"} <= names(sendto),
           "aioice Connection.sendto no longer sends through _nominated[component].protocol.send_data")
    expect_sig(aioice.ice.StunProtocol, "send_data", ["self", "data", "addr"], is_async=True)
    # tap_rtp's direct path
    received = expect_sig(aioice.ice.StunProtocol, _DATAGRAM_RECEIVED, ["self", "data", "addr"], is_async=False)
    expect(received is not None and {"parse_message", "receiver", "data_received", "local_candidate", "component"}
           <= names(received),
           "StunProtocol.datagram_received no longer hands non-STUN datagrams to receiver.data_received(data, "
           "local_candidate.component)")
    expect({"_recv", "_connection", "recv"} <= names(aiortc.rtcicetransport.RTCIceTransport.__init__),
           "RTCIceTransport.__init__ no longer sets self._recv = self._connection.recv (tap_rtp: impaired wires)")
    expect("_protocols" in names(aioice.ice.Connection.__init__),
           "aioice Connection no longer keeps its StunProtocols in _protocols")
    # take_feedback: SRTCP unprotected once in the socket callback, the rest to aiortc's own RTCP handler
    expect(callable(getattr(pylibsrtp.Session, "unprotect_rtcp", None)), "pylibsrtp.Session.unprotect_rtcp is missing")
    expect_sig(dtls_cls, "_handle_rtcp_data", ["self", "data"], is_async=True)
    handle_rtcp = getattr(dtls_cls, "_handle_rtcp_data", None)
    expect(handle_rtcp is not None and {"_rtp_router", "route_rtcp"} <= names(handle_rtcp),
           "RTCDtlsTransport._handle_rtcp_data no longer routes RTCP with self._rtp_router.route_rtcp")
    route = getattr(_dtls_mod.RtpRouter, "route_rtcp", None)
    expect(route is not None and "senders" in names(route)
           and "senders" in names(_dtls_mod.RtpRouter.__init__),
           "aiortc's RtpRouter no longer keeps its senders by SSRC in senders")
    expect(recv_next is not None and {"is_rtcp", "unprotect", "unprotect_rtcp", "_rx_srtp"} <= names(recv_next),
           "RTCDtlsTransport._recv_next no longer tells RTCP from RTP with is_rtcp and unprotects with _rx_srtp")
    expect(callable(getattr(pylibsrtp, "Error", None)) and callable(getattr(pylibsrtp.Session, "unprotect", None)),
           "pylibsrtp.Session.unprotect / pylibsrtp.Error are missing")
    # RtpSink.send_rtp: pylibsrtp's session buffer and call, in place
    process = getattr(pylibsrtp.Session, "_Session__process", None)
    expect(process is not None and {"_cdata", "_buffer", "_srtp"} <= names(process)
           and "srtp_protect" in names(getattr(pylibsrtp.Session, "protect", None)),
           "pylibsrtp.Session.protect no longer runs srtp_protect on its _srtp over its _cdata/_buffer")
    expect(_srtp_in_place(pylibsrtp.Session()) is not None,
           "pylibsrtp.Session no longer has a writable _buffer over _cdata and an srtp_t in _srtp (RtpSink)")
    expect("srtp_unprotect" in names(getattr(pylibsrtp.Session, "unprotect", None))
           and "srtp_unprotect_rtcp" in names(getattr(pylibsrtp.Session, "unprotect_rtcp", None))
           and _InPlace.of(pylibsrtp.Session()) is not None,
           "pylibsrtp.Session.unprotect/unprotect_rtcp no longer run srtp_unprotect/srtp_unprotect_rtcp over its "
           "_cdata/_buffer (tap_rtp's in-place unprotect)")
    # RtpSink._write: the datagram transport's raw socket and its send queue
    expect({"_sock", "_buffer"} <= names(getattr(_SELECTOR_DATAGRAM, "sendto", None)),
           "asyncio's datagram transport no longer sends on self._sock when self._buffer is empty (RtpSink._write)")
    # small_datagram_reads: asyncio's datagram transport reads max_size bytes per datagram

    dgram = getattr(_sel, "_SelectorDatagramTransport", None)
    expect(dgram is not None and isinstance(getattr(dgram, "max_size", None), int)
           and "max_size" in names(getattr(dgram, "_read_ready", None)),
           "asyncio's datagram transport no longer reads max_size bytes per datagram (small_datagram_reads)")
    expect("transport" in names(aioice.ice.StunProtocol.send_data), "StunProtocol.send_data no longer uses "
           "self.transport.sendto")
    expect_sig(RTCRtpSender, "send", ["self", "parameters"], is_async=True)
    expect_sig(RTCRtpSender, "_handle_rtcp_packet", ["self", "packet"], is_async=True)
    if rtcp is not None:
        expect({"_retransmit", "lost"} <= names(rtcp), "RTCRtpSender._handle_rtcp_packet no longer serves NACKs "
               "with _retransmit")
    expect("_ssrc" in names(RTCRtpSender.__init__), "RTCRtpSender.__init__ no longer sets _ssrc")
    sr_attrs = {_TX_NTP, _TX_RTP_TS, _TX_PACKETS, _TX_OCTETS}
    expect(sr_attrs <= names(RTCRtpSender.__init__) and sr_attrs <= names(getattr(RTCRtpSender, "_run_rtcp", None)),
           "RTCRtpSender._run_rtcp no longer builds its sender reports from the counters RtpSink.send_rtp feeds")
    # _SenderReports: one timer for the sinks' sender reports, in place of each sender's _run_rtcp
    run_rtcp_attrs = {_TX_RTCP_STARTED, _TX_RTCP_EXITED, _TX_CNAME, _TX_LSR, _TX_LSR_TIME, "_send_rtcp"}
    expect(run_rtcp_attrs <= names(getattr(RTCRtpSender, "_run_rtcp", None)) | names(RTCRtpSender.__init__),
           "RTCRtpSender._run_rtcp no longer sets __rtcp_started/__rtcp_exited, sends its CNAME and keeps __lsr")
    expect("_run_rtcp" in names(RTCRtpSender.send) and {_TX_RTCP_STARTED, _TX_RTCP_EXITED} <= names(RTCRtpSender.stop),
           "RTCRtpSender.send no longer starts self._run_rtcp() or stop() no longer waits on its started/exited events")
    expect_sig(RTCRtpSender, "_send_rtcp", ["self", "packets"], is_async=True)
    # send_remb (a load generator's light subscribers): aiortc's own REMB, sent the way its receiver sends it
    expect_sig(RTCRtpReceiver, "_send_rtcp", ["self", "packet"], is_async=True)
    expect(_RX_RTCP_SSRC in names(getattr(RTCRtpReceiver, "_handle_rtp_packet", None))
           and "pack_remb_fci" in names(getattr(RTCRtpReceiver, "_handle_rtp_packet", None)),
           "RTCRtpReceiver._handle_rtp_packet no longer sends REMB from __rtcp_ssrc (send_remb)")
    expect_sig(RtcpPsfbPacket, "__init__", ["self", "fmt", "ssrc", "media_ssrc", "fci"])
    # ReceiveReports.packets_lost
    expect(isinstance(getattr(_rx_mod.StreamStatistics, "packets_lost", None), property),
           "aiortc's StreamStatistics.packets_lost is no longer a property (ReceiveReports.packets_lost)")
    expect(_RX_REMOTE_STREAMS in names(RTCRtpReceiver.__init__)
           and _RX_REMOTE_STREAMS in names(getattr(RTCRtpReceiver, "_run_rtcp", None)),
           "RTCRtpReceiver._run_rtcp no longer reports on __remote_streams (ReceiveReports)")
    expect_sig(_rx_mod.StreamStatistics, "__init__", ["self", "clockrate"])
    expect_sig(_rx_mod.StreamStatistics, "add", ["self", "packet"])
    expect({"sequence_number", "timestamp"} >= {n for n in names(_rx_mod.StreamStatistics.add)
                                                 if n in ("sequence_number", "timestamp", "payload", "ssrc")},
           "StreamStatistics.add reads more of the packet than sequence_number and timestamp")
    return problems
