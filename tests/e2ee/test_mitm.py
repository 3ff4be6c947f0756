"""A signaling middleman that swaps DTLS fingerprints (tools/mitm.py) is refused by signed SDP; SAS exposes a
middleman that knows the link secret but not the therapist's key.

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/e2ee/test_mitm.py'
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.e2ee import (
    ClientKeys,
    LinkInfo,
    SecurityCheckFailed,
    TherapistKeys,
    pub_raw,
    sdp_fingerprints,
    tk_of,
)
from peer.participant import Participant
from tests.e2ee.test_aiortc_e2ee import admit, e2ee_links
from tools.mitm import MitmProxy, rewrite_fingerprints

pytestmark = [pytest.mark.e2ee, pytest.mark.integration]


@pytest.fixture
async def through() -> AsyncIterator[Any]:
    """``await through(alcove, rewrite=…)``: a proxy in front of the server and participants joined through it."""
    proxies: list[MitmProxy] = []
    joined: list[Participant] = []

    async def start(alcove: Any, *, rewrite: bool) -> tuple[MitmProxy, Participant, Participant]:
        proxy = await MitmProxy(alcove.url, rewrite=rewrite).start()
        proxies.append(proxy)
        ik = ec.generate_private_key(ec.SECP256R1())
        room = await alcove.create_room(type="individual")
        t_link, (c_link,) = e2ee_links(room, ik)
        t = await Participant.join(proxy.url, t_link, name="Dr. T", therapist_ik=ik)
        joined.append(t)
        c = await Participant.join(proxy.url, c_link, name="Alex")
        joined.append(c)
        return proxy, t, c

    yield start
    for p in joined:
        await p.close()
    for proxy in proxies:
        await proxy.stop()


@pytest.mark.media
@pytest.mark.usefixtures("media_namespace")
async def test_fingerprint_swap_is_refused_by_both_ends(alcove: Any, through: Any) -> None:
    proxy, t, c = await through(alcove, rewrite=True)
    await admit(t, c)  # intro, grant and reveal pass through untouched
    await t.wait_until(lambda: bool(t.security_failures) and bool(c.security_failures), 10, "refusal")
    await asyncio.sleep(2.0)  # long enough for a connection to come up if it were going to
    assert proxy.rewritten >= 1 and proxy.forged_answers >= 1
    offerer, callee = (t, c) if t.pid < c.pid else (c, t)
    assert any("offer" in f and ("modified" in f or "fingerprint" in f) for f in callee.security_failures), callee.security_failures
    assert any("answer" in f for f in offerer.security_failures), offerer.security_failures
    for p in (t, c):
        assert not p.ever_connected()
        assert all(link.pc.remoteDescription is None for link in [*p.links.values(), *p.closed_links])
        assert p.frames_from(c.pid if p is t else t.pid) == {"video": 0, "audio": 0}
    assert c.sas == t.sas_of[c.pid]  # the key exchange itself was not attacked here


@pytest.mark.media
@pytest.mark.usefixtures("media_namespace")
async def test_control_transparent_proxy_connects(alcove: Any, through: Any) -> None:
    proxy, t, c = await through(alcove, rewrite=False)
    await admit(t, c)
    await c.wait_frames(t.pid, video=11, audio=10, timeout=15)
    await t.wait_frames(c.pid, video=11, audio=10, timeout=15)
    assert proxy.rewritten == 0 and len(proxy.relayed) >= 2
    assert t.security_failures == [] and c.security_failures == []
    assert t.ever_connected() and c.ever_connected()


def test_rewrite_fingerprints_changes_every_line() -> None:
    sdp = "v=0\r\na=fingerprint:sha-256 AA:BB\r\nm=audio\r\na=fingerprint:sha-256 AA:BB\r\n"
    out = rewrite_fingerprints(sdp, "sha-256 CC:DD")
    assert sdp_fingerprints(out) == ["sha-256 CC:DD", "sha-256 CC:DD"]


def _middleman_run(tk: bytes | None) -> tuple[ClientKeys, TherapistKeys, str]:
    """A middleman that knows S_link runs one key exchange with each side; returns (client, therapist, pid)."""
    room, pid, s_link = "r_test", "p_client", os.urandom(32)
    therapist = TherapistKeys(room, "p_therapist", s_link=s_link)
    client = ClientKeys(room, LinkInfo("tok", s_link, tk), pid=pid)
    fake_t = TherapistKeys(room, "p_therapist", s_link=s_link)  # faces the client
    fake_c = ClientKeys(room, LinkInfo("tok", s_link, None), pid=pid)  # faces the therapist

    fake_t.check_intro(pid, client.make_intro())
    info = therapist.check_intro(pid, fake_c.make_intro())
    assert info.mac_ok is True  # the middleman knows the link secret: its intro looks genuine
    fake_c.check_grant(therapist.make_grant(pid))
    client.check_grant(fake_t.make_grant(pid))  # raises when the link pins the therapist key (tk)
    fake_t.check_reveal(pid, client.make_reveal())
    therapist.check_reveal(pid, fake_c.make_reveal())
    return client, therapist, pid


def test_middleman_with_link_secret_gives_different_sas() -> None:
    for _ in range(5):
        client, therapist, pid = _middleman_run(tk=None)
        assert therapist.members[pid].sas is not None
        assert client.sas() != therapist.members[pid].sas
        assert client.sas().emoji != therapist.members[pid].sas.emoji  # type: ignore[union-attr]


def test_middleman_is_refused_when_the_link_pins_the_therapist_key() -> None:
    real_tk = tk_of(pub_raw(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SecurityCheckFailed, match="does not match the link"):
        _middleman_run(tk=real_tk)
