"""A participant whose socket stops reading: the server queues for it only once its socket's buffer is full, closes
it with 4009 (slow-consumer) when that queue overflows, and the others' relay goes on meanwhile."""

from __future__ import annotations

import asyncio
import time

import pytest

from peer.signaling_client import SignalingClient
from signaling import messages as m

from ..conftest import AlcoveServer

pytestmark = [pytest.mark.integration]

BIG_SDP = "v=0\r\n" + "a=x-pad:" + "x" * 20_000 + "\r\n"  # ~20 kB per relayed offer


async def test_a_socket_that_stops_reading_is_closed_as_slow_and_the_room_goes_on(alcove: AlcoveServer) -> None:
    room = await alcove.create_room("couple")
    opened: list[SignalingClient] = []
    try:
        therapist = await SignalingClient.open(alcove.url, room["therapist_link"], name="Therapist")
        opened.append(therapist)
        clients = []
        for i, link in enumerate(room["client_links"]):
            c = await SignalingClient.open(alcove.url, link, name=f"Client {i}")
            opened.append(c)
            await therapist.send(m.Admit(pid=c.pid))
            await c.next("admitted", timeout=10)
            clients.append(c)
        await therapist.next("roster", timeout=10)
        a, b = clients
        hub = alcove.hub
        conn = hub.rooms.conn_of(room["room_id"], therapist.pid)
        assert conn is not None

        # the therapist's socket stops reading (a frozen tab on a bad link)
        assert therapist._ws is not None
        transport = therapist._ws._writer.transport
        transport.pause_reading()

        deadline = time.monotonic() + 20
        sent = 0
        while (c := hub.connections.get(conn)) is not None and not c.closing:
            assert time.monotonic() < deadline, "the slow consumer was never closed"
            # a burst within the per-socket allowance, then under its sustained rate: nobody is rate-limited
            await a.send(m.Offer(to=therapist.pid, sdp=BIG_SDP))
            await b.send(m.Offer(to=therapist.pid, sdp=BIG_SDP))
            sent += 1
            if sent > 150:
                await asyncio.sleep(0.025)
        c = hub.connections.get(conn)
        assert c is None or (c.close_code, c.close_reason) == (4009, "slow-consumer")
        assert hub.metrics.errors.labels(code="slow-consumer")._value.get() == 1

        # the others are not held up by it
        a.drain()
        b.drain()
        await a.send(m.Candidate(to=b.pid, candidate="candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
                                 sdp_mid="0", sdp_mline_index=0))
        got = await b.next("candidate", timeout=5)
        assert got.from_ == a.pid

        transport.resume_reading()  # what it finally reads ends with the close
        assert await therapist.wait_closed(timeout=10) == 4009
    finally:
        for sc in opened:
            await sc.close()
