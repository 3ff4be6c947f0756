"""A STUN transaction over UDP for the TURN tests (aioice's codec): the request retransmitted as a client must."""

from __future__ import annotations

import socket
import time

from aioice import stun

RTO, RETRANSMISSIONS = 0.5, 3
"""As RFC 8489 §6.2.1 retransmits (after RTO, each next wait twice as long), within a test's budget: 7.5 s in all
(the RFC's client gives up after 39.5 s)."""


def stun_transact(sock: socket.socket, server: tuple[str, int], request: stun.Message, *,
                  rto: float = RTO, retransmissions: int = RETRANSMISSIONS) -> stun.Message:
    """Send ``request`` and return its response, retransmitting over UDP as a STUN client must."""
    wait = rto
    for _ in range(retransmissions + 1):
        sock.sendto(bytes(request), server)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                break
            response = stun.parse_message(data)
            if response.transaction_id == request.transaction_id:
                return response
        wait *= 2
    raise TimeoutError(f"no answer to {request.message_method.name} after {retransmissions} retransmissions")
