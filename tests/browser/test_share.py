"""End-to-end encrypted screen sharing (issue 18): Chromium with fake devices and a fake screen picked without a
picker (tools/chromium.py SHARE_ARGS).

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_share.py'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import require_chromium
from tools.chromium import SHARE_ARGS, launch

from .conftest import TRACK_PCS, decodes_from_all, join, wait_for, wait_js
from .test_e2ee_browser import admit, secure_room

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await launch(p, *SHARE_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def share_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("window.alcove.share()")
    return state


async def share_decodes(page: Any, pid: str, min_frames: int = 3, timeout: float = 25.0) -> dict[str, Any]:
    """Waits until the page shows pid's share and decodes its video; returns its stats."""
    got: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal got
        s = await share_state(page)
        got = s["frames"].get(pid, {})
        return bool(s["shown"] == pid and got.get("framesDecoded", 0) >= min_frames)

    await wait_for(ready, timeout=timeout, what=f"the share of {pid} decoded")
    return got


async def stream_counts(page: Any, stream: int) -> dict[str, int]:
    state = await page.evaluate("window.alcove.e2ee()")
    counts: dict[str, int] = (state.get("streams") or {}).get(str(stream), {})
    return counts


FORCE_SHARE = """async () => {
  // A client without the therapist's permission forces a share onto its connections (not through the UI).
  const s = await navigator.mediaDevices.getDisplayMedia({ video: true });
  for (const pc of window.__pcs) {
    if (pc.connectionState !== "closed") pc.addTransceiver(s.getVideoTracks()[0], { direction: "sendonly" });
  }
  return true;
}"""


async def test_therapist_shares_a_tab_encrypted_through_mesh(alcove: Any, pages: Any) -> None:
    _room, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await client.add_init_script(TRACK_PCS)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    c_pid = await client.evaluate("window.alcove.pid()")

    # a client has no Share button by default; the therapist has one
    assert (await share_state(client))["button"] is False
    await therapist.get_by_role("button", name="Share screen", exact=True).click()
    await therapist.locator("#share-bar").get_by_text("You are sharing your screen", exact=True).wait_for()
    await therapist.get_by_role("button", name="Stop", exact=True).wait_for()
    assert (await share_state(therapist))["sending"] is True

    # the client decodes the share (the fake screen is larger than the fake camera), shown large, with the notice
    stats = await share_decodes(client, t_pid)
    assert stats["width"] >= 1280, stats
    await client.locator("#share-notice").get_by_text("Dr. Ionescu is sharing", exact=True).wait_for()
    assert await client.locator("#share-view").is_visible()
    # ... end to end encrypted under the share's own SFrame stream (KID stream 2), the camera still decoding
    await wait_js(therapist, "((window.alcove.e2ee().streams || {})['2'] || {}).encrypted > 5")
    await wait_js(client, "((window.alcove.e2ee().streams || {})['2'] || {}).decrypted > 5")
    await decodes_from_all(client, 1)

    # a forced share from the client (no permission) is refused by the therapist: not shown, and said so
    await client.evaluate(FORCE_SHARE)
    await wait_js(therapist, f"window.alcove.share().then(s => s.refused.includes({c_pid!r}))", timeout=40)
    assert (await share_state(therapist))["shown"] is None
    await therapist.get_by_text("Alex tried to share their screen without your permission. It was not shown.").wait_for()

    # send-back ends the share on both sides
    await therapist.get_by_role("button", name="Stop", exact=True).wait_for()
    await therapist.get_by_role("button", name="Send Alex to waiting room", exact=True).click()
    await wait_js(client, "window.alcove.status() === 'waiting'")
    await wait_js(client, "window.alcove.share().then(s => s.shown === null && s.remote.length === 0)")
    assert await client.locator("#share-view").is_hidden()
    # the therapist's share goes on for nobody in particular; admitting again shows it again
    await admit(therapist, "Alex")
    await share_decodes(client, t_pid)

    # Stop: the client's view goes back to the tiles
    await therapist.get_by_role("button", name="Stop", exact=True).click()
    assert (await share_state(therapist))["sending"] is False
    await wait_js(client, "window.alcove.share().then(s => s.shown === null)")
    assert await client.locator("#share-view").is_hidden()
    assert await therapist.locator("#share-bar").is_hidden()


async def test_the_browsers_own_stop_ends_the_share(alcove: Any, pages: Any) -> None:
    _room, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await therapist.add_init_script(TRACK_PCS)
    await therapist.reload()
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    await therapist.get_by_role("button", name="Share screen", exact=True).click()
    await share_decodes(client, t_pid)
    # what the browser's own "Stop sharing" does: the captured track ends
    ended = await therapist.evaluate("""() => {
      for (const pc of window.__pcs) for (const s of pc.getSenders()) {
        if (s.track && s.track.kind === "video" && s.track.label.startsWith("screen")) {
          s.track.dispatchEvent(new Event("ended"));
          return true;
        }
      }
      return false;
    }""")
    assert ended
    await wait_js(therapist, "window.alcove.share().then(s => !s.sending)")
    await wait_js(client, "window.alcove.share().then(s => s.shown === null)")
    assert await therapist.locator("#share-bar").is_hidden()


async def test_a_client_shares_only_while_the_therapist_allows_it(alcove: Any, pages: Any) -> None:
    _room, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    c_pid = await client.evaluate("window.alcove.pid()")
    assert (await share_state(client))["button"] is False
    # the therapist allows it (a signed app message): the client gets the button and shares
    await therapist.get_by_role("button", name="Allow sharing for Alex", exact=True).click()
    await client.get_by_text("Your therapist allowed you to share your screen.").wait_for()
    await client.get_by_role("button", name="Share my screen", exact=True).click()
    await client.locator("#share-bar").get_by_text("You are sharing your screen with your therapist").wait_for()
    await share_decodes(therapist, c_pid)
    await therapist.locator("#share-notice").get_by_text("Alex is sharing their screen", exact=True).wait_for()
    await wait_js(therapist, "((window.alcove.e2ee().streams || {})['2'] || {}).decrypted > 5")
    # withdrawn: the client's share stops and its button goes
    await therapist.get_by_role("button", name="Withdraw sharing for Alex", exact=True).click()
    await wait_js(client, "window.alcove.share().then(s => !s.sending && !s.button)")
    await wait_js(therapist, "window.alcove.share().then(s => s.shown === null)")


async def test_therapist_shares_through_the_sfu_encrypted(sfu_alcove: Any, browser: Any) -> None:
    """A family room (SFU) with E2EE: both clients decode the therapist's share, which the SFU forwards untouched
    (0 frames decoded) in one more slot; send-back ends it for that client, Stop for everyone."""
    from tests.conftest import sfu_decoded_frames

    from .conftest import Pages
    from .test_e2ee_browser import invite_link, with_secret

    pages = Pages(browser, sfu_alcove.url)
    try:
        room = await sfu_alcove.create_room(type="family", clients=2, host="Dr. Ionescu")
        assert room["topology"] == "sfu"
        small = {"width": 640, "height": 480}
        therapist = await pages.new()
        await join(therapist, with_secret(room["therapist_link"]))
        await therapist.get_by_text("Nobody is waiting.").wait_for()
        links = [await invite_link(therapist, link) for link in room["client_links"]]
        a, b = [await pages.new(viewport=small) for _ in links]
        for page, link, name in ((a, links[0], "Alex"), (b, links[1], "Sam")):
            await join(page, link, name)
        await admit(therapist, "Alex")
        await admit(therapist, "Sam")
        for page in (a, b):
            await decodes_from_all(page, 2, timeout=40)
        t_pid = await therapist.evaluate("window.alcove.pid()")
        await therapist.get_by_role("button", name="Share screen", exact=True).click()
        for page in (a, b):
            stats = await share_decodes(page, t_pid, timeout=40)
            assert stats["width"] >= 1280, stats
            await page.locator("#share-notice").get_by_text("Dr. Ionescu is sharing", exact=True).wait_for()
            await wait_js(page, "((window.alcove.e2ee().streams || {})['2'] || {}).decrypted > 5")
        await decodes_from_all(a, 2)  # the cameras go on
        assert await sfu_decoded_frames(sfu_alcove) == 0
        # send-back: Sam's view of the share ends; Alex keeps it
        # (a DOM click: the busy console re-renders its list while three pages decode on two shared cores)
        await therapist.get_by_role("button", name="Send Sam to waiting room", exact=True).evaluate("b => b.click()")
        await wait_js(b, "window.alcove.status() === 'waiting'")
        await wait_js(b, "window.alcove.share().then(s => s.shown === null)")
        assert (await share_state(a))["shown"] == t_pid
        await therapist.get_by_role("button", name="Stop", exact=True).evaluate("b => b.click()")
        await wait_js(a, "window.alcove.share().then(s => s.shown === null)", timeout=20)
        assert await a.locator("#share-view").is_hidden()
    finally:
        for line in pages.console_errors[-40:]:
            print("[browser]", line)
        await pages.close()
    assert not pages.foreign


async def test_a_python_participant_keeps_working_while_the_therapist_shares(alcove: Any, pages: Any) -> None:
    """The aiortc client takes the share's m-line, decrypts and consumes its frames (never shows them), and its
    camera and microphone go on both ways."""
    participant = pytest.importorskip("peer.participant")
    hooks = pytest.importorskip("rtc.aiortc_hooks")
    hooks.allow_loopback_candidates()
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await pages.new()
    await join(therapist, room["therapist_link"])
    bot = await participant.Participant.join(alcove.url, room["client_links"][0], name="Bot", e2ee=True)
    try:
        await admit(therapist, "Bot")
        await decodes_from_all(therapist, 1, timeout=30)
        t_pid = await therapist.evaluate("window.alcove.pid()")
        await bot.wait_frames(t_pid, video=10, timeout=30)
        await therapist.get_by_role("button", name="Share screen", exact=True).click()
        await wait_for(lambda: _async(bot.mesh.share_frames_from(t_pid) >= 3), timeout=30,
                       what="the bot receives the share")
        before = bot.frames_from(t_pid)["video"]
        await wait_for(lambda: _async(bot.frames_from(t_pid)["video"] > before + 10), timeout=15,
                       what="the bot's camera frames go on")
        await decodes_from_all(therapist, 1)
        assert bot.e2ee_glue.decrypt_failures() == 0
    finally:
        await bot.close()


async def _async(value: bool) -> bool:
    return value
