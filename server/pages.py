"""HTML pages: the landing page, the join page (/j/) and the admin page, plus the static files.

Every page is the same for everyone: the room token travels in the link's fragment (``/j/#t=…``), which the
browser never sends, so the server cannot tell links apart here. No inline script or style (strict CSP) except
the import map, allowed by its own hash. Every script, module and stylesheet is loaded with integrity
(``server.manifest``), and ``/client-manifest`` lists the hashes of every static file and page.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from .manifest import MANIFEST_PATH, ClientRelease, sha256_hex
from .security import CSP

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
PAGES = {"/": "landing.html", "/j/": "join.html", "/admin": "admin.html"}
RELEASE: web.AppKey[ClientRelease] = web.AppKey("client-release")


async def landing(request: web.Request) -> web.Response:
    return _render("landing.html", request)


async def join(request: web.Request) -> web.Response:
    return _render("join.html", request)


async def admin(request: web.Request) -> web.Response:
    return _render("admin.html", request)


async def join_redirect(request: web.Request) -> web.Response:
    # /j (no slash) keeps the fragment across the redirect in every current browser.
    raise web.HTTPPermanentRedirect("/j/")


async def client_manifest(request: web.Request) -> web.Response:
    return web.json_response(request.app[RELEASE].manifest(), headers={"Cache-Control": "no-store"})


def _render(template: str, request: web.Request) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, {})
    response.headers.update(_NO_STORE)
    script_src = f"script-src 'self' {request.app[RELEASE].script_hash}"
    response.headers["Content-Security-Policy"] = CSP.replace("script-src 'self'", script_src)
    return response


async def _revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    """Static files are revalidated on every use (a cheap 304): after an upgrade a browser must not run a cached
    old module against the page's new integrity hash (it would refuse to run it)."""
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")


def _integrity_globals(release: ClientRelease) -> dict[str, object]:
    """Template helpers: every script, module and stylesheet tag carries its hash."""

    def import_map() -> Markup:
        return Markup('<script type="importmap">') + Markup(release.import_map) + Markup("</script>")

    def module_script(url: str) -> Markup:
        return Markup('<script type="module" src="{}" integrity="{}"></script>').format(url, release.sri(url))

    def stylesheet(url: str) -> Markup:
        return Markup('<link rel="stylesheet" href="{}" integrity="{}">').format(url, release.sri(url))

    return {"import_map": import_map, "module_script": module_script, "stylesheet": stylesheet}


def _prepare(env: jinja2.Environment) -> ClientRelease:
    """Hash the static files, give the templates their integrity helpers and hash the rendered pages."""
    release = ClientRelease.from_dir(static_dir())
    env.globals.update(_integrity_globals(release))
    release.pages = {path: sha256_hex(env.get_template(name).render().encode()) for path, name in PAGES.items()}
    return release


def installed_release() -> ClientRelease:
    """The installed release's client code and pages, as a server of this installation serves them."""
    env = jinja2.Environment(loader=jinja2.PackageLoader(WEB_PACKAGE, "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    return _prepare(env)


def setup(app: web.Application) -> None:
    """Registers the pages and the static files on ``app``."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader(WEB_PACKAGE, "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    app[RELEASE] = _prepare(env)
    app.on_response_prepare.append(_revalidate_static)
    app.router.add_get(MANIFEST_PATH, client_manifest)
    app.router.add_get("/", landing, name="landing")
    app.router.add_get("/j/", join, name="join")
    app.router.add_get("/j", join_redirect)
    app.router.add_get("/admin", admin, name="admin")
    app.router.add_static("/static/", static_dir(), name="static", append_version=False)
