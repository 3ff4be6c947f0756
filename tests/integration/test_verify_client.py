"""``alcove verify-client``: the installed release's client code against what a server serves (a served copy of
``web/static`` with one byte changed, or identical), through the real command and its exit code."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server import pages
from server.manifest import sha256_hex, static_files

from ..conftest import serving

pytestmark = [pytest.mark.integration]


async def alcove_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tools.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def served_copy(tmp_path: Path, change: str | None) -> Path:
    """A copy of the installed web/static, with one byte of ``change`` (a path under it) flipped."""
    copy = tmp_path / "static"
    shutil.copytree(pages.static_dir(), copy)
    if change is not None:
        target = copy / change
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    return copy


async def test_identical_release_verifies(tmp_path: Path) -> None:
    async with serving(tmp_path / "data") as alcove:
        code, out = await alcove_cli("verify-client", alcove.url, "--json")
    result = json.loads(out)
    assert code == 0 and result["ok"] is True, out
    assert result["differences"] == [] and result["error"] is None
    assert result["checked"] == len(static_files(pages.static_dir())) + len(pages.PAGES)


async def test_one_changed_byte_fails_and_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = next(p for p in sorted(static_files(pages.static_dir())) if p.endswith("i18n.js"))
    copy = served_copy(tmp_path, changed.removeprefix("/static/"))
    monkeypatch.setattr(pages, "static_dir", lambda: copy)  # the server serves the copy; the command checks the install
    async with serving(tmp_path / "data") as alcove:
        code, out = await alcove_cli("verify-client", alcove.url)
        json_code, json_out = await alcove_cli("verify-client", alcove.url, "--json")
    assert code == 1 and f"DIFFERS  {changed}  (differs from this release)" in out, out
    assert "FAILED" in out
    result = json.loads(json_out)
    assert json_code == 1 and result["ok"] is False
    # the changed module, and every page (their import map carries its hash); nothing else
    assert {d["path"] for d in result["differences"]} == {changed, *pages.PAGES}


async def test_an_extra_or_missing_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = served_copy(tmp_path, None)
    (copy / "js" / "extra.js").write_text("console.log('not released');\n")
    (copy / "img" / "icon.svg").unlink()
    monkeypatch.setattr(pages, "static_dir", lambda: copy)
    async with serving(tmp_path / "data") as alcove:
        code, out = await alcove_cli("verify-client", alcove.url, "--json")
    result = json.loads(out)
    assert code == 1
    whys = {d["path"]: d["why"] for d in result["differences"]}
    assert whys["/static/js/extra.js"] == "served but not part of this release"
    assert whys["/static/img/icon.svg"] == "missing on the server"


async def test_served_manifest_matches_the_served_bytes(alcove: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{alcove.url}/client-manifest") as r:
            manifest = await r.json()
        assert manifest["algorithm"] == "sha256" and manifest["files"] == static_files(pages.static_dir())
        for path, digest in [*manifest["pages"].items(), *list(manifest["files"].items())[:5]]:
            async with http.get(f"{alcove.url}{path}") as r:
                assert sha256_hex(await r.read()) == digest, path
        async with http.get(f"{alcove.url}/j/") as r:
            html = await r.text()
            csp = r.headers["Content-Security-Policy"]
    assert '<script type="importmap">' in html and "integrity=" in html
    assert "script-src 'self' 'sha256-" in csp and "unsafe-inline" not in csp


async def test_unreachable_server_fails_with_an_error() -> None:
    code, out = await alcove_cli("verify-client", "http://127.0.0.1:9", "--json")
    result = json.loads(out)
    assert code == 1 and result["ok"] is False and result["error"]


async def test_over_tls_with_the_development_certificate(tmp_path: Path) -> None:
    """``alcove serve`` over TLS (its self-signed development certificate): trusted with --cafile, refused without
    it, and --insecure on loopback."""
    from .test_cli import free_port, start_serve, stop

    port = free_port()
    proc, _ = await start_serve(tmp_path, "--port", str(port))
    url = f"https://127.0.0.1:{port}"
    try:
        code, out = await alcove_cli("verify-client", url, "--cafile", str(tmp_path / "certs" / "dev-cert.pem"))
        assert code == 0 and out.startswith("OK"), out
        code, out = await alcove_cli("verify-client", url, "--json")
        assert code == 1 and "certificate" in json.loads(out)["error"].lower(), out
        code, out = await alcove_cli("verify-client", url, "--insecure")
        assert code == 0, out
    finally:
        await stop(proc)
    code, out = await alcove_cli("verify-client", "https://alcove.example.org", "--insecure")
    assert code == 2 and "loopback" in out  # refused before any packet is sent


async def test_alcove_manifest_prints_what_the_server_serves(alcove: Any) -> None:
    code, out = await alcove_cli("manifest", "--json")
    async with aiohttp.ClientSession() as http, http.get(f"{alcove.url}/client-manifest") as r:
        served = await r.json()
    assert code == 0 and json.loads(out) == served
    assert set(served) == {"alcove", "algorithm", "files", "pages"} and set(served["pages"]) == set(pages.PAGES)
