"""Explicit ICE configuration for aiortc, from RTCIceServer-shaped dicts (as sent in ``ice-servers``).

aiortc notes:

* aiortc uses only the *first* usable TURN URL of all its ice servers; :func:`order_urls` puts
  ``turn:…?transport=udp`` first, then TCP, then ``turns:``.
* Relay-only must be the enum, ``RTCConfiguration(iceTransportPolicy=RTCIceTransportPolicy.RELAY)``;
  the string ``"relay"`` is not accepted (aiortc looks the enum up in a dict when the ICE gatherer is created).
  :func:`aiortc_configuration` does this for you.
* Always pass explicit ``iceServers``: aiortc's default is a public Google STUN server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

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


def aiortc_ice_servers(servers: Sequence[Mapping[str, Any]]) -> list[RTCIceServer]:
    """Convert RTCIceServer-shaped dicts to aiortc ``RTCIceServer`` objects.

    URLs in each entry are re-ordered so that a UDP TURN URL comes first, since aiortc uses only the first
    usable TURN URL (and only the first STUN URL). Extra keys such as ``expires_at`` are ignored.
    """
    result: list[RTCIceServer] = []
    for server in servers:
        urls = server["urls"]
        url_list = [urls] if isinstance(urls, str) else list(urls)
        result.append(
            RTCIceServer(
                urls=list(order_urls(url_list)),
                username=server.get("username"),
                credential=server.get("credential"),
            )
        )
    return result


def aiortc_configuration(servers: Sequence[Mapping[str, Any]], *, relay_only: bool,
                         bundle: bool = False) -> RTCConfiguration:
    """An aiortc ``RTCConfiguration`` with explicit ice servers; relay-only uses the RELAY *enum*.

    ``bundle`` asks for MAX_BUNDLE: with aiortc's default (balanced), transceivers created from a re-offer or
    after the first one of their kind stay on a transport that the offer's BUNDLE group discards (no media).
    Entries without URLs are skipped; ``[]`` means host candidates only.
    """
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    config = RTCConfiguration(iceServers=aiortc_ice_servers([s for s in servers if s.get("urls")]),
                              iceTransportPolicy=policy)
    if bundle:
        config.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
    return config


def sdp_candidate_types(sdp: str | None) -> list[str]:
    """The ``typ`` of every ``a=candidate`` line of an SDP."""
    out = []
    for line in (sdp or "").splitlines():
        if line.startswith("a=candidate:") and " typ " in line:
            out.append(line.split(" typ ", 1)[1].split()[0])
    return out
