"""Ephemeral TURN credentials against a real coturn on 127.0.0.1 (REST API / use-auth-secret)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aioice.ice
import pytest
from aioice import stun
from aioice.turn import make_integrity_key
from aiortc import RTCPeerConnection

from rtc.ice import aiortc_configuration
from server.turn import (
    TurnConfig,
    ice_server_entry,
    issue_credentials,
    verify_credentials,
)

from .stun_client import stun_transact

pytestmark = [pytest.mark.turn, pytest.mark.media]

UDP_TRANSPORT = 17 << 24  # REQUESTED-TRANSPORT: UDP (RFC 8656 §18.7)


@pytest.fixture(autouse=True)
def _gather_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice leaves out 127.0.0.1 when it gathers host candidates; the namespace has nothing else.
    monkeypatch.setattr(
        aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    )


def _config(coturn: Any, secret: str | None = None) -> TurnConfig:
    return TurnConfig(urls=coturn.urls, secret=secret if secret is not None else coturn.secret)


def _valid(coturn: Any, opaque_id: str) -> dict[str, Any]:
    now = time.time()
    return issue_credentials(_config(coturn), opaque_id=opaque_id, now=now, session_ends_at=now + 3000)


def _expired(coturn: Any, opaque_id: str) -> dict[str, Any]:
    # Issued for a session that ended 5 hours ago: correctly signed, expiry in the past.
    then = time.time() - 5 * 3600
    creds = issue_credentials(_config(coturn), opaque_id=opaque_id, now=then, session_ends_at=then + 600)
    assert creds["expires_at"] < time.time()
    return creds


def _forged(coturn: Any, opaque_id: str) -> dict[str, Any]:
    now = time.time()
    wrong = TurnConfig(urls=coturn.urls, secret="not-the-coturn-secret")
    return issue_credentials(wrong, opaque_id=opaque_id, now=now, session_ends_at=now + 3000)


class TurnSession:
    """A raw TURN client over UDP with the long-term credential mechanism (aioice's STUN codec)."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.server = (host, port)
        self.username, self.password = username, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.realm: str | None = None
        self.nonce: bytes | None = None

    def close(self) -> None:
        self.sock.close()

    def signed(self, method: stun.Method, **attributes: Any) -> stun.Message:
        assert self.realm is not None and self.nonce is not None
        request = stun.Message(method, stun.Class.REQUEST)
        request.attributes.update(attributes)
        request.attributes.update(USERNAME=self.username, REALM=self.realm, NONCE=self.nonce)
        request.add_message_integrity(make_integrity_key(self.username, self.realm, self.password))
        return stun_transact(self.sock, self.server, request)

    def allocate(self) -> stun.Message:
        first = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
        first.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
        first.add_fingerprint()
        challenge = stun_transact(self.sock, self.server, first)
        assert challenge.message_class == stun.Class.ERROR
        assert challenge.attributes["ERROR-CODE"][0] == 401
        self.realm, self.nonce = challenge.attributes["REALM"], challenge.attributes["NONCE"]
        return self.signed(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": UDP_TRANSPORT})

    def permit(self, peer: str) -> stun.Message:
        """CreatePermission only installs a permission on the server: nothing is sent to ``peer``."""
        return self.signed(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": (peer, 9)})

    def release(self) -> None:
        self.signed(stun.Method.REFRESH, LIFETIME=0)


def stun_allocate(host: str, port: int, username: str, password: str) -> stun.Message:
    """One Allocate: the 401 challenge, then the signed request; the allocation is released again."""
    session = TurnSession(host, port, username, password)
    try:
        response = session.allocate()
        if response.message_class == stun.Class.RESPONSE:
            session.release()
        return response
    finally:
        session.close()


def test_coturn_allocates_a_relay_for_a_freshly_issued_credential(coturn: Any) -> None:
    creds = _valid(coturn, "u_valid")
    assert verify_credentials(coturn.secret, username=creds["username"], credential=creds["credential"],
                              now=time.time())
    response = stun_allocate(coturn.host, coturn.port, creds["username"], creds["credential"])
    assert response.message_class == stun.Class.RESPONSE, response.attributes.get("ERROR-CODE")
    relayed_host, relayed_port = response.attributes["XOR-RELAYED-ADDRESS"]
    assert relayed_host == "127.0.0.1"
    assert coturn.min_port <= relayed_port <= coturn.max_port


@pytest.mark.parametrize("make", [_expired, _forged], ids=["expired", "forged"])
def test_coturn_answers_401_to_an_expired_or_forged_credential(coturn: Any, make: Any) -> None:
    creds = make(coturn, "u_refused")
    assert not verify_credentials(coturn.secret, username=creds["username"], credential=creds["credential"],
                                  now=time.time())
    response = stun_allocate(coturn.host, coturn.port, creds["username"], creds["credential"])
    assert response.message_class == stun.Class.ERROR
    assert response.attributes["ERROR-CODE"][0] == 401


def _candidate_types(sdp: str) -> list[str]:
    return [line.split(" typ ")[1].split()[0] for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def _close(*pcs: RTCPeerConnection) -> None:
    for pc in pcs:
        await pc.close()


async def test_two_aiortc_peers_connect_relay_to_relay_through_coturn(coturn: Any) -> None:
    config_a = aiortc_configuration([ice_server_entry(_valid(coturn, "u_alice"))], relay_only=True)
    config_b = aiortc_configuration([ice_server_entry(_valid(coturn, "u_bob"))], relay_only=True)
    a, b = RTCPeerConnection(config_a), RTCPeerConnection(config_b)
    try:
        channel = a.createDataChannel("probe")
        opened, received = asyncio.Event(), asyncio.get_running_loop().create_future()
        channel.on("open", opened.set)

        @b.on("datachannel")
        def on_datachannel(remote: Any) -> None:
            @remote.on("message")
            def on_message(message: Any) -> None:
                if not received.done():
                    received.set_result(message)

        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)

        for description in (a.localDescription, b.localDescription):
            types = _candidate_types(description.sdp)
            assert types and set(types) == {"relay"}, types

        await asyncio.wait_for(opened.wait(), timeout=20)
        channel.send("through the relay")
        assert await asyncio.wait_for(received, timeout=10) == "through the relay"

        for pc in (a, b):
            connection = pc.sctp.transport.transport._connection
            pairs = list(connection._nominated.values())
            assert pairs, "no nominated candidate pair"
            for pair in pairs:
                assert pair.local_candidate.type == "relay"
                assert pair.remote_candidate.type == "relay"
                assert pair.remote_candidate.host == "127.0.0.1"
                assert coturn.min_port <= pair.remote_candidate.port <= coturn.max_port
    finally:
        await _close(a, b)


@pytest.mark.parametrize("make", [_expired, _forged], ids=["expired", "forged"])
async def test_aiortc_gathers_no_relay_candidate_with_a_refused_credential(coturn: Any, make: Any) -> None:
    pc = RTCPeerConnection(aiortc_configuration([ice_server_entry(make(coturn, "u_mallory"))], relay_only=True))
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        assert _candidate_types(pc.localDescription.sdp) == []
    finally:
        await pc.close()


DENIED_PEERS = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]


def test_the_test_coturn_permits_a_loopback_peer(coturn: Any) -> None:
    # Control for the next test: the test server has allow-loopback-peers, so 127.0.0.1 is accepted there.
    creds = _valid(coturn, "u_control")
    session = TurnSession(coturn.host, coturn.port, creds["username"], creds["credential"])
    try:
        assert session.allocate().message_class == stun.Class.RESPONSE
        assert session.permit("127.0.0.1").message_class == stun.Class.RESPONSE
        session.release()
    finally:
        session.close()


def test_the_shipped_production_config_authenticates_and_refuses_internal_peers(production_coturn: Any) -> None:
    # coturn writes its start-up lines to a file it buffers: on a busy machine they can land after it listens
    deadline = time.monotonic() + 10
    while "Black listing: 169.254." not in (log := production_coturn.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Black listing: 10.0.0.0-10.255.255.255" in log
    assert "Black listing: 169.254.0.0-169.254.255.255" in log
    now = time.time()
    cfg = TurnConfig(urls=production_coturn.urls, secret=production_coturn.secret)

    forged = issue_credentials(TurnConfig(urls=production_coturn.urls, secret="wrong"), opaque_id="u_x",
                               now=now, session_ends_at=now + 600)
    refused = stun_allocate(production_coturn.host, production_coturn.port, forged["username"], forged["credential"])
    assert refused.attributes["ERROR-CODE"][0] == 401

    creds = issue_credentials(cfg, opaque_id="u_prod", now=now, session_ends_at=now + 600)
    session = TurnSession(production_coturn.host, production_coturn.port, creds["username"], creds["credential"])
    try:
        assert session.allocate().message_class == stun.Class.RESPONSE
        for peer in DENIED_PEERS:
            response = session.permit(peer)
            assert response.message_class == stun.Class.ERROR, peer
            assert response.attributes["ERROR-CODE"][0] == 403, peer
        session.release()
    finally:
        session.close()
