"""The RFC 9605 vectors and the Python-made golden frames, checked by sframe.js inside Chromium's WebCrypto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import require_chromium
from tools.chromium import launch

pytestmark = [pytest.mark.e2ee, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[2]

CHECK = """async () => {
  const S = await import("/static/js/lib/sframe.js");
  const text = await (await fetch("/data/sframe-rfc9605.json")).text();
  // BigInt-safe (vectors README): quote kid/ctr before JSON.parse.
  const V = JSON.parse(text.replace(/("(?:kid|ctr)": *)(\\d+)/g, '$1"$2"'));
  const G = await (await fetch("/data/sframe-golden.json")).json();
  const hex = S.hexToBytes, toHex = S.bytesToHex;
  const out = {header: 0, sframe: 0, golden: 0, errors: []};
  for (const h of V.header) {
    const kid = BigInt(h.kid), ctr = BigInt(h.ctr);
    const dec = S.decodeHeader(hex(h.encoded));
    if (toHex(S.encodeHeader(kid, ctr)) === h.encoded && dec.kid === kid && dec.ctr === ctr) out.header++;
    else out.errors.push("header " + h.encoded);
  }
  for (const v of V.sframe) {
    const kid = BigInt(v.kid), ctr = BigInt(v.ctr);
    const ks = await S.deriveKeySalt(v.cipher_suite, kid, hex(v.base_key));
    const ct = await S.protect(v.cipher_suite, ks.key, ks.salt, kid, ctr, hex(v.metadata), hex(v.pt));
    const back = await S.unprotect(v.cipher_suite, ks.key, ks.salt, hex(v.metadata), hex(v.ct));
    if (toHex(ks.key) === v.sframe_key && toHex(ct) === v.ct && toHex(back.plaintext) === v.pt) out.sframe++;
    else out.errors.push("sframe suite " + v.cipher_suite);
  }
  const bases = new Map();
  for (const e of G.epochs) bases.set(e.epoch, await S.epochBaseKey(hex(e.epoch_secret), G.room_id));
  for (const f of G.frames) {
    const kid = S.makeKid(f.stream, f.sender_index, f.epoch);
    const ks = await S.deriveKeySalt(4, kid, bases.get(f.epoch));
    const prot = await S.protectFrame(f.kind, ks.key, ks.salt, kid, f.ctr, hex(f.frame));
    const back = await S.unprotectFrame(f.kind, ks.key, ks.salt, hex(f.protected));
    if (toHex(prot) === f.protected && toHex(back.frame) === f.frame) out.golden++;
    else out.errors.push("golden " + f.name);
  }
  out.total = {header: V.header.length, sframe: V.sframe.length, golden: G.frames.length};
  return out;
}"""


@pytest.fixture
async def static_server() -> AsyncIterator[str]:
    async def blank(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>vectors</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    app.router.add_static("/static", ROOT / "web" / "static")
    app.router.add_static("/data", ROOT / "tests" / "data")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_every_vector_and_golden_frame_passes_in_chromium(static_server: str) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await launch(p)
        try:
            page = await browser.new_page()
            await page.goto(static_server + "/")
            result: dict[str, Any] = await page.evaluate(CHECK)
        finally:
            await browser.close()
    assert result["errors"] == []
    assert result["total"] == {"header": 289, "sframe": 5, "golden": result["golden"]} and result["golden"] >= 10
    assert (result["header"], result["sframe"]) == (289, 5)
