"""The security header set on every response: pages, API answers, errors (404, 308, 401, 403, 413, 429, 500)
and the websocket upgrade alike.

It is applied on aiohttp's ``on_response_prepare`` signal, which every response of the application passes
through, including the ones made from an ``HTTPException`` that a middleware would never see as a return value.
The one kind that never reaches the application, aiohttp's own answer to a request it cannot parse (400), gets
the set from a thin wrapper around aiohttp's error handler, and a fixed text instead of an echo of the request.
"""

from __future__ import annotations

from typing import Any

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


def _wrap_parser_errors() -> None:
    """aiohttp answers unparseable requests itself, before any application code: give those the set too."""
    from aiohttp.web_protocol import RequestHandler

    original = RequestHandler.handle_error
    if getattr(original, "_alcove", False):
        return

    def handle_error(self: RequestHandler, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status != 500:
            message = f"{status} Bad Request" if status == 400 else f"{status}"  # never echo the request
        response = original(self, request, status, exc, message)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if request.secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response

    handle_error._alcove = True  # type: ignore[attr-defined]
    RequestHandler.handle_error = handle_error  # type: ignore[method-assign]


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
    _wrap_parser_errors()
