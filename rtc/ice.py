"""Explicit ICE configuration for aiortc, from RTCIceServer-shaped dicts (as sent in ``ice-servers``).

aiortc notes:

* aiortc uses only the *first* usable TURN URL of all its ice servers; :func:`rtc.urls.order_urls` puts
  ``turn:…?transport=udp`` first, then TCP, then ``turns:``.
* Relay-only must be the enum, ``RTCConfiguration(iceTransportPolicy=RTCIceTransportPolicy.RELAY)``;
  the string ``"relay"`` is not accepted (aiortc looks the enum up in a dict when the ICE gatherer is created).
  :func:`aiortc_configuration` does this for you.
* Always pass explicit ``iceServers``: aiortc's default is a public Google STUN server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from .urls import order_urls


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
