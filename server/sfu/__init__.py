"""The forwarding SFU for family and group sessions: encoded VP8/Opus in, the same encoded frames out.

* :mod:`server.sfu.manager` — :class:`SfuManager`, lives in the signaling process; routes each room to one
  worker process (pinned), watches worker health, turns worker replies into server messages.
* :mod:`server.sfu.worker` — the worker process: its own asyncio loop, one ``RTCPeerConnection`` per
  participant, pass-through receivers (never decodes), fan-out to every other admitted member.

See docs/sfu.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .runtime import SOCKET_NAME, adoptable

if TYPE_CHECKING:
    from .manager import SfuManager

__all__ = ["SOCKET_NAME", "SfuManager", "adoptable"]


def __getattr__(name: str) -> Any:
    # The manager imports aiortc: load it only when an SFU room needs it (server.sfu.addressing is light).
    if name == "SfuManager":
        from .manager import SfuManager

        return SfuManager
    raise AttributeError(name)
