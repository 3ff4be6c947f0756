"""Every client reached (issue 14, items 1–3): phones, Romanian and English, accessibility.

One server and one Chromium for the module. The client walks its whole path on an emulated phone (touch,
`isMobile`) in each language, by keyboard alone: join, waiting room, session, ended. At each step the page is
measured at 360×740 and 390×844 in portrait and landscape and at 200 % zoom (tap targets, horizontal scroll,
controls inside the screen, a large remote picture and a small movable self-view, a readable safety code), scanned
with axe-core (web/node_modules, given to the page as an init script: never a CDN), and every text it shows is
matched against the catalog of its language. The therapist admits and ends by keyboard, on a laptop (1280×720)
and a tablet (768×1024).

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_reach.py'
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from tests.conftest import require_chromium, serving
from tests.unit.test_i18n import load_catalogs
from tools.chromium import launch

from .conftest import SCREENSHOTS, Pages, decodes_from_all, wait_for, wait_js
from .test_e2ee_browser import with_secret
from .test_screens import DENY_MEDIA, drop_socket

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
PHONES = {"360x740": (360, 740), "390x844": (390, 844), "740x360": (740, 360), "844x390": (844, 390)}
ZOOM_200 = (640, 360)  # a 1280×720 window at 200 % zoom
LOCALES = {"en": "en-GB", "ro": "ro-RO"}
USER_TEXT = {"Alex", "Dr. Ionescu"}  # names typed by people, not interface text

# Every text put into a live region, in order (the page's own regions: #live, #live-urgent, #banners, …).
LIVE_LOG = """(() => {
  window.__live = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const region = node && node.closest('[aria-live]:not([aria-live="off"]), [role="alert"], [role="status"]');
      if (region && region.textContent.trim()) window.__live.push(region.textContent.trim());
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
})();"""

VISIBLE_TEXTS = """() => {
  const out = [];
  const shown = (el) => el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const text = node.nodeValue.trim();
    const el = node.parentElement;
    if (!text || !el || el.closest("script, style, noscript") || !shown(el)) continue;
    if (el.closest("option") && el.closest("option").value) continue;  // a device's own name
    out.push(text);
  }
  for (const el of document.querySelectorAll("[aria-label], [placeholder]")) {
    if (!shown(el)) continue;
    for (const a of ["aria-label", "placeholder"]) {
      const v = el.getAttribute(a);
      // the safety code's emoji line is labelled with its words, one catalog text each
      if (v && v.trim()) out.push(...(el.classList.contains("sas-emoji-line") ? v.split(", ") : [v.trim()]));
    }
  }
  return { texts: out, title: document.title };
}"""

MEASURE = """() => {
  const vw = window.innerWidth, vh = window.innerHeight;
  const shown = (el) => el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  const small = [];
  for (const el of document.querySelectorAll("button, a[href], input, select, [role=button]")) {
    if (!shown(el) || el.closest(".visually-hidden") || el.type === "radio") continue;
    // a checkbox inside its label: the label is what a finger taps
    const r = (el.type === "checkbox" && el.closest("label") ? el.closest("label") : el).getBoundingClientRect();
    if (r.width < 44 || r.height < 44) small.push(`${el.id || el.className || el.tagName} ${Math.round(r.width)}x${Math.round(r.height)}`);
  }
  const box = (sel) => { const e = document.querySelector(sel); if (!e || !shown(e)) return null;
    const r = e.getBoundingClientRect(); return { x: r.left, y: r.top, w: r.width, h: r.height }; };
  const tools = [...document.querySelectorAll(".toolbar button")].filter(shown).map((b) => {
    const r = b.getBoundingClientRect(); return { id: b.id, x: r.left, y: r.top, r: r.right, b: r.bottom }; });
  const names = [...document.querySelectorAll("#safety .sas-name")].filter(shown).map((n) => {
    const r = n.getBoundingClientRect(); return { size: parseFloat(getComputedStyle(n).fontSize), l: r.left, r: r.right }; });
  // What can be seen of the remote picture: inside the screen, above the controls, not under the safety code.
  const top = Math.min(vh, ...tools.map((b) => b.y));
  const clip = (a, x0, y0, x1, y1) => Math.max(0, Math.min(a.x + a.w, x1) - Math.max(a.x, x0)) *
    Math.max(0, Math.min(a.y + a.h, y1) - Math.max(a.y, y0));
  const remote = box(".tile:not(.self)"), safety = box("#safety");
  let seen = 0;
  if (remote) {
    seen = clip(remote, 0, 0, vw, top);
    if (safety) seen -= clip({ x: Math.max(remote.x, safety.x), y: Math.max(remote.y, safety.y),
      w: Math.max(0, Math.min(remote.x + remote.w, safety.x + safety.w) - Math.max(remote.x, safety.x)),
      h: Math.max(0, Math.min(remote.y + remote.h, safety.y + safety.h) - Math.max(remote.y, safety.y)) }, 0, 0, vw, top);
  }
  return { vw, vh, scrollW: document.documentElement.scrollWidth, small, tools, names, remote, seen,
           self: box(".tile.self"), safety };
}"""

AXE_RUN = """async () => {
  const r = await axe.run(document, { resultTypes: ["violations"] });
  return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} @ ${v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join(", ")}`);
}"""


@pytest.fixture(scope="module")
def catalogs() -> dict[str, Any]:
    return load_catalogs()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    async with serving(tmp_path_factory.mktemp("reach")) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Any]:
    require_chromium()
    assert AXE.is_file(), "axe-core is not installed: run `make lint` (npm ci in web/)"
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await launch(p)
        try:
            yield b
        finally:
            await b.close()


class Devices(Pages):
    """Pages on emulated devices, with axe-core and the live-region log added before any script of the page."""

    async def device(self, lang: str, size: tuple[int, int], phone: bool) -> Any:
        ctx = await self.browser.new_context(
            viewport={"width": size[0], "height": size[1]}, is_mobile=phone, has_touch=phone,
            locale=LOCALES[lang], timezone_id="Europe/Bucharest", color_scheme="light")
        await ctx.grant_permissions(["camera", "microphone"], origin=self.origin)
        await ctx.add_init_script(path=str(AXE))
        await ctx.add_init_script(script=LIVE_LOG)
        self.contexts.append(ctx)
        page = await ctx.new_page()
        page.on("request", lambda req: None if req.url.startswith(("data:", "blob:", "about:")) or
                self.origin == _origin(req.url) else self.foreign.append(req.url))
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))
        return page


def _origin(url: str) -> str:
    from .conftest import _origin as origin

    return origin(url)


@pytest_asyncio.fixture(loop_scope="module")
async def devices(chromium: Any, server: Any) -> AsyncIterator[Devices]:
    d = Devices(chromium, server.url)
    try:
        yield d
    finally:
        for line in d.console_errors[-30:]:
            print("[browser]", line)
        await d.close()
    assert not d.foreign, f"requests to other origins: {d.foreign}"


def texts_of(catalogs: dict[str, Any], lang: str) -> list[re.Pattern[str]]:
    out = []
    for value in catalogs[lang]["catalog"].values():
        pattern = re.sub(r"\\\{\w+\\\}", "(.+?)", re.escape(value))
        out.append(re.compile(pattern, re.S))
    return out


async def check_texts(page: Any, catalogs: dict[str, Any], lang: str, where: str) -> None:
    """Every text the page shows is a catalog text of its language (names people typed and numbers aside)."""
    patterns = texts_of(catalogs, lang)
    assert await page.evaluate("document.documentElement.lang") == lang, where
    stray = []
    shown = await page.evaluate(VISIBLE_TEXTS)
    for text in shown["texts"]:
        if text in USER_TEXT or not re.search(r"[^\W\d_]", text):
            continue
        if not any(p.fullmatch(text) for p in patterns):
            stray.append(text)
    title = shown["title"]  # a catalog text, alone or followed by " – Alcove"
    if not any(p.fullmatch(title) or p.fullmatch(title.removesuffix(" – Alcove")) for p in patterns):
        stray.append(f"<title> {title}")
    assert not stray, f"{where} ({lang}): texts not from the {lang} catalog: {stray}"


async def check_axe(page: Any, where: str) -> None:
    found = await page.evaluate(AXE_RUN)
    assert not found, f"{where}: axe-core serious/critical violations: {found}"


async def check_phone(page: Any, where: str, *, session: bool = False, safety: bool = False,
                      landscape_shot: str | None = None) -> None:
    """The page at every phone size and at 200 % zoom."""
    for label, size in [*PHONES.items(), ("zoom200", ZOOM_200)]:
        await page.set_viewport_size({"width": size[0], "height": size[1]})
        m = await page.evaluate(MEASURE)
        if landscape_shot and label == "844x390":
            await shot(page, landscape_shot)
        at = f"{where} at {label}"
        assert m["scrollW"] <= m["vw"], f"{at}: horizontal scroll ({m['scrollW']} > {m['vw']})"
        assert not m["small"], f"{at}: tap targets under 44 px: {m['small']}"
        if not session:
            continue
        assert m["tools"], f"{at}: no call controls"
        for b in m["tools"]:
            assert b["x"] >= 0 and b["r"] <= m["vw"] and b["y"] >= 0 and b["b"] <= m["vh"], f"{at}: {b} off screen"
        remote, own = m["remote"], m["self"]
        assert remote and own, f"{at}: tiles missing"
        vp = m["vw"] * m["vh"]
        assert m["seen"] >= 0.3 * vp, f"{at}: the remote picture is small or covered: {m['seen'] / vp:.0%} of the screen"
        assert own["w"] * own["h"] <= 0.2 * remote["w"] * remote["h"], f"{at}: the self-view is large: {own}"
        if safety:
            assert m["names"], f"{at}: safety code not shown"
            for n in m["names"]:
                assert n["size"] >= 12 and n["l"] >= 0 and n["r"] <= m["vw"], f"{at}: safety code word unreadable: {n}"
    await page.set_viewport_size({"width": 390, "height": 844})


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled")


async def announced(page: Any, pattern: str | re.Pattern[str], what: str) -> None:
    """Waits until a live region of the page said `pattern` (a text or a regular expression)."""
    rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))

    async def said() -> bool:
        return any(rx.search(x) for x in await page.evaluate("window.__live"))

    await wait_for(said, timeout=5, what=f"{what} announced in a live region")


async def accessible_name(page: Any) -> str:
    name: str = await page.evaluate(
        "(() => { const e = document.activeElement; if (!e || e === document.body) return '<body>';"
        " return (e.getAttribute('aria-label') || e.textContent || '').trim().slice(0, 80); })()")
    return name


async def tab_to(page: Any, name: str, limit: int = 60) -> None:
    """Presses Tab until the focused control is called `name` (keyboard only), or fails."""
    seen = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        current = await accessible_name(page)
        if current == name:
            return
        seen.append(current)
    raise AssertionError(f"{name!r} not reachable by Tab; focus went through {seen}")


@pytest.mark.parametrize("lang", ["en", "ro"])
async def test_client_path_on_phones_by_keyboard(lang: str, server: Any, devices: Devices,
                                                 catalogs: dict[str, Any]) -> None:
    t = catalogs[lang]["catalog"]
    suffix = "" if lang == "en" else f"-{lang}"
    server.clock.now = time.time()  # the module's server: an earlier test moved its clock on
    room = await server.create_room(type="individual", host="Dr. Ionescu", duration_minutes=50)
    therapist = await devices.device(lang, (1280, 720), phone=False)
    await therapist.goto(with_secret(room["therapist_link"]))
    await therapist.get_by_role("button", name=t["join.submit"], exact=True).click()
    await therapist.get_by_text(t["console.waiting.empty"]).wait_for()
    # A secure invite link (E2EE with the therapist's key): the client will see a safety code.
    await therapist.locator("#invite-input").fill(room["client_links"][0])
    await therapist.get_by_role("button", name=t["e2ee.invite.make"], exact=True).click()
    await wait_js(therapist, "document.getElementById('invite-output').value.includes('&tk=')")
    link = await therapist.locator("#invite-output").input_value()

    # Join, on a phone, by keyboard: the name field has the focus, Enter joins.
    client = await devices.device(lang, (390, 844), phone=True)
    await client.goto(link)
    await client.get_by_role("button", name=t["join.submit"], exact=True).wait_for()
    await wait_js(client, "document.body.dataset.media === 'full'")
    await check_texts(client, catalogs, lang, "join")
    await check_axe(client, "join")
    await check_phone(client, "join")
    await shot(client, f"phone-join{suffix}")
    assert await client.evaluate("document.activeElement.id") == "join-name"
    await client.keyboard.type("Alex")
    await client.keyboard.press("Enter")

    # Waiting room.
    await client.get_by_role("heading", name=t["waiting.heading"]).wait_for()
    await therapist.get_by_role("button", name=t["console.admit"].replace("{name}", "Alex"), exact=True).wait_for()
    await wait_js(client, "document.getElementById('waiting-therapist').textContent.length > 0")
    await check_texts(client, catalogs, lang, "waiting")
    await check_axe(client, "waiting")
    await check_phone(client, "waiting")
    await client.emulate_media(reduced_motion="reduce")
    assert await client.evaluate("getComputedStyle(document.querySelector('.breathing span')).animationName") == "none"
    await client.emulate_media(reduced_motion="no-preference")
    await shot(client, f"phone-waiting{suffix}")
    await announced(therapist, t["console.arrived"].replace("{name}", "Alex"), "the arrival")
    await check_texts(therapist, catalogs, lang, "console with a client waiting")
    await check_axe(therapist, "console with a client waiting")

    # The therapist admits by keyboard, on the laptop screen; the console is checked there and on a tablet.
    admit = t["console.admit"].replace("{name}", "Alex")
    await wait_js(therapist, "![...document.querySelectorAll('#queue-list button')].some((b) => b.disabled)")
    await therapist.locator("body").focus()
    await tab_to(therapist, admit)
    await therapist.keyboard.press("Enter")

    await client.get_by_role("heading", name=t["e2ee.sas.title"]).wait_for(timeout=20000)
    await decodes_from_all(client, 1)
    await wait_js(client, "document.getElementById('e2ee-status').dataset.state === 'on'")
    await announced(client, t["session.admitted"], "the admission")
    await check_texts(client, catalogs, lang, "session")
    await check_axe(client, "session")
    await check_phone(client, "session", session=True, safety=True, landscape_shot=f"phone-session-landscape{suffix}")
    await shot(client, f"phone-session{suffix}")
    # The self-view moves: its button (a tap), then a drag to the top left corner.
    own = client.locator(".tile.self")
    assert await own.get_attribute("data-corner") == "br"
    await client.locator(".move-self").tap()
    assert await own.get_attribute("data-corner") == "bl"
    before = await own.bounding_box()
    stage = await client.locator("#tiles").bounding_box()
    assert before and stage
    await client.mouse.move(before["x"] + before["width"] / 2, before["y"] + before["height"] / 2)
    await client.mouse.down()
    await client.mouse.move(stage["x"] + stage["width"] * 0.8, stage["y"] + 30, steps=5)
    await client.mouse.up()
    assert await own.get_attribute("data-corner") == "tr"
    # The call controls by keyboard: Tab to "Mute", Space mutes, the button says so.
    await client.locator("body").focus()
    await tab_to(client, t["session.mute"])
    await client.keyboard.press("Space")
    await client.get_by_role("button", name=t["session.unmute"], exact=True).wait_for()
    assert await client.locator("#btn-mute").get_attribute("aria-pressed") == "true"
    await client.keyboard.press("Space")
    await client.get_by_role("button", name=t["session.mute"], exact=True).wait_for()
    # The switcher changes the whole session page in place (no reload, the call goes on), and back.
    other = "ro" if lang == "en" else "en"
    o = catalogs[other]["catalog"]
    await client.get_by_role("button", name=o[f"lang.{other}"], exact=True).click()
    await client.get_by_role("button", name=o["session.mute"], exact=True).wait_for()
    await check_texts(client, catalogs, other, "session after switching language")
    await client.get_by_role("button", name=t[f"lang.{lang}"], exact=True).click()
    await client.get_by_role("button", name=t["session.mute"], exact=True).wait_for()
    await check_texts(client, catalogs, lang, "session after switching back")

    for size in ((1280, 720), (768, 1024)):
        await therapist.set_viewport_size({"width": size[0], "height": size[1]})
        await check_console(therapist, t, f"console at {size}")
    if lang == "en":
        await therapist.evaluate("window.scrollTo(0, 0)")
        await shot(therapist, "console-tablet")
    await therapist.set_viewport_size({"width": 1280, "height": 720})
    await check_texts(therapist, catalogs, lang, "console")
    await check_axe(therapist, "console")

    # "Therapist reconnecting" reaches the client's live region; the therapist comes back.
    await therapist.context.set_offline(True)
    drop_socket(server, "therapist")
    await announced(client, t["session.therapist.reconnecting"], "the therapist reconnecting")
    await check_texts(client, catalogs, lang, "therapist reconnecting")
    await check_axe(client, "therapist reconnecting")
    await therapist.context.set_offline(False)
    await therapist.get_by_text(t["console.lock.open"]).wait_for(timeout=20000)
    await announced(client, t["session.therapist.back"], "the therapist back")

    # A time warning reaches the live region, in the plural form of the language.
    await server.advance(45 * 60 + 5)
    warning = re.compile("|".join(
        re.escape(t[key]).replace(r"\{n\}", r"\d+").replace(r"\{end\}", r"\d\d:\d\d \S+")
        for key in ("session.warning.at#other", "session.warning.at#few") if key in t))
    await client.locator("#banners").get_by_text(warning).wait_for()
    await announced(client, warning, "the time warning")

    # The therapist ends the session by keyboard; the end is announced on the client's phone.
    await therapist.locator("body").focus()
    await tab_to(therapist, t["console.end"])
    await therapist.keyboard.press("Enter")
    assert await accessible_name(therapist) == t["console.end.confirm"]
    await therapist.keyboard.press("Enter")
    await client.get_by_role("heading", name=t["ended.title"]).wait_for()
    await announced(client, t["ended.body.therapist"], "the end")
    await check_texts(client, catalogs, lang, "ended")
    await check_axe(client, "ended")
    await check_phone(client, "ended")
    await shot(client, f"phone-ended{suffix}")
    await check_axe(therapist, "therapist ended")


async def check_console(page: Any, t: dict[str, str], where: str) -> None:
    """No horizontal scroll; every console and call control can be reached, the time controls are on screen."""
    m = await page.evaluate(MEASURE)
    assert m["scrollW"] <= m["vw"], f"{where}: horizontal scroll"
    for name in (t["console.extend5"], t["console.extend10"], t["console.end"]):
        button = page.get_by_role("button", name=name, exact=True)
        await button.scroll_into_view_if_needed()
        box = await button.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= m["vh"] and box["x"] + box["width"] <= m["vw"], \
            f"{where}: {name} not on screen: {box}"
        on_top = await button.evaluate("(b) => { const r = b.getBoundingClientRect();"
                                       " return b.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)); }")
        assert on_top, f"{where}: {name} is covered (by the call controls?)"
        await button.focus()  # as the keyboard would: it scrolls into view, above the call controls
        on_top = await button.evaluate("(b) => { const r = b.getBoundingClientRect();"
                                       " return b.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)); }")
        assert on_top, f"{where}: {name} is covered once focused"
    tools = await page.evaluate(MEASURE)
    for b in tools["tools"]:
        assert b["b"] <= tools["vh"] and b["r"] <= tools["vw"], f"{where}: call control {b} off screen"


@pytest.mark.parametrize("lang", ["en", "ro"])
async def test_link_pages_in_both_languages(lang: str, server: Any, devices: Devices, catalogs: dict[str, Any]) -> None:
    """The landing and refused-link pages: catalog texts only, no serious axe finding, phone sizes."""
    suffix = "" if lang == "en" else f"-{lang}"
    page = await devices.device(lang, (390, 844), phone=True)
    await page.goto(server.url + "/")
    await wait_js(page, "document.querySelector('[data-i18n=\"app.tagline\"]').textContent.length > 0")
    await check_texts(page, catalogs, lang, "landing")
    await check_axe(page, "landing")
    await check_phone(page, "landing")
    await page.goto(server.url + "/j/#t=not-a-token")
    await page.get_by_role("heading", name=catalogs[lang]["catalog"]["error.title.token-invalid"]).wait_for()
    await check_texts(page, catalogs, lang, "refused link")
    await check_axe(page, "refused link")
    await check_phone(page, "refused link")
    await shot(page, f"phone-link-refused{suffix}")

    # Too early: the opening time in the client's own locale and time zone.
    start = datetime.fromtimestamp(server.clock.now, UTC) + timedelta(days=2)
    early = await server.create_room(type="individual", start=start.isoformat(), host="Dr. Ionescu")
    await page.goto("about:blank")  # not a mere change of fragment (the join page reloads itself on one)
    await page.goto(early["client_links"][0])
    await wait_js(page, "document.body.dataset.state === 'error-room-not-open'")
    await check_texts(page, catalogs, lang, "too early")
    await check_axe(page, "too early")
    opens = datetime.fromisoformat(early["opens_at"].replace("Z", "+00:00")).astimezone(ZoneInfo("Europe/Bucharest"))
    heading = await page.locator("#error-title").inner_text()
    assert f"{opens:%H:%M}" in heading, heading  # Europe/Bucharest, 24-hour clock in both en-GB and ro-RO

    # Camera and microphone refused: the join page offers to go on without them.
    denied = await devices.device(lang, (360, 740), phone=True)
    await denied.add_init_script(DENY_MEDIA)
    room = await server.create_room(type="individual", host="Dr. Ionescu")
    await denied.goto(room["client_links"][0])
    await denied.get_by_role("heading", name=catalogs[lang]["catalog"]["join.media.denied.title"]).wait_for()
    await check_texts(denied, catalogs, lang, "media denied")
    await check_axe(denied, "media denied")
    await check_phone(denied, "media denied")

    # The practice's administration page.
    await page.goto(server.url + "/admin")
    await page.get_by_role("heading", name=catalogs[lang]["catalog"]["admin.title"]).wait_for()
    await check_texts(page, catalogs, lang, "admin")
    await check_axe(page, "admin")


async def test_language_follows_the_browser_and_the_switcher_is_remembered(server: Any, devices: Devices,
                                                                           catalogs: dict[str, Any]) -> None:
    en, ro = catalogs["en"]["catalog"], catalogs["ro"]["catalog"]
    page = await devices.device("ro", (390, 844), phone=True)  # navigator.languages: ro-RO
    await page.goto(server.url + "/")
    await page.get_by_text(ro["app.tagline"]).wait_for()
    assert await page.evaluate("document.documentElement.lang") == "ro"
    switch = page.get_by_role("group", name=ro["lang.label"])
    await switch.get_by_role("button", name=en["lang.en"]).click()
    await page.get_by_text(en["app.tagline"]).wait_for()
    assert await page.evaluate("document.documentElement.lang") == "en"
    switch = page.get_by_role("group", name=en["lang.label"])  # the switcher's own name changed too
    assert await switch.get_by_role("button", name=en["lang.en"]).get_attribute("aria-pressed") == "true"
    assert await switch.get_by_role("button", name=ro["lang.ro"]).get_attribute("aria-pressed") == "false"
    await page.reload()
    await page.get_by_text(en["app.tagline"]).wait_for()  # remembered on this device
    await page.get_by_role("button", name=ro["lang.ro"]).click()
    await page.get_by_text(ro["app.tagline"]).wait_for()
    # A refused link's page changes language in place.
    await page.goto(server.url + "/j/#t=not-a-token")
    await page.get_by_role("heading", name=ro["error.title.token-invalid"]).wait_for()
    await page.get_by_role("button", name=en["lang.en"]).click()
    await page.get_by_role("heading", name=en["error.title.token-invalid"]).wait_for()
    await page.get_by_role("button", name=ro["lang.ro"]).click()
