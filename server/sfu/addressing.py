"""Where the SFU can be reached: the addresses and UDP ports it offers in its ICE candidates.

Three settings decide it (``docs/operations.md``, "Behind 1:1 NAT"):

* ``ALCOVE_MEDIA_ANNOUNCED_ADDRESS``: the address clients must send media to, when it is not one of the host's
  own (a cloud VM whose public address reaches its private one by 1:1 NAT, a container with published ports).
  The SFU still binds its sockets on the host's addresses, and advertises this address in their place, as
  mediasoup's ``announcedAddress``, LiveKit's ``node_ip`` or Janus's ``nat_1_1_mapping`` do.
* ``ALCOVE_MEDIA_PORTS``: ``first-last``, the UDP ports the SFU's sockets use (one per client connection), so a
  firewall or a NAT can forward exactly that range.
* Loopback: aioice leaves 127.0.0.1 out of its candidates. When the server is reachable only on loopback (it
  listens on a loopback address and its public URL, if any, is a loopback one), every client is on this
  machine, so the SFU offers loopback candidates by itself; ``ALCOVE_MEDIA_LOOPBACK=1`` forces them.

If none of these gives the SFU an address a client could reach (no non-loopback interface, no announced
address, no TURN relay), the server says so at start and in ``/healthz``, and the SFU answers offers with the
``media-unreachable`` error instead of an answer without candidates, so that clients do not wait for media that
cannot come.

Pure functions: no aiortc or asyncio here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

UNREACHABLE_MESSAGE = "the media server has no reachable address"
"""The one sentence the server, the probe and the browser client use for this failure."""

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host\b.*)$")
_CONNECTION = re.compile(r"^c=IN IP[46] \S+$")


def parse_ports(value: str) -> tuple[int, int]:
    """``ALCOVE_MEDIA_PORTS``: ``"40000-40999"`` → ``(40000, 40999)``; ValueError with a clear message."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", value)
    first, last = (int(match[1]), int(match[2])) if match else (0, 0)
    if not match or not 1024 <= first <= last <= 65535:
        raise ValueError(f"ALCOVE_MEDIA_PORTS: expected a UDP port range like 40000-40999 (1024–65535), got {value!r}")
    return first, last


def parse_announced_address(value: str) -> str:
    """``ALCOVE_MEDIA_ANNOUNCED_ADDRESS``: an IPv4 or IPv6 address (not a name: ICE candidates carry addresses)."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"ALCOVE_MEDIA_ANNOUNCED_ADDRESS: expected an IP address, got {value!r}") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"ALCOVE_MEDIA_ANNOUNCED_ADDRESS: {value!r} cannot receive media")
    return str(address)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serves_loopback_only(host: str, public_url: str | None) -> bool:
    """True when no client can come from another machine: a loopback listener and no public URL elsewhere."""
    if not _is_loopback_host(host):
        return False
    return public_url is None or _is_loopback_host(urlsplit(public_url).hostname or "")


@dataclass(frozen=True)
class MediaAddressing:
    """What the SFU's workers bind and advertise."""

    loopback: bool = False
    """Also offer 127.0.0.1 host candidates."""
    announced: str | None = None
    """Advertise this address instead of the host's own in every host candidate."""
    ports: tuple[int, int] | None = None
    """Bind the SFU's UDP sockets in this inclusive range (None: any free port)."""

    def unreachable_reason(self, interfaces: list[str], *, relay: bool) -> str | None:
        """None if a client can reach the SFU, else a short code saying why not (no addresses in it).

        ``interfaces``: the non-loopback addresses the SFU would gather; ``relay``: the SFU has TURN servers.
        """
        if self.announced or self.loopback or relay:
            return None
        if any(not _is_loopback_host(a) for a in interfaces):
            return None
        return "no-address"


def announce(sdp: str, address: str) -> str:
    """``sdp`` with the address of every host candidate of ``address``'s family (IPv4 or IPv6), and the ``c=``
    lines of that family, replaced by ``address``.

    The ports stay: the NAT (or the container's published ports) maps ``address:port`` to the socket's own.
    Candidates of the other family keep their own address (a global IPv6 address needs no mapping).
    """
    family = "IP6" if ":" in address else "IP4"
    out = []
    for line in sdp.split("\r\n"):
        match = _CANDIDATE.match(line)
        if match and (":" in match[2]) == (family == "IP6"):
            line = f"{match[1]}{address}{match[3]}"
        elif _CONNECTION.match(line) and line.startswith(f"c=IN {family} "):
            line = f"c=IN {family} {address}"
        out.append(line)
    return "\r\n".join(out)


def has_candidates(sdp: str) -> bool:
    """True if ``sdp`` offers at least one ICE candidate (a client has somewhere to send media)."""
    return any(line.startswith("a=candidate:") for line in sdp.splitlines())
