"""TURN in the browser: Chromium forced to relay-only through a throw-away coturn (tests/turn/conftest.py).

The app is not touched: an init script wraps ``window.RTCPeerConnection`` so that every configuration (the
constructor's and ``setConfiguration``'s) gets ``iceTransportPolicy: "relay"``. The server hands out TURN REST
credentials (``turn_urls`` + ``turn_secret``) only after admission.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/browser/test_turn_browser.py'
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.config import Config, Secret
from tests.conftest import AlcoveServer, require_loopback_namespace, serving
from tests.turn.conftest import coturn  # noqa: F401  (the fixture)

from .conftest import decodes_from_all, join, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.turn, pytest.mark.media]

# Every RTCPeerConnection of the page is relay-only; the page keeps them in window.__relayPcs for the stats.
RELAY_ONLY_JS = """
(() => {
  if (window.__relayPcs) return;
  const Native = window.RTCPeerConnection;
  const relay = (config) => Object.assign({}, config || {}, { iceTransportPolicy: "relay" });
  const pcs = [];
  class RelayOnlyPeerConnection extends Native {
    constructor(config, ...rest) {
      super(relay(config), ...rest);
      pcs.push(this);
    }
    setConfiguration(config) {
      return super.setConfiguration(relay(config));
    }
  }
  Object.defineProperty(window, "__relayPcs", { value: pcs });
  window.RTCPeerConnection = RelayOnlyPeerConnection;
})();
"""

# Per live connection: its policy, the types of its local candidates and of the selected pair (local, remote).
PAIRS_JS = """
async () => {
  const out = [];
  for (const pc of window.__relayPcs) {
    if (pc.connectionState === "closed") continue;
    const report = await pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
    });
    if (!pair) report.forEach((s) => {
      if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
    const local = [];
    report.forEach((s) => { if (s.type === "local-candidate") local.push(s.candidateType); });
    out.push({
      policy: pc.getConfiguration().iceTransportPolicy,
      state: pc.connectionState,
      local,
      pair: pair ? [report.get(pair.localCandidateId)?.candidateType, report.get(pair.remoteCandidateId)?.candidateType]
                 : null,
      ports: pair ? [report.get(pair.localCandidateId)?.port, report.get(pair.remoteCandidateId)?.port] : null,
    });
  }
  return out;
}
"""


@pytest.fixture
async def alcove(tmp_path: Path, coturn: Any) -> AsyncIterator[AlcoveServer]:  # noqa: F811
    """Overrides the plain server: this one hands out TURN credentials for the coturn fixture."""
    require_loopback_namespace()
    config = Config(turn_urls=tuple(coturn.urls), turn_secret=Secret(coturn.secret))
    async with serving(tmp_path / "data", config) as server:
        yield server


async def relay_page(pages: Any) -> Any:
    page = await pages.new()
    await page.add_init_script(RELAY_ONLY_JS)
    return page


def record_ws(page: Any) -> list[dict[str, Any]]:
    """Every JSON message the page's websockets receive, in order."""
    received: list[dict[str, Any]] = []

    def on_frame(payload: Any) -> None:
        try:
            msg = json.loads(payload)
        except (TypeError, ValueError):
            return
        if isinstance(msg, dict):
            received.append(msg)

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return received


def turn_servers(msg: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in msg.get("ice_servers") or []
            if "turn:" in json.dumps(s.get("urls")) and s.get("username") and s.get("credential")]


async def relay_pairs(page: Any, n: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Waits until the page has `n` connected relay-only connections with a selected pair, and returns them."""
    found: list[dict[str, Any]] = []

    async def ready() -> bool:
        nonlocal found
        found = [c for c in await page.evaluate(PAIRS_JS) if c["state"] == "connected" and c["pair"]]
        return len(found) >= n

    await wait_for(ready, timeout=timeout, what=f"{n} connected relay-only connection(s)")
    return found


def assert_relay_only(conns: list[dict[str, Any]], turn: Any) -> None:
    """Relay policy, only relay candidates gathered, a relay↔relay pair on ports of this coturn's relay range."""
    for c in conns:
        assert c["policy"] == "relay", c
        assert c["local"] and set(c["local"]) == {"relay"}, c
        assert c["pair"] == ["relay", "relay"], c
        assert all(turn.min_port <= int(port) <= turn.max_port for port in c["ports"]), (c, turn)


async def test_chromium_to_chromium_relay_only(alcove: AlcoveServer, pages: Any, coturn: Any) -> None:  # noqa: F811
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    client = await relay_page(pages)
    therapist = await relay_page(pages)
    await join(client, room["client_links"][0], name="Alex")
    await client.get_by_role("heading", name="Waiting for your therapist").wait_for()
    await join(therapist, room["therapist_link"])
    await therapist.get_by_role("button", name="Admit Alex", exact=True).click()

    await decodes_from_all(client, 1, timeout=30)
    await decodes_from_all(therapist, 1, timeout=30)
    for page in (client, therapist):
        assert_relay_only(await relay_pairs(page), coturn)


async def test_chromium_to_aiortc_relay_only(alcove: AlcoveServer, pages: Any, coturn: Any) -> None:  # noqa: F811
    from peer.participant import Participant
    from rtc.aiortc_hooks import selected_pair_types
    from rtc.urls import sdp_candidate_types

    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    therapist = await relay_page(pages)
    await join(therapist, room["therapist_link"])
    bot = await Participant.join(alcove.url, room["client_links"][0], name="Bot", relay_only=True, e2ee=True)
    try:
        await therapist.get_by_role("button", name="Admit Bot", exact=True).click()
        await decodes_from_all(therapist, 1, timeout=30)
        therapist_pid = await therapist.evaluate("window.alcove.pid()")
        await bot.wait_frames(therapist_pid, video=10, audio=5, timeout=30)
        assert_relay_only(await relay_pairs(therapist), coturn)
        pc = bot.links[therapist_pid].pc
        assert pc.connectionState == "connected"
        assert set(sdp_candidate_types(pc.localDescription.sdp)) == {"relay"}
        pairs = selected_pair_types(pc)
        assert pairs and all(pair == ("relay", "relay") for pair in pairs), pairs
    finally:
        await bot.close()


async def test_waiting_client_gets_ice_servers_only_after_admission(
        alcove: AlcoveServer, pages: Any, coturn: Any) -> None:  # noqa: F811
    room = await alcove.create_room(type="individual", host="Dr. Ionescu")
    client = await relay_page(pages)
    received = record_ws(client)
    therapist = await relay_page(pages)
    await join(client, room["client_links"][0], name="Alex")
    await client.get_by_role("heading", name="Waiting for your therapist").wait_for()
    await join(therapist, room["therapist_link"])
    admit = therapist.get_by_role("button", name="Admit Alex", exact=True)
    await admit.wait_for()
    await client.get_by_text("Your therapist is here.").wait_for()
    await asyncio.sleep(0.5)

    types = [m.get("type") for m in received]
    assert "welcome" in types and "ice-servers" not in types, types
    assert not any(turn_servers(m) for m in received), "a waiting client saw TURN credentials"

    before = len(received)
    await admit.click()

    async def got_ice() -> bool:
        return any(m.get("type") == "ice-servers" for m in received[before:])

    await wait_for(got_ice, timeout=10, every=0.1, what="an ice-servers message after admission")
    ice = [m for m in received[before:] if m.get("type") == "ice-servers"]
    assert turn_servers(ice[0]), ice[0]
    await decodes_from_all(client, 1, timeout=30)
    assert_relay_only(await relay_pairs(client), coturn)
