"""The pre-join connectivity test: a short WebRTC call to the server's own aiortc echo peer.

A client on the join page (waiting, not admitted) asks ``POST /api/echo/ice`` with its link's token for the
test's own ICE servers (TURN credentials that expire after :data:`TURN_LIFETIME_S`), then ``POST
/api/echo/offer`` with an offer; the echo peer answers and sends every received audio and video packet back to the
sender unchanged (pass-through: nothing is decoded, nothing is kept). The call ends by itself after
:data:`CALL_LIMIT_S` seconds. The client learns from its own ``getStats`` whether the media came back directly,
through the relay, or not at all.

The server *sees* this media (it is not end-to-end encrypted): the page says so; see docs/security.md. Nothing
is stored and nothing is counted per person: the only state is the open calls, in memory, for at most
:data:`CALL_LIMIT_S` seconds.

aiortc is imported when the first test call comes (the server starts without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from .sfu.addressing import MediaAddressing, announce, has_candidates

CALL_LIMIT_S: Final = 10.0
"""An echo call is closed this many seconds after its answer, whatever its state."""
TURN_LIFETIME_S: Final = 30
"""The test's TURN credentials expire this many seconds after they were issued."""
MAX_CALLS: Final = 8
"""Echo calls open at once on one server; more are refused with ``busy`` (503)."""

log = logging.getLogger("alcove.echo")


class EchoBusy(Exception):
    """Too many echo calls are open."""


class EchoUnreachable(Exception):
    """The echo peer has no candidate a client could reach."""


class EchoCalls:
    """The open echo calls of one server process."""

    def __init__(self, ice_servers: list[dict[str, Any]], addressing: MediaAddressing, *,
                 limit_s: float = CALL_LIMIT_S, max_calls: int = MAX_CALLS) -> None:
        self.ice_servers = ice_servers
        self.addressing = addressing
        self.limit_s = limit_s
        self.max_calls = max_calls
        self._calls: set[Any] = set()
        self._timers: set[asyncio.Task[None]] = set()
        self._prepared = False

    def __len__(self) -> int:
        return len(self._calls)

    def _prepare(self) -> None:
        if self._prepared:
            return
        from rtc import aiortc_hooks as hooks

        if self.addressing.loopback:
            hooks.allow_loopback_candidates()
        if self.addressing.ports is not None:
            hooks.bind_host_candidates_in(asyncio.get_running_loop(), *self.addressing.ports)
        self._prepared = True

    async def answer(self, offer_sdp: str) -> str:
        """Answer ``offer_sdp`` with an echo peer; the call closes itself after ``limit_s`` seconds.

        Raises :class:`EchoBusy`, :class:`EchoUnreachable`, or ``ValueError`` for an offer aiortc refuses.
        """
        if len(self._calls) >= self.max_calls:
            raise EchoBusy
        self._prepare()
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from rtc import aiortc_hooks as hooks
        from rtc.codecs import prefer_vp8_opus
        from rtc.ice import aiortc_configuration

        from .sfu.worker import Slot, Stream

        pc = RTCPeerConnection(aiortc_configuration(self.ice_servers, relay_only=False, bundle=True))
        self._calls.add(pc)
        streams: list[Any] = []
        slots: list[Any] = []

        async def close() -> None:
            for stream in streams:
                stream.close()
            for slot in slots:
                slot.stop()
            with contextlib.suppress(Exception):
                await pc.close()
            self._calls.discard(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                if transceiver.kind not in ("audio", "video") or transceiver.receiver.track is None:
                    continue
                prefer_vp8_opus(transceiver)
                stream = Stream("echo", transceiver.kind, transceiver.receiver, passthrough=True, pli_interval=0.5)
                slot = Slot(transceiver.kind, transceiver.mid or "", 0)
                slot.unsubscribe = hooks.on_keyframe_request(transceiver.sender, slot.on_keyframe_request)
                transceiver.sender.replaceTrack(slot)
                transceiver.direction = "sendrecv"
                slot.attach(stream)
                streams.append(stream)
                slots.append(slot)
            if not streams:
                raise ValueError("the offer sends no audio or video")
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await close()
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"the echo peer cannot answer this offer ({type(exc).__name__})") from None
        sdp = pc.localDescription.sdp
        if self.addressing.announced:
            sdp = announce(sdp, self.addressing.announced)
        if not has_candidates(sdp):
            await close()
            raise EchoUnreachable
        timer = asyncio.create_task(self._expire(close), name="alcove-echo-limit")
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)
        return str(sdp)

    async def _expire(self, close: Any) -> None:
        await asyncio.sleep(self.limit_s)
        await close()

    async def close(self) -> None:
        """Close every open call (server shutdown)."""
        for timer in tuple(self._timers):
            timer.cancel()
        for pc in tuple(self._calls):
            with contextlib.suppress(Exception):
                await pc.close()
        self._calls.clear()
