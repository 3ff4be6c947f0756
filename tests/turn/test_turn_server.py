"""TURN through the server: credentials only after admission, then relay-only aiortc peers connect relay↔relay.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/turn/test_turn_server.py'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from peer.participant import Participant
from rtc.aiortc_hooks import selected_pair_types
from rtc.urls import sdp_candidate_types
from server.config import Config, Secret
from signaling import messages as m
from tests.conftest import AlcoveServer, require_loopback_namespace, serving
from tools.probe import run_probe

pytestmark = [pytest.mark.turn, pytest.mark.media, pytest.mark.integration]


@pytest.fixture
async def turn_server(tmp_path: Path, coturn: Any) -> AsyncIterator[AlcoveServer]:
    require_loopback_namespace()
    config = Config(turn_urls=tuple(coturn.urls), turn_secret=Secret(coturn.secret))
    async with serving(tmp_path / "data", config) as server:
        yield server


async def test_credentials_only_after_admission_then_relay_to_relay(turn_server: AlcoveServer) -> None:
    room = await turn_server.create_room(type="individual")
    t = await Participant.join(turn_server.url, room["therapist_link"], name="Dr. T", relay_only=True)
    c = await Participant.join(turn_server.url, room["client_links"][0], name="Alex", relay_only=True)
    try:
        await t.wait_until(lambda: [q.pid for q in t.queue] == [c.pid], 5, "queue")
        await asyncio.sleep(0.5)
        assert not any(isinstance(msg, m.IceServers) for msg in c.log), "a waiting client got TURN credentials"
        assert c.ice_servers == [] and not c.ice_known

        await t.admit(c.pid)
        await c.wait_until(lambda: c.ice_known, 5, "ice servers")
        for p in (t, c):
            assert any("turn:" in str(s.get("urls")) and s.get("username") and s.get("credential")
                       for s in p.ice_servers), p.ice_servers
        await c.wait_frames(t.pid, video=11, audio=10, timeout=30)
        await t.wait_frames(c.pid, video=11, audio=10, timeout=30)
        for p, peer in ((t, c), (c, t)):
            pc = p.links[peer.pid].pc
            assert pc.connectionState == "connected"
            assert set(sdp_candidate_types(pc.localDescription.sdp)) == {"relay"}
            assert set(sdp_candidate_types(pc.remoteDescription.sdp)) == {"relay"}
            pairs = selected_pair_types(pc)
            assert pairs and all(pair == ("relay", "relay") for pair in pairs), pairs
        assert t.failures == [] and c.failures == []
    finally:
        await c.close()
        await t.close()


async def test_probe_relay(turn_server: AlcoveServer) -> None:
    result = await run_probe(turn_server.url, "relay", duration=1.0, admin_key=turn_server.admin_key)
    assert result["ok"], result
    figures = result["figures"]
    assert figures["local_candidate_types"] == ["relay"]
    assert figures["candidate_pairs"] and all(
        pairs == [["relay", "relay"]] for pairs in figures["candidate_pairs"].values())
