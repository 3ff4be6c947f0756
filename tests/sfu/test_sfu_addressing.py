"""The SFU's candidates: announced address and port range (1:1 NAT), and no silent timeout without an address.

The answers are only read here, never applied: nothing is sent to the announced (documentation) address.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.sfu import SfuManager
from server.sfu.addressing import UNREACHABLE_MESSAGE
from signaling import messages as m
from signaling.effects import MediaMembers, MediaSignal
from tests.conftest import require_loopback_namespace

pytestmark = pytest.mark.sfu
ROOM = "r-addressing"


async def _answer_or_error(manager: SfuManager, replies: asyncio.Queue[Any]) -> Any:
    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        manager.handle(MediaMembers(ROOM, frozenset({"p1"})))  # type: ignore[arg-type]
        manager.handle(MediaSignal(ROOM, "p1", m.Offer(to="sfu", sdp=pc.localDescription.sdp)))  # type: ignore[arg-type]
        while True:
            reply = await asyncio.wait_for(replies.get(), 15)
            if isinstance(reply, m.PeerAnswer | m.Error):
                return reply
    finally:
        await pc.close()


@pytest.fixture
def replies() -> asyncio.Queue[Any]:
    return asyncio.Queue()


@pytest.fixture
async def manager_for(replies: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    managers: list[SfuManager] = []

    async def make(**kwargs: Any) -> SfuManager:
        manager = SfuManager(lambda room, pid, message: replies.put_nowait(message), workers=1, **kwargs)
        managers.append(manager)
        await manager.start()
        return manager

    yield make
    for manager in managers:
        await manager.stop()


async def test_the_answer_announces_the_address_on_ports_of_the_range(manager_for: Any,
                                                                        replies: asyncio.Queue[Any]) -> None:
    require_loopback_namespace()
    manager = await manager_for(loopback=True, announced="198.51.100.7", ports=(42000, 42009))
    answer = await _answer_or_error(manager, replies)
    assert isinstance(answer, m.PeerAnswer), answer
    hosts = re.findall(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", answer.sdp, re.M)
    assert hosts, answer.sdp
    for address, port in hosts:
        assert address == "198.51.100.7" and 42000 <= int(port) <= 42009
    assert "127.0.0.1" not in answer.sdp


async def test_without_any_address_the_sfu_says_so_instead_of_answering(manager_for: Any,
                                                                       replies: asyncio.Queue[Any]) -> None:
    require_loopback_namespace()  # nothing but lo: no address a client elsewhere could reach
    manager = await manager_for(loopback=False)
    reply = await _answer_or_error(manager, replies)
    assert isinstance(reply, m.Error), reply
    assert (reply.code, reply.message, reply.ref) == ("media-unreachable", UNREACHABLE_MESSAGE, "offer")
