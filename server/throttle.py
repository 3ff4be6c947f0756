"""Throttling at the edge: token buckets per key (an address, a link, a room), bounded in memory.

Keys live only in memory and are never logged or exported; ``/metrics`` counts refusals by kind only.
Times are the event loop's monotonic clock, passed in as ``now``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Final

from aiohttp import web

MAX_KEYS: Final = 10_000
"""Buckets kept per limit; the least recently used go first (a flood of new keys cannot grow memory)."""


@dataclass(frozen=True)
class Rate:
    per_minute: float
    burst: float

    @classmethod
    def parse(cls, text: str, name: str) -> Rate:
        """``"30"`` (per minute, burst as large) or ``"30/10"`` (per minute / burst)."""
        rate, _, burst = text.partition("/")
        try:
            value = cls(float(rate), float(burst or rate))
        except ValueError:
            raise ValueError(f"{name}: expected <per minute>[/<burst>], got {text!r}") from None
        if value.per_minute <= 0 or value.burst < 1:
            raise ValueError(f"{name}: the rate is positive and the burst at least 1")
        return value


@dataclass(frozen=True)
class Limits:
    """Configurable through ``ALCOVE_LIMIT_*`` (docs/operations.md)."""

    admin_failures: Rate = Rate(10, 10)  # failed admin authentications per address
    tickets: Rate = Rate(30, 10)  # tickets (websocket connections) per link
    invites: Rate = Rate(10, 5)  # invitation batches per room
    rooms: Rate = Rate(120, 60)  # rooms created per address
    connections: Rate = Rate(600, 120)  # websocket upgrades per address
    echo: Rate = Rate(6, 6)  # pre-join test requests per link (two per test: ICE servers, offer)
    pending_per_address: int = 16  # websockets per address that have not said hello yet

    @classmethod
    def unlimited(cls) -> Limits:
        """No throttling: for a load test's own server on loopback (``alcove bench``), never for a deployment."""
        off = Rate(1e12, 1e12)
        return cls(off, off, off, off, off, off, 1_000_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        values: dict[str, object] = {}
        for f in fields(cls):
            name = LIMIT_ENV[f.name]
            if name not in env:
                continue
            if f.name == "pending_per_address":
                values[f.name] = max(1, int(env[name]))
            else:
                values[f.name] = Rate.parse(env[name], name)
        return cls(**values)  # type: ignore[arg-type]


LIMIT_ENV: Final = {
    "admin_failures": "ALCOVE_LIMIT_ADMIN_FAILURES",
    "tickets": "ALCOVE_LIMIT_TICKETS",
    "invites": "ALCOVE_LIMIT_INVITES",
    "rooms": "ALCOVE_LIMIT_ROOMS",
    "connections": "ALCOVE_LIMIT_CONNECTIONS",
    "echo": "ALCOVE_LIMIT_ECHO",
    "pending_per_address": "ALCOVE_LIMIT_PENDING_PER_ADDRESS",
}


class Throttle:
    """One limit: a token bucket per key."""

    def __init__(self, rate: Rate, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.rate.burst, now))
        return min(self.rate.burst, tokens + (now - at) * self.rate.per_minute / 60.0)

    def retry_after(self, key: str, now: float) -> int:
        """0 when ``key`` may act now, else whole seconds until it may."""
        tokens = self._level(key, now)
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) * 60.0 / self.rate.per_minute))

    def take(self, key: str, now: float) -> int:
        """Spend one token: 0 when allowed, else the seconds to wait (nothing is spent)."""
        tokens = self._level(key, now)
        if tokens < 1:
            return max(1, math.ceil((1 - tokens) * 60.0 / self.rate.per_minute))
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0

    def __len__(self) -> int:
        return len(self._buckets)


class Throttles:
    """Every limit of the server, one place."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.admin_failures = Throttle(limits.admin_failures)
        self.tickets = Throttle(limits.tickets)
        self.invites = Throttle(limits.invites)
        self.rooms = Throttle(limits.rooms)
        self.connections = Throttle(limits.connections)
        self.echo = Throttle(limits.echo)
        self.pending: dict[str, int] = {}  # address -> websockets that have not said hello yet

    def hold_pending(self, address: str) -> bool:
        if self.pending.get(address, 0) >= self.limits.pending_per_address:
            return False
        self.pending[address] = self.pending.get(address, 0) + 1
        return True

    def release_pending(self, address: str) -> None:
        left = self.pending.get(address, 0) - 1
        if left > 0:
            self.pending[address] = left
        else:
            self.pending.pop(address, None)


def client_address(request: web.Request, trust_proxy: bool) -> str:
    """The peer's address, for throttling only (never logged). Behind a trusted proxy: its X-Forwarded-For."""
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1]
    return request.remote or "-"


def too_many(code: str, message: str, retry_after: int) -> web.Response:
    """429 with ``Retry-After``, in the API's error shape."""
    return web.json_response({"error": {"code": code, "message": message}}, status=429,
                             headers={"Retry-After": str(retry_after)})


def spend(kind: str, throttle: Throttle, key: str, count: Callable[[str], None]) -> web.Response | None:
    """Spend one token of ``key``: ``None`` when allowed, else the 429 to answer (``count(kind)`` counts it)."""
    wait = throttle.take(key, time.monotonic())
    if not wait:
        return None
    count(kind)
    return too_many("rate-limited", "too many requests; try again later", wait)
