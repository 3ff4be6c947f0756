"""The security header set on every response: pages, API answers, errors (404, 308, 401, 403, 413, 429, 500)
and the websocket upgrade alike.

It is applied on aiohttp's ``on_response_prepare`` signal, which every response passes through, including the
ones made from an ``HTTPException`` that a middleware would never see as a return value.
"""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .security import HEADERS
from .state import HUB

HSTS = "max-age=31536000"


def tls_in_use(request: web.Request, config: Config) -> bool:
    """TLS on this connection, or (behind a trusted proxy) on the proxy's."""
    if request.secure:
        return True
    return config.trust_proxy and request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    hub = request.app.get(HUB)
    if request.secure or (hub is not None and tls_in_use(request, hub.config)):
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if request.path.startswith("/api/") or request.path in ("/j/", "/admin"):
        response.headers.setdefault("Cache-Control", "no-store")


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
