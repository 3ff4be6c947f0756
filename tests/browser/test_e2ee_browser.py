"""End-to-end encryption in the browser client (docs/security.md): Chromium therapist and clients, the aiortc
participant in both roles, removal, a fingerprint-swapping middleman, and a wrong key.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q -m e2ee tests/browser/test_e2ee_browser.py'
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import pytest

from rtc.codecs import TRANSPORT_HEADER_EXTENSIONS

from .conftest import TRACK_PCS, decodes_from_all, frames, join, overlays_apart, shot, wait_for, wait_js

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_secret(therapist_link: str, s: str | None = None) -> str:
    """The therapist's own link with a link secret: E2EE on for the room on that page."""
    return therapist_link + f"&s={s or b64(os.urandom(32))}"


async def e2ee_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] | None = await page.evaluate("window.alcove && window.alcove.e2ee ? window.alcove.e2ee() : null")
    assert state is not None, "E2EE is not on in this page"
    return state


async def invite_link(therapist: Any, client_link: str) -> str:
    """The console's "Invite links" helper: the admin-made link with this room's s and the therapist's tk."""
    await therapist.get_by_role("heading", name="Invite links").wait_for()
    await therapist.locator("#invite-input").fill(client_link)
    await therapist.get_by_role("button", name="Add encryption", exact=True).click()
    await wait_js(therapist, "document.getElementById('invite-output').value.includes('&tk=')")
    link: str = await therapist.locator("#invite-output").input_value()
    return link


async def secure_room(alcove: Any, pages: Any, clients: int = 1) -> tuple[dict[str, Any], Any, list[Any], list[str]]:
    room = await alcove.create_room(type="individual" if clients == 1 else "couple", host="Dr. Ionescu")
    therapist = await pages.new()
    await join(therapist, with_secret(room["therapist_link"]))
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    links = [await invite_link(therapist, link) for link in room["client_links"][:clients]]
    pages_ = [await pages.new() for _ in links]
    return room, therapist, pages_, links


async def admit(therapist: Any, name: str) -> None:
    button = therapist.get_by_role("button", name=f"Admit {name}", exact=True)
    await button.wait_for()
    await wait_for(button.is_enabled, timeout=10, what="intro checked")
    await button.click()


async def sas_of_client(page: Any) -> str:
    await wait_js(page, "window.alcove.e2ee() && window.alcove.e2ee().sas")
    return str((await e2ee_state(page))["sas"])


async def sas_at_therapist(therapist: Any, pid: str) -> str:
    await wait_js(therapist, f"(window.alcove.e2ee().sasOf || {{}})[{pid!r}]")
    return str((await e2ee_state(therapist))["sasOf"][pid])


AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
DESCRIPTIONS = """window.__pcs.filter((pc) => pc.connectionState !== "closed" && pc.remoteDescription)
  .map((pc) => [pc.localDescription.sdp, pc.remoteDescription.sdp])"""


def assert_little_metadata(sdp: str) -> dict[int, str]:
    """An E2EE description: only the transport's header extensions (no audio level), Opus with cbr=1.
    Returns its header extensions by id."""
    extmaps = {int(line[9:].split(" ")[0].split("/")[0]): line.split(" ", 1)[1].split(" ")[0]
               for line in sdp.splitlines() if line.startswith("a=extmap:")}
    assert AUDIO_LEVEL not in sdp and set(extmaps.values()) <= TRANSPORT_HEADER_EXTENSIONS, extmaps
    opus = [line.split(":", 1)[1].split(" ")[0] for line in sdp.splitlines()
            if line.startswith("a=rtpmap:") and "opus/48000" in line.lower()]
    assert opus
    for pt in opus:
        fmtp = [line for line in sdp.splitlines() if line.startswith(f"a=fmtp:{pt} ")]
        assert fmtp and all("cbr=1" in line.split(" ", 1)[1].split(";") for line in fmtp), fmtp
    return extmaps


async def assert_page_negotiated_little_metadata(page: Any) -> None:
    """Every live connection of the page, both descriptions (Chromium's own and the other side's)."""
    pairs = await page.evaluate(DESCRIPTIONS)
    assert pairs
    for local, remote in pairs:
        assert_little_metadata(local)
        assert_little_metadata(remote)


async def test_browser_client_and_therapist_encrypted_with_equal_safety_code(alcove: Any, pages: Any) -> None:
    room, therapist, (client,), (link,) = await secure_room(alcove, pages)
    assert "&s=" in link and "&tk=" in link and link.startswith(room["client_links"][0].split("#")[0])
    await client.add_init_script(TRACK_PCS)
    await join(client, link, "Alex")
    assert "#" not in client.url  # the fragment (token, s, tk) was stripped from the address bar
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    client_pid = await client.evaluate("window.alcove.pid()")
    code = await sas_of_client(client)
    assert code == await sas_at_therapist(therapist, client_pid)
    # the same code on both screens, in both forms
    decimal = (await client.locator("#safety-decimal").inner_text()).strip()
    row = therapist.locator(f'[data-sas-for="{client_pid}"]')
    assert decimal and decimal == (await row.locator(".sas-decimal-line").inner_text()).strip()
    assert decimal.replace(" ", ",") == code.split("|")[1]
    await client.get_by_role("heading", name="Safety code").wait_for()
    await client.get_by_text("Compare this code with the one your therapist reads out.", exact=False).wait_for()
    # the console's link carries tk: the client's device is anchored; the therapist has not compared yet
    await client.get_by_text("Verified: your link carries your therapist's key, and it matches.").wait_for()
    await row.get_by_text("Not verified yet").wait_for()
    # the media really went through the SFrame worker both ways; health and epoch are shown
    for page in (client, therapist):
        await wait_js(page, "(window.alcove.e2ee().peers.self || {}).encrypted > 20")
        state = await e2ee_state(page)
        assert state["epoch"] is not None and state["failures"] == []
        assert sum(p.get("decrypted", 0) for p in state["peers"].values()) > 20
        assert state["peers"]["self"]["encrypted"] > 20
        await page.locator(f"#e2ee-status[data-epoch='{state['epoch']}']").get_by_text(
            "Private — end-to-end encrypted").wait_for()
        await wait_js(page, "[...document.querySelectorAll('.e2ee-badge')].some(b => b.dataset.state === 'ok')")
        assert await page.locator(".e2ee-badge", has_text="Encrypted").count() == 1
    # less metadata: no audio level or other clear header extension, Opus at constant bitrate, both ways
    await assert_page_negotiated_little_metadata(client)
    # Mark verified is remembered per client key
    await therapist.get_by_role("button", name="Mark verified: Alex", exact=True).click()
    await row.get_by_text("Verified ✓").wait_for()
    await shot(client, "e2ee-client-safety-code")
    await shot(therapist, "e2ee-therapist-console")


async def test_couple_removed_client_stops_decoding_other_goes_on(alcove: Any, pages: Any) -> None:
    _, therapist, (a, b), (link_a, link_b) = await secure_room(alcove, pages, clients=2)
    await join(a, link_a, "Alex")
    await join(b, link_b, "Sam")
    await admit(therapist, "Alex")
    await admit(therapist, "Sam")
    await decodes_from_all(a, 2, timeout=40)
    await decodes_from_all(b, 2, timeout=40)
    await decodes_from_all(therapist, 2, timeout=40)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    a_pid = await a.evaluate("window.alcove.pid()")
    epoch_before = (await e2ee_state(therapist))["epoch"]

    await therapist.get_by_role("button", name="Remove Sam", exact=True).click()
    await therapist.get_by_role("dialog").get_by_role("button", name="Remove", exact=True).click()
    removed_at = asyncio.get_running_loop().time()
    # b's view of the therapist freezes within 3 s (its connections close and it gets no new key)
    last = (await frames(b)).get(t_pid, 0)
    stopped_at: float | None = None
    while asyncio.get_running_loop().time() - removed_at < 6:
        await asyncio.sleep(0.25)
        now = (await frames(b)).get(t_pid)
        if now is None or now == last:
            stopped_at = stopped_at or asyncio.get_running_loop().time()
        else:
            stopped_at = None
        last = now if now is not None else last
        if stopped_at and asyncio.get_running_loop().time() - stopped_at > 1.5:
            break
    assert stopped_at is not None and stopped_at - removed_at < 3.0, "the removed client kept decoding"
    # a new epoch without b; a and the therapist go on decoding each other
    await wait_js(therapist, f"window.alcove.e2ee().epoch > {epoch_before}", timeout=10)
    first = await frames(a)
    await asyncio.sleep(1.5)
    later = await frames(a)
    assert later[t_pid] > first[t_pid] + 5
    t_first = (await frames(therapist))[a_pid]
    await asyncio.sleep(1.0)
    assert (await frames(therapist))[a_pid] > t_first + 5
    assert (await e2ee_state(a))["failures"] == []


async def test_therapist_reload_issues_a_new_epoch_and_media_resumes(alcove: Any, pages: Any) -> None:
    _, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    c_pid = await client.evaluate("window.alcove.pid()")
    code = await sas_at_therapist(therapist, c_pid)
    epoch = (await e2ee_state(client))["epoch"]
    await therapist.reload()
    # same IK_T (IndexedDB) and the public state from this tab: a new epoch the client accepts
    await wait_js(client, f"window.alcove.e2ee().epoch > {epoch}", timeout=20)
    await decodes_from_all(therapist, 1, timeout=30)
    t_pid = await therapist.evaluate("window.alcove.pid()")
    first = (await frames(client)).get(t_pid, 0)
    await wait_for(lambda: _grew(client, t_pid, first + 10), timeout=20, what="client decodes the returned therapist")
    assert (await e2ee_state(client))["failures"] == [] and (await e2ee_state(therapist))["failures"] == []
    assert await sas_at_therapist(therapist, c_pid) == code


# v2: "dk" became "hpke" (the HPKE private keys not erased yet) and the newest epoch's signed "expires_at" is kept
CLIENT_STATE_FIELDS = {"v", "room", "pid", "ik", "hpke", "expires_at", "n_c", "ik_t", "n_t", "therapist", "epoch",
                       "roster", "sdp_seq", "last_seq"}


async def client_state(page: Any) -> dict[str, Any] | None:
    text = await page.evaluate("""(() => {
      for (let i = 0; i < sessionStorage.length; i++) {
        const k = sessionStorage.key(i);
        if (k.startsWith("alcove.e2ee.client.")) return sessionStorage.getItem(k);
      }
      return null;
    })()""")
    return json.loads(text) if text else None


async def test_client_reload_returns_without_admission_with_the_same_code(alcove: Any, pages: Any) -> None:
    _, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    c_pid = await client.evaluate("window.alcove.pid()")
    t_pid = await therapist.evaluate("window.alcove.pid()")
    code = await sas_of_client(client)
    assert code == await sas_at_therapist(therapist, c_pid)
    epoch = (await e2ee_state(therapist))["epoch"]
    # what this tab keeps: its identity and the verified therapist state, never an epoch secret or media key
    kept = await client_state(client)
    assert kept is not None and set(kept) == CLIENT_STATE_FIELDS and kept["pid"] == c_pid
    assert kept["therapist"] == t_pid and "d" in kept["ik"] and all("d" in k for k in kept["hpke"])

    await client.reload()
    # straight back into the session: no join step, no waiting room, no new "Admit"
    await client.get_by_role("button", name="Mute", exact=True).wait_for()
    assert await client.get_by_role("heading", name="Waiting for your therapist").count() == 0
    assert await client.evaluate("window.alcove.pid()") == c_pid
    assert await sas_of_client(client) == code
    await client.get_by_role("heading", name="Safety code").wait_for()
    # the therapist saw the client come back and sent it a new epoch
    await wait_js(client, f"window.alcove.e2ee().epoch > {epoch}", timeout=20)
    await decodes_from_all(client, 1, timeout=30)
    first = (await frames(therapist)).get(c_pid, 0)
    await wait_for(lambda: _grew(therapist, c_pid, first + 10), timeout=20, what="therapist decodes the returned client")
    assert await therapist.get_by_role("button", name="Admit Alex", exact=True).count() == 0
    assert await sas_at_therapist(therapist, c_pid) == code
    assert (await e2ee_state(client))["failures"] == [] and (await e2ee_state(therapist))["failures"] == []
    # leaving drops what the tab kept
    await client.get_by_role("button", name="Leave", exact=True).click()
    await wait_for(lambda: _no_client_state(client), timeout=10, what="the kept client state to be dropped")


async def _no_client_state(page: Any) -> bool:
    return await client_state(page) is None


async def test_send_back_drops_keys_and_readmission_gives_a_new_code(alcove: Any, pages: Any) -> None:
    _, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    c_pid = await client.evaluate("window.alcove.pid()")
    first_code = await sas_of_client(client)
    await therapist.get_by_role("button", name="Send Alex to waiting room", exact=True).click()
    await client.get_by_role("heading", name="Waiting for your therapist").wait_for()
    state = await e2ee_state(client)
    assert state["sas"] is None and await client.locator("#safety").is_hidden()
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1, timeout=30)
    await decodes_from_all(therapist, 1, timeout=30)
    code = await sas_of_client(client)
    assert code != first_code and code == await sas_at_therapist(therapist, c_pid)
    assert (await e2ee_state(client))["failures"] == [] and (await e2ee_state(therapist))["failures"] == []


async def _grew(page: Any, pid: str, at_least: int) -> bool:
    return (await frames(page)).get(pid, 0) >= at_least


WRONG_KEY_SCRIPT = """
(() => {
  const post = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (msg, ...rest) {
    if (msg && msg.type === "keys" && msg.baseKeys) {
      const out = {};
      for (const [i, k] of Object.entries(msg.baseKeys)) { const c = new Uint8Array(k); c[0] ^= 0xff; out[i] = c; }
      msg = { ...msg, baseKeys: out };
    }
    return post.call(this, msg, ...rest);
  };
})();
"""


async def test_wrong_key_decodes_nothing(alcove: Any, pages: Any) -> None:
    _, therapist, (client,), (link,) = await secure_room(alcove, pages)
    # test hook: this page's worker gets every media key with one byte flipped
    await client.add_init_script(WRONG_KEY_SCRIPT)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    t_pid = await therapist.evaluate("window.alcove.pid()")
    c_pid = await client.evaluate("window.alcove.pid()")
    await wait_js(client, f"(window.alcove.e2ee().peers[{t_pid!r}] || {{}}).failed > 30", timeout=20)
    await wait_js(therapist, f"(window.alcove.e2ee().peers[{c_pid!r}] || {{}}).failed > 30", timeout=20)
    await asyncio.sleep(1.0)
    assert (await frames(client)).get(t_pid, 0) == 0
    assert (await frames(therapist)).get(c_pid, 0) == 0
    assert (await e2ee_state(client))["peers"][t_pid]["decrypted"] == 0
    # the key exchange itself was fine: same safety code, connected, and the tile says so
    assert await sas_of_client(client) == await sas_at_therapist(therapist, c_pid)
    await client.get_by_text("Can't decrypt — ask them to rejoin").wait_for(timeout=10_000)
    await therapist.get_by_text("Can't decrypt — ask them to rejoin").wait_for(timeout=10_000)
    await shot(therapist, "e2ee-badge-cant-decrypt")


async def test_a_failing_tile_keeps_its_words_on_a_small_tile(alcove: Any, pages: Any) -> None:
    # A couple session on the therapist's phone: three small tiles; one client cannot be decrypted. Its tile says so
    # (in Romanian, the longest words), whole and readable, with every other badge of every tile clear of it.
    _, therapist, (alex, bea), (link_a, link_b) = await secure_room(alcove, pages, clients=2)
    await bea.add_init_script(WRONG_KEY_SCRIPT)
    await join(alex, link_a, "Alex")
    await admit(therapist, "Alex")
    await join(bea, link_b, "Bea")
    await admit(therapist, "Bea")
    await therapist.locator(".tile .e2ee-badge[data-state='failing']").wait_for(timeout=20_000)
    await therapist.get_by_role("button", name="Română", exact=True).first.click()
    await wait_js(therapist, "document.documentElement.lang === 'ro'")
    for size, viewport in (("phone", {"width": 390, "height": 844}), ("phone-landscape", {"width": 844, "height": 390})):
        await therapist.set_viewport_size(viewport)
        seen = await overlays_apart(therapist, size)
        assert {"e2ee-badge", "quality", "name"} <= seen, seen
        failing = therapist.locator(".tile .e2ee-badge[data-state='failing']")
        assert await failing.text_content() == "Nu se poate decripta — rugați persoana să intre din nou"
        box = await failing.bounding_box()
        assert box is not None and box["height"] >= 12 and box["width"] >= 60, box  # seen, not a sliver
        cut = await failing.evaluate("(el) => el.scrollHeight > el.clientHeight + 1")
        assert not cut, f"{size}: the failure's words are cut short"
    await shot(therapist, "e2ee-badge-cant-decrypt-phone-ro")


NO_TRANSFORMS_SCRIPT = """
delete window.RTCRtpScriptTransform;
if (window.RTCRtpSender) delete RTCRtpSender.prototype.createEncodedStreams;
"""


async def test_join_page_says_when_the_browser_cannot_encrypt(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    client = await pages.new()
    await client.add_init_script(NO_TRANSFORMS_SCRIPT)
    link = room["client_links"][0] + f"&s={b64(os.urandom(32))}&tk={b64(os.urandom(16))}"
    await client.goto(link)
    await client.get_by_text("This browser cannot encrypt video end to end; please use a current Chrome, Edge, "
                             "Firefox or Safari.").wait_for()
    # an E2EE link never falls back to unencrypted media: nobody waits in vain
    assert await client.get_by_role("button", name="Join", exact=True).is_disabled()


async def test_the_console_makes_a_secure_invite_link_per_seat(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="couple", host="Dr. Ionescu")
    therapist = await pages.new()
    await join(therapist, room["therapist_link"])  # an admin-made link: the console makes the room secret
    await therapist.get_by_role("button", name="Create secure invite links").click()
    first = therapist.get_by_role("textbox", name="Secure invite link for seat 1")
    await first.wait_for()
    assert await therapist.get_by_role("button", name="Copy the invite link for seat 2").count() == 1
    await therapist.locator("#invite-panel").scroll_into_view_if_needed()
    await shot(therapist, "e2ee-invite-links")
    link = await first.input_value()
    assert "&s=" in link and "&tk=" in link and link.split("#t=")[1].split("&")[0] not in {
        c.split("#t=")[1] for c in room["client_links"]}
    # the short form: a seat id and a 16-byte secret (22 characters each), one text message with any usual host
    fragment = dict(p.split("=", 1) for p in link.split("#", 1)[1].split("&"))
    assert [len(fragment[k]) for k in ("t", "s", "tk")] == [22, 22, 22], fragment
    client = await pages.new()
    await join(client, link.replace(link.split("/j/")[0], alcove.url), "Alex")
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1, timeout=30)
    assert await sas_of_client(client) == await sas_at_therapist(therapist, await client.evaluate("window.alcove.pid()"))
    assert (await e2ee_state(client))["failures"] == []
