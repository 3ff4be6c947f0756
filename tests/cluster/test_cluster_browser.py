"""Chromium on two instances behind nginx: the therapist and the client sit on different instances (one relays
to the room's owner through Redis), end-to-end encrypted video flows both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser.conftest import Pages, browser, decodes_from_all, join, wait_js

from .conftest import ClusterHarness

__all__ = ["browser"]  # the Chromium fixture, shared with tests/browser

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.browser]


@pytest.fixture
async def cluster_pages(browser: Any, cluster2: ClusterHarness) -> AsyncIterator[Pages]:
    p = Pages(browser, cluster2.url)
    try:
        yield p
    finally:
        await p.close()
    assert not p.foreign, f"requests to other origins: {p.foreign}"


async def test_a_browser_session_across_two_instances(cluster2: ClusterHarness, cluster_pages: Pages,
                                                      media_namespace: None) -> None:
    room = await cluster2.create_room(type="individual", host="Dr. Ionescu")
    therapist = await cluster_pages.new()
    client = await cluster_pages.new()
    await join(therapist, room["therapist_link"])
    await join(client, room["client_links"][0], "Alex")
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()
    await decodes_from_all(client, 1)
    await decodes_from_all(therapist, 1)
    for page in (client, therapist):
        await wait_js(page, "window.alcove.e2ee() && window.alcove.e2ee().epoch !== null")
    census = await cluster2.census()
    if not any(x["relayed"] for x in census.values()):
        # nginx's least_conn put both sockets on one instance (a busy machine: a page's own request was still open
        # on the other one). A reload reconnects the client's socket, which then goes to the instance without one.
        await client.reload()
        await decodes_from_all(client, 1)
        await decodes_from_all(therapist, 1)
        census = await cluster2.census()
    assert sorted(x["owned"] for x in census.values()) == [0, 1], census
    assert sorted(x["relayed"] for x in census.values()) == [0, 1], census
