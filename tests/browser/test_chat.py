"""The end-to-end encrypted chat in the browser (ui/chat-view.js over e2ee-flow.js `sendApp`, docs/security.md §10):
two and three pages, both ways, a private message never reaches the third page, and what the server relayed holds
no planted string.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_chat.py'
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from signaling import messages as m

from .conftest import join, wait_js
from .test_e2ee_browser import admit, secure_room

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]

PLANTED = ("planted-Qx7-everyone", "planted-Qx7-private-to-therapist", "planted-Qx7-private-to-sam",
           "planted-Qx7-from-sam https://example.invalid/x")


@pytest.fixture
def relayed(alcove: Any) -> Iterator[list[bytes]]:
    """Every message the server queued for any socket, as bytes (a hook of this test process only)."""
    out: list[bytes] = []
    hub = alcove.hub
    put = hub._put

    def recording(c: Any, message: Any, now: float) -> None:
        out.append(m.encode(message))
        put(c, message, now)

    hub._put = recording
    yield out
    hub._put = put


async def keyed(page: Any) -> None:
    await wait_js(page, "window.alcove.e2ee() && window.alcove.e2ee().epoch !== null", timeout=20)


async def send(page: Any, text: str, to: str | None = None) -> None:
    if not await page.locator("#chat").is_visible():
        await page.get_by_role("button", name="Chat").click()
    if to is not None:
        await page.get_by_label("Send to").select_option(label=to)
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")  # Enter sends
    await wait_js(page, "document.getElementById('chat-input').value === ''")


def line(page: Any, text: str) -> Any:
    return page.locator("#chat-log .chat-text", has_text=text)


async def test_two_pages_chat_both_ways_with_unread_badge_and_announcement(alcove: Any, pages: Any,
                                                                           relayed: list[bytes]) -> None:
    _, therapist, (client,), (link,) = await secure_room(alcove, pages)
    await join(client, link, "Alex")
    await admit(therapist, "Alex")
    await keyed(client)
    await keyed(therapist)
    await send(therapist, f"Hello {PLANTED[0]}")
    # the client's chat is closed: a badge counts it, the live region says it
    badge = client.locator("#chat-badge")
    await badge.wait_for()
    assert await badge.inner_text() == "1"
    assert await client.get_by_role("button", name="Chat – 1 unread message").count() == 1
    await wait_js(client, f"document.getElementById('chat-live').textContent.includes({PLANTED[0]!r})")
    await client.get_by_role("button", name="Chat – 1 unread message").click()
    assert await client.evaluate("document.activeElement.id") == "chat-input"  # focus goes to the message box
    await line(client, PLANTED[0]).wait_for()
    assert await badge.is_hidden()
    who = client.locator("#chat-log .chat-msg").first.locator(".chat-who")
    assert await who.inner_text() == "Dr. Ionescu"  # the name the therapist signed
    # the client's choices: everyone or the therapist, never another client
    options = await client.locator("#chat-to option").all_inner_texts()
    assert options == ["Everyone in the session", "Your therapist only (private)"]
    await send(client, f"Private {PLANTED[1]}", to="Your therapist only (private)")
    await line(therapist, PLANTED[1]).wait_for()
    msg = therapist.locator("#chat-log .chat-msg", has_text=PLANTED[1])
    assert await msg.get_attribute("data-private") == "1"
    assert "private, to you" in await msg.inner_text()
    # the sender's own line is not announced; Escape closes and gives the focus back to the button
    assert PLANTED[1] not in await client.locator("#chat-live").inner_text()
    await client.keyboard.press("Escape")
    assert await client.locator("#chat").is_hidden()
    assert await client.evaluate("document.activeElement.id") == "btn-chat"
    assert not any(p.encode() in frame for p in PLANTED for frame in relayed)
    assert sum(b'"type":"app"' in frame for frame in relayed) >= 2
    # nothing of the chat in the page's storage
    for page in (therapist, client):
        stored = await page.evaluate("JSON.stringify([Object.values(localStorage), Object.values(sessionStorage)])")
        assert not any(p in stored for p in PLANTED)


async def test_three_pages_a_private_message_never_reaches_the_third(alcove: Any, pages: Any,
                                                                      relayed: list[bytes]) -> None:
    _, therapist, (alex, sam), (link_a, link_s) = await secure_room(alcove, pages, clients=2)
    await join(alex, link_a, "Alex")
    await admit(therapist, "Alex")
    await join(sam, link_s, "Sam")
    await admit(therapist, "Sam")
    for page in (therapist, alex, sam):
        await keyed(page)
    await wait_js(therapist, "[...document.querySelectorAll('#chat-to option')].some((o) => o.textContent === 'Sam only (private)')")
    await send(therapist, f"All of you {PLANTED[0]}")
    await send(therapist, f"Just Sam {PLANTED[2]}", to="Sam only (private)")
    await send(alex, f"Only the therapist {PLANTED[1]}", to="Your therapist only (private)")
    await send(sam, f"To everyone {PLANTED[3]}")
    await line(sam, PLANTED[2]).wait_for()
    await line(therapist, PLANTED[1]).wait_for()
    for page in (therapist, alex):
        await line(page, PLANTED[3]).wait_for()
    await line(alex, PLANTED[0]).wait_for()
    await line(sam, PLANTED[0]).wait_for()
    # a link is shown as text, never as a link
    assert await alex.locator("#chat-log a").count() == 0
    sam_line = alex.locator("#chat-log .chat-msg", has_text=PLANTED[3])
    assert (await sam_line.locator(".chat-who").inner_text()) == "Sam"
    await alex.wait_for_timeout(500)  # anything still in flight would have arrived by now
    assert await line(alex, PLANTED[2]).count() == 0
    assert await line(sam, PLANTED[1]).count() == 0
    # a client can never pick another client
    assert "Sam only (private)" not in await alex.locator("#chat-to option").all_inner_texts()
    assert not any(p.encode() in frame for p in PLANTED for frame in relayed)
    refusals = [await page.evaluate("window.alcove.e2ee().refusals") for page in (therapist, alex, sam)]
    assert refusals == [[], [], []]
    # sent back: the chat is gone from that page
    await therapist.get_by_role("button", name="Send Alex to waiting room").click()
    await alex.get_by_role("heading", name="Waiting for your therapist").wait_for()
    assert await alex.locator("#chat-log li").count() == 0
