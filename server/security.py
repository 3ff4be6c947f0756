"""Security headers on every response and the Origin check on the websocket upgrade."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from .config import Config

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.path.startswith("/api/") or request.path in ("/j/", "/admin"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


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
    return _norm(origin) in allowed
