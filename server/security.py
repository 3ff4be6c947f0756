"""The security header set (applied by server/headers.py) and the checks on the websocket upgrade."""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from .config import Config

CSP: Final = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; worker-src 'self' blob:; font-src 'self'; "
    "manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=()",
}

def _norm(origin: str) -> str:
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}".lower()


def origin_allowed(request: web.Request, config: Config) -> bool:
    """Same origin only (plus any explicitly configured origins). A missing Origin is refused."""
    origin = request.headers.get("Origin")
    if not origin:
        return False
    allowed = {_norm(o) for o in config.allowed_origins}
    if config.public_url:
        allowed.add(_norm(config.public_url))
    host = request.headers.get("Host", "")
    scheme = request.scheme
    if config.trust_proxy:
        host = request.headers.get("X-Forwarded-Host", host)
        scheme = request.headers.get("X-Forwarded-Proto", scheme)
        allowed.add(f"{scheme}://{host}".lower())
    elif _literal_host(host):
        # Same origin by the Host header only when it names an IP address or localhost: a DNS name in Host is
        # the attacker's to choose (DNS rebinding), so named hosts need ALCOVE_PUBLIC_URL or
        # ALCOVE_ALLOWED_ORIGINS.
        allowed.add(f"{scheme}://{host}".lower())
    return _norm(origin) in allowed


def _literal_host(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def websocket_version_ok(request: web.Request) -> bool:
    """RFC 6455 only: version 13 (aiohttp also accepts the drafts' 7 and 8)."""
    return request.headers.get("Sec-WebSocket-Version", "").strip() == "13"
