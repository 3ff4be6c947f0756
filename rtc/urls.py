"""ICE server URLs and SDP candidates as text: no aiortc here, so the server can use it without loading aiortc."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

URL_RE: Final = re.compile(r"^(?P<scheme>stuns?|turns?):(?P<host>[^?:/\s]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?"
                           r"(?:\?transport=(?P<transport>udp|tcp))?$")
"""A ``stun:``/``stuns:``/``turn:``/``turns:`` URL with an optional port and ``?transport=``."""


def url_rank(url: str) -> int:
    """Lower is better for aiortc: TURN/UDP, TURN/TCP, TURNS, then STUN (which aiortc handles separately)."""
    m = URL_RE.match(url)
    if m is None:  # pragma: no cover - validated before
        return 9
    scheme, transport = m["scheme"], m["transport"]
    if scheme == "turn":
        return 0 if transport in (None, "udp") else 1
    if scheme == "turns":
        return 2
    return 3


def order_urls(urls: Iterable[str]) -> tuple[str, ...]:
    """Stable-sort URLs so the one aiortc will use (UDP TURN) comes first."""
    return tuple(sorted(urls, key=url_rank))


def sdp_candidate_types(sdp: str | None) -> list[str]:
    """The ``typ`` of every ``a=candidate`` line of an SDP."""
    out = []
    for line in (sdp or "").splitlines():
        if line.startswith("a=candidate:") and " typ " in line:
            out.append(line.split(" typ ", 1)[1].split()[0])
    return out
