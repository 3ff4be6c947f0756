"""``alcove verify-client``: does a server serve exactly this installed release's client code?

It fetches the server's ``/client-manifest``, then every static file and page either side knows of, hashes what
was served and compares each with the installed release (``server.manifest``). The served manifest is only a
list of what to fetch: the verdict comes from the bytes served, never from the hashes the server claims.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from server.manifest import MANIFEST_PATH, ClientRelease, compare, sha256_hex

MAX_FILE = 8 * 1024 * 1024
MAX_PATHS = 5000  # a served manifest cannot make the check fetch without end


def _paths(manifest: Any, key: str) -> dict[str, str]:
    """The ``{path: hex}`` table of a served manifest; anything malformed is ignored (it cannot vouch)."""
    table = manifest.get(key) if isinstance(manifest, dict) else None
    if not isinstance(table, dict):
        return {}
    return {p: str(h) for p, h in table.items()
            if isinstance(p, str) and p.startswith("/") and not p.startswith("//") and ".." not in p.split("/")}


async def _fetch(http: aiohttp.ClientSession, url: str) -> bytes | None:
    async with http.get(url, allow_redirects=False) as r:
        if r.status != 200:
            return None
        body = bytearray()
        async for chunk in r.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > MAX_FILE:
                return None
        return bytes(body)


async def verify_client(server: str, *, insecure: bool = False, cafile: str | None = None,
                        release: ClientRelease | None = None) -> dict[str, Any]:
    """``{"ok", "server", "release", "checked", "differences": [{"path", "why"}], "error"}``; never raises."""
    if release is None:
        from server.pages import installed_release

        release = installed_release()
    base = server.rstrip("/")
    result: dict[str, Any] = {"ok": False, "server": base, "release": release.manifest()["alcove"], "checked": 0,
                              "differences": [], "error": None}
    tls: ssl.SSLContext | bool = False if insecure else ssl.create_default_context(cafile=cafile)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls),
                                         timeout=aiohttp.ClientTimeout(total=60),
                                         auto_decompress=True) as http:
            async with http.get(base + MANIFEST_PATH, allow_redirects=False) as r:
                if r.status != 200:
                    raise ValueError(f"{MANIFEST_PATH} answered {r.status}")
                served_manifest = await r.json(content_type=None)
            expected = {**release.files, **release.pages}
            paths = sorted(set(expected) | set(_paths(served_manifest, "files")) | set(_paths(served_manifest, "pages")))
            if len(paths) > MAX_PATHS:
                raise ValueError(f"the served manifest names {len(paths)} files (at most {MAX_PATHS})")
            served: dict[str, str | None] = {}
            for path in paths:
                body = await _fetch(http, base + path)
                served[path] = sha256_hex(body) if body is not None else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
        result["error"] = f"{type(err).__name__}: {err}"
        return result
    differences = [{"path": p, "why": why} for p, why in compare(expected, served)]
    result.update(checked=len(paths), differences=differences, ok=not differences)
    return result
