"""Prometheus metrics for ``GET /metrics``.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never the process-global one), so tests can build many
apps in one process. Labels come from small fixed sets (room state, role, end reason) or, for errors, from the
protocol's stable kebab-case codes: no label ever carries a name, token, room link, room id or IP address.

No side effects on import.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

ROOM_STATES: tuple[str, ...] = ("scheduled", "open", "in-session", "ended")
"""scheduled: link not open yet · open: link open, nobody admitted · in-session: somebody admitted · ended."""
ROLES: tuple[str, ...] = ("therapist", "client")
END_REASONS: tuple[str, ...] = ("time", "therapist", "admin")
THROTTLE_KINDS: tuple[str, ...] = ("admin-auth", "ticket", "invite", "room", "connection", "pending", "echo",
                                   "echo-busy")
"""What a 429 refused: failed admin authentications, tickets per link, invitations per room, rooms, websocket
upgrades per address, websockets waiting for hello per address, pre-join tests per link (and, 503, pre-join
tests refused because too many run at once). Never the key (address, link) itself."""
ERROR_CODE_RE = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
MAX_ERROR_CODES = 64
"""A hard cap on distinct error-code label values (the protocol has about 25)."""

RELAY_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

_PREFIX = "alcove"


class RelayLatency(Collector):
    """The relay latency histogram, observed once per delivered message: a bucket index and two additions, no
    lock (the event loop is the only writer); the cumulative buckets are made when ``/metrics`` is scraped."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.bounds = name, documentation, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        if seconds < 0.0:
            seconds = 0.0
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}")
    return value


class Metrics:
    """The server's metrics, with a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rooms = Gauge(f"{_PREFIX}_rooms", "Rooms by state.", ["state"], registry=r)
        self.participants = Gauge(
            f"{_PREFIX}_participants", "Connected admitted participants by role.", ["role"], registry=r
        )
        self.waiting_clients = Gauge(f"{_PREFIX}_waiting_clients", "Clients in waiting rooms.", registry=r)
        self.admissions = Counter(f"{_PREFIX}_admissions", "Clients admitted.", registry=r)
        self.declines = Counter(f"{_PREFIX}_declines", "Clients declined.", registry=r)
        self.sessions_ended = Counter(
            f"{_PREFIX}_sessions_ended", "Sessions ended, by reason.", ["reason"], registry=r
        )
        self.errors = Counter(
            f"{_PREFIX}_errors", "Protocol errors sent, by stable error code.", ["code"], registry=r
        )
        self.turn_credentials_issued = Counter(
            f"{_PREFIX}_turn_credentials_issued", "Ephemeral TURN credentials issued.", registry=r
        )
        self.app_messages = Counter(
            f"{_PREFIX}_app_messages",
            "End-to-end encrypted app messages (chat, …) delivered to recipients: a count, never their content.",
            registry=r,
        )
        self.ws_connections = Counter(f"{_PREFIX}_ws_connections", "Websocket connections accepted.", registry=r)
        self.relay_latency = RelayLatency(
            f"{_PREFIX}_relay_latency_seconds",
            "Time from receiving a relayed signaling message to queueing it for its recipient.",
            RELAY_LATENCY_BUCKETS,
        )
        r.register(self.relay_latency)
        self.sfu_decoded_frames = Gauge(
            f"{_PREFIX}_sfu_decoded_frames",
            "Frames the SFU workers decoded (must stay 0: the SFU forwards encrypted frames it cannot read).",
            registry=r,
        )
        self.sfu_forwarded_packets = Gauge(
            f"{_PREFIX}_sfu_forwarded_packets", "Packets forwarded by the live SFU workers.", registry=r
        )
        self.sfu_worker_deaths = Gauge(f"{_PREFIX}_sfu_worker_deaths", "SFU worker processes that died.", registry=r)
        self.throttled = Counter(
            f"{_PREFIX}_throttled", "Requests refused with 429 by a throttle, by kind.", ["kind"], registry=r
        )
        for kind in THROTTLE_KINDS:
            self.throttled.labels(kind=kind)
        for state in ROOM_STATES:
            self.rooms.labels(state=state).set(0)
        for role in ROLES:
            self.participants.labels(role=role).set(0)
        for reason in END_REASONS:
            self.sessions_ended.labels(reason=reason)
        self._error_codes: set[str] = set()

    # gauges -----------------------------------------------------------------------------------------------
    def set_rooms(self, counts: Mapping[str, int]) -> None:
        """Set every room-state gauge at once; states left out are 0."""
        for state in counts:
            _check(state, ROOM_STATES, "room state")
        for state in ROOM_STATES:
            self.rooms.labels(state=state).set(counts.get(state, 0))

    def set_participants(self, role: str, count: int) -> None:
        self.participants.labels(role=_check(role, ROLES, "role")).set(count)

    def set_waiting_clients(self, count: int) -> None:
        self.waiting_clients.set(count)

    # counters ---------------------------------------------------------------------------------------------
    def admission(self, n: int = 1) -> None:
        self.admissions.inc(n)

    def decline(self) -> None:
        self.declines.inc()

    def session_ended(self, reason: str) -> None:
        self.sessions_ended.labels(reason=_check(reason, END_REASONS, "end reason")).inc()

    def error(self, code: str) -> None:
        """Count one protocol error; ``code`` must look like a stable kebab-case code."""
        if not isinstance(code, str) or ERROR_CODE_RE.fullmatch(code) is None:
            raise ValueError("error code must match ^[a-z][a-z0-9-]{1,40}$")
        if code not in self._error_codes:
            if len(self._error_codes) >= MAX_ERROR_CODES:
                raise ValueError("too many distinct error codes")
            self._error_codes.add(code)
        self.errors.labels(code=code).inc()

    def throttle(self, kind: str) -> None:
        self.throttled.labels(kind=_check(kind, THROTTLE_KINDS, "throttle kind")).inc()

    def turn_credentials(self, n: int = 1) -> None:
        self.turn_credentials_issued.inc(n)

    def app_message(self) -> None:
        self.app_messages.inc()

    def ws_connection(self) -> None:
        self.ws_connections.inc()

    def observe_relay_latency(self, seconds: float) -> None:
        self.relay_latency.observe(seconds)

    # exposition -------------------------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """(body, content type) for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
