"""Every link can carry the anchor (issue 9 item 4): the therapist's key code from the console, kept on the admin's
side and added to the client links there (never sent to the server); what each side shows until the safety code
is compared; the "did not come through your invite link" warning only when a link secret was expected.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_link_anchor.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import decodes_from_all, join, shot, wait_js
from .test_e2ee_browser import admit, invite_link, sas_at_therapist, sas_of_client, with_secret

pytestmark = [pytest.mark.browser, pytest.mark.e2ee]


def record_requests(page: Any) -> list[str]:
    """Every request the page makes, as the server would receive it: method, URL, headers and body."""
    seen: list[str] = []

    def on_request(req: Any) -> None:
        seen.append(f"{req.method} {req.url}\n{req.headers}\n{req.post_data or ''}")

    page.on("request", on_request)
    return seen


async def therapist_console(alcove: Any, pages: Any, room: dict[str, Any]) -> tuple[Any, str]:
    """The therapist's console (E2EE on by default, the room secret made there) and the key code it shows."""
    therapist = await pages.new()
    await join(therapist, room["therapist_link"])
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    await therapist.get_by_role("button", name="Show my key code", exact=True).click()
    code: str = await therapist.get_by_label("Your key code").input_value()
    assert len(code) == 22
    return therapist, code


async def test_admin_page_adds_the_therapists_key_code_locally_and_the_client_is_anchored(
        alcove: Any, pages: Any) -> None:
    first = await alcove.create_room(type="individual", host="Dr. Ionescu")  # where the therapist reads the code
    console, code = await therapist_console(alcove, pages, first)
    await console.get_by_label("Your key code").scroll_into_view_if_needed()
    await shot(console, "e2ee-therapist-key-code")

    admin = await pages.new()
    sent = record_requests(admin)
    await admin.goto(alcove.url + "/admin")
    await admin.get_by_label("Admin key").fill(alcove.admin_key)
    await admin.get_by_label("Therapist name").fill("Dr. Ionescu")
    # A code that is not one: refused before anything is sent.
    await admin.get_by_label("Therapist's key code (optional)").fill(code[:-2])
    await admin.get_by_role("button", name="Create session").click()
    await admin.get_by_text("That is not a therapist's key code").wait_for()
    assert not any(r.startswith("POST") for r in sent)
    await admin.get_by_label("Therapist's key code (optional)").fill(f" {code[:11]} {code[11:]} ")
    await admin.get_by_role("button", name="Create session").click()
    await admin.locator("#links").get_by_text("Client link 1").wait_for()  # (the list below has one too)
    await admin.get_by_text("The client links carry the therapist's key code").wait_for()
    therapist_link, client_link = await admin.locator("#links code").all_inner_texts()
    assert client_link.endswith(f"&tk={code}") and "tk=" not in therapist_link
    # The list of upcoming sessions gives the same link again, and this code only to the session made with it.
    await wait_js(admin, "document.querySelectorAll('#upcoming-list > li').length === 2")
    listed = await admin.locator("#upcoming-list code").all_inner_texts()
    assert client_link in listed and first["client_links"][0] in listed, listed
    # Kept in the admin's browser, never in a request.
    assert await admin.evaluate("localStorage.getItem('alcove.admin.key-code')") == code
    assert any(r.startswith("POST") and "/api/rooms" in r for r in sent)
    for r in sent:
        assert code not in r and code[:11] not in r and "tk=" not in r, r
    await shot(admin, "admin-key-code", full_page=True)

    # The therapist opens the new session on the same device (same identity key); the client comes with the
    # admin-made link: no room secret, so no MAC and no warning, and its device is anchored by tk.
    therapist = await console.context.new_page()
    await join(therapist, therapist_link)
    await therapist.get_by_text("Nobody is waiting.").wait_for()
    client = await pages.new()
    await join(client, client_link, "Alex")
    await therapist.get_by_text("Came with a link from your practice: compare the safety code").wait_for()
    assert await therapist.get_by_text("Did not come through your invite link").count() == 0
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    await client.get_by_text("Verified: your link carries your therapist's key, and it matches.").wait_for()
    assert await client.get_by_role("button", name="The codes match").is_hidden()
    status = client.locator("#e2ee-status")
    assert "not verified" not in (await status.inner_text())
    assert await client.locator(".verify-badge").count() == 0


async def test_without_an_anchor_both_sides_show_not_verified_until_the_code_is_compared(
        alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist, _ = await therapist_console(alcove, pages, room)
    client = await pages.new()
    await join(client, room["client_links"][0], "Alex")  # an admin-made link without the key code
    await therapist.get_by_text("Came with a link from your practice: compare the safety code").wait_for()
    assert await therapist.get_by_text("Did not come through your invite link").count() == 0
    await admit(therapist, "Alex")
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    pid = await client.evaluate("window.alcove.pid()")
    assert await sas_of_client(client) == await sas_at_therapist(therapist, pid)
    # Media flows, visibly unverified, on both sides.
    await client.get_by_text("Not verified yet: check the code with your therapist").wait_for()
    await wait_js(client, "document.getElementById('e2ee-status').textContent.includes('not verified yet')")
    await client.locator(".tile .verify-badge", has_text="Not verified yet").wait_for()
    row = therapist.locator(f'[data-sas-for="{pid}"]')
    await row.get_by_text("Not verified yet").wait_for()
    await therapist.locator(f'.tile[data-pid="{pid}"] .verify-badge', has_text="Not verified yet").wait_for()
    await therapist.get_by_text("It does not prove who else is in the room").wait_for()
    await shot(client, "e2ee-client-not-verified")
    await shot(therapist, "e2ee-therapist-not-verified")
    # Each side marks its own comparison: the client's button, the therapist's "Mark verified".
    await client.get_by_role("button", name="The codes match", exact=True).click()
    await client.get_by_text("Verified ✓ You confirmed the code matches.").wait_for()
    await wait_js(client, "!document.getElementById('e2ee-status').textContent.includes('not verified')")
    assert await client.locator(".verify-badge").count() == 0
    await therapist.get_by_role("button", name="Mark verified: Alex", exact=True).click()
    await row.get_by_text("Verified ✓").wait_for()
    assert await therapist.locator(".verify-badge").count() == 0


async def test_the_invite_link_warning_only_where_a_link_secret_was_expected(alcove: Any, pages: Any) -> None:
    room = await alcove.create_room(type="couple", host="Dr. Ionescu")
    therapist, code = await therapist_console(alcove, pages, room)
    # A link with a secret that is not this room's (another room's, or an old one): a MAC that fails.
    alex = await pages.new()
    await join(alex, with_secret(room["client_links"][0]) + f"&tk={code}", "Alex")
    note = therapist.locator("#queue-list li", has_text="Alex").locator(".intro-note")
    await note.get_by_text("Did not come through your invite link: compare the safety code").wait_for()
    # Once this console handed out secure links for the room, a client without the secret is unexpected too
    # (the server may have stripped the MAC or made the intro itself).
    await invite_link(therapist, room["client_links"][1])
    sam = await pages.new()
    await join(sam, room["client_links"][1], "Sam")
    note = therapist.locator("#queue-list li", has_text="Sam").locator(".intro-note")
    await note.get_by_text("Did not come through your invite link: compare the safety code").wait_for()
