"""A lossy, rate-limited UDP relay for loopback tests: a bad network between a client and a TURN server.

``LossyRelay(upstream)`` listens on a UDP port of 127.0.0.1 and forwards every datagram to ``upstream`` (say
coturn's UDP port) from one socket per client address, and the answers back. Give clients
``turn:127.0.0.1:<relay port>?transport=udp`` instead of the TURN server's own URL and force them to relay-only:
then all their media crosses this relay, both ways, and :meth:`impair` makes that path as bad as wanted:

* ``loss``: the fraction of datagrams dropped at random (both directions);
* ``rate_bps``: a token-bucket policer per direction (bits per second; datagrams over the budget are dropped,
  as a congested link's queue would), ``None`` for no limit.

``impair()`` without arguments heals the link. Loopback only: it refuses a non-loopback upstream. Nothing is
logged; the counters (``forwarded``, ``dropped``) are the only record.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["LossyRelay"]


@dataclass
class _Bucket:
    rate_bps: float | None = None
    tokens: float = 0.0
    at: float = 0.0

    def allow(self, size: int, now: float) -> bool:
        if self.rate_bps is None:
            return True
        burst = self.rate_bps / 8 * 0.2  # 200 ms worth of bytes
        self.tokens = min(burst, self.tokens + (now - self.at) * self.rate_bps / 8)
        self.at = now
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


class _Upstream(asyncio.DatagramProtocol):
    """One client's socket towards the upstream server."""

    def __init__(self, relay: LossyRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.relay._pass(data, self.relay._down) and self.relay._listener is not None:
            self.relay._listener.sendto(data, self.client)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._from_client(data, addr)


class LossyRelay:
    def __init__(self, upstream: tuple[str, int], *, seed: int = 1) -> None:
        if not ipaddress.ip_address(upstream[0]).is_loopback:
            raise ValueError("the lossy relay forwards to loopback only")
        self.upstream = upstream
        self.port = 0
        self.loss = 0.0
        self.forwarded = 0
        self.dropped = 0
        self._random = random.Random(seed)
        self._up = _Bucket()
        self._down = _Bucket()
        self._listener: asyncio.DatagramTransport | None = None
        self._clients: dict[tuple[str, int], _Upstream] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    async def start(self) -> LossyRelay:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Listener(self), local_addr=("127.0.0.1", 0))
        self._listener = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    def impair(self, *, loss: float = 0.0, rate_bps: float | None = None) -> None:
        """Drop ``loss`` of the datagrams and police each direction to ``rate_bps`` (None: no limit)."""
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss is a fraction in [0, 1)")
        now = time.monotonic()
        self.loss = loss
        self._up = _Bucket(rate_bps, 0.0, now)
        self._down = _Bucket(rate_bps, 0.0, now)

    def _pass(self, data: bytes, bucket: _Bucket) -> bool:
        if (self.loss and self._random.random() < self.loss) or not bucket.allow(len(data), time.monotonic()):
            self.dropped += 1
            return False
        self.forwarded += 1
        return True

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._pass(data, self._up):
            return
        upstream = self._clients.get(addr)
        if upstream is not None and upstream.transport is not None:
            upstream.transport.sendto(data)
            return
        if addr in self._pending:
            self._pending[addr].append(data)
            return
        self._pending[addr] = [data]
        task = asyncio.ensure_future(self._open(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(lambda: _Upstream(self, addr),
                                                                  remote_addr=self.upstream)
        self._clients[addr] = protocol
        for data in self._pending.pop(addr, []):
            transport.sendto(data)

    async def stop(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        for upstream in self._clients.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self._clients.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
