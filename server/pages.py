"""HTML pages: the landing page, the join page (/j/) and the admin page, plus the static files.

Every page is the same for everyone: the room token travels in the link's fragment (``/j/#t=…``), which the
browser never sends, so the server cannot tell links apart here. No inline script or style (strict CSP).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

WEB_PACKAGE = "web"
"""The package that carries the browser client (``templates/``, ``static/``) as package data."""


def static_dir() -> Path:
    """The installed ``static/`` folder, found through :mod:`importlib.resources` (never relative to a checkout).

    aiohttp serves files from a real directory, so a zipped install (no such directory) fails here, at start.
    """
    folder = files(WEB_PACKAGE) / "static"
    if not isinstance(folder, Path) or not folder.is_dir():
        raise RuntimeError(f"the {WEB_PACKAGE!r} package has no static/ folder on disk (a broken or zipped install)")
    return folder

_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


async def landing(request: web.Request) -> web.Response:
    return _render("landing.html", request)


async def join(request: web.Request) -> web.Response:
    return _render("join.html", request)


async def admin(request: web.Request) -> web.Response:
    return _render("admin.html", request)


async def join_redirect(request: web.Request) -> web.Response:
    # /j (no slash) keeps the fragment across the redirect in every current browser.
    raise web.HTTPPermanentRedirect("/j/")


def _render(template: str, request: web.Request) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, {})
    response.headers.update(_NO_STORE)
    return response


def setup(app: web.Application) -> None:
    """Registers the pages and the static files on ``app``."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader(WEB_PACKAGE, "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    app.router.add_get("/", landing, name="landing")
    app.router.add_get("/j/", join, name="join")
    app.router.add_get("/j", join_redirect)
    app.router.add_get("/admin", admin, name="admin")
    app.router.add_static("/static/", static_dir(), name="static", append_version=False)
