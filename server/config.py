"""Configuration from ALCOVE_* environment variables, in one object. Secrets print masked."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from server.sfu.addressing import MediaAddressing, parse_announced_address, parse_ports, serves_loopback_only
from signaling.messages import SessionType, Topology
from signaling.policy import DEFAULT_KINDS, SessionKind, Timing
from signaling.safety import DEFAULT_NUMBERS, EmergencyNumber, parse_numbers

from .throttle import Limits

MAX_SOCKET_PATH = 100
"""The longest path we give a unix socket (``sun_path`` holds 108 bytes with its terminating zero)."""
SOCKET_ROOM = len("/w15-0123abcd.sock")
"""What a worker's socket name adds to its runtime directory (server.sfu.runtime.SOCKET_NAME)."""


class Secret(str):
    """A string that never shows itself in repr, str formatting of containers, or logs."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _lease(value: str) -> float:
    lease = float(value)
    if not 1.0 <= lease <= 10.0:
        raise ValueError("ALCOVE_REDIS_LEASE_SECONDS: between 1 and 10 seconds")
    return lease


def _adopt(value: str) -> float:
    seconds = float(value)
    if not 1 <= seconds <= 600:
        raise ValueError("ALCOVE_MEDIA_ADOPT_SECONDS must be between 1 and 600")
    return seconds


def parse_topologies(value: str) -> dict[SessionType, SessionKind]:
    """``ALCOVE_TOPOLOGY``: e.g. ``family=mesh,group=sfu`` overrides the default topology per session type."""
    kinds = dict(DEFAULT_KINDS)
    for item in filter(None, (x.strip() for x in value.split(","))):
        name, _, topology = item.partition("=")
        if name not in kinds or topology not in ("mesh", "sfu"):
            raise ValueError(f"ALCOVE_TOPOLOGY: expected <type>=mesh|sfu, got {item!r}")
        kinds[name] = replace(kinds[name], topology=cast("Topology", topology))
    return kinds


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8443
    public_url: str | None = None
    admin_key: Secret = field(default_factory=lambda: Secret(""))
    data_dir: Path | None = None
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trust_proxy: bool = False
    turn_urls: tuple[str, ...] = ()
    turn_secret: Secret = field(default_factory=lambda: Secret(""))
    timing: Timing = field(default_factory=Timing)
    kinds: dict[SessionType, SessionKind] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    log_level: str = "INFO"
    allowed_origins: tuple[str, ...] = ()
    media_workers: int = 0  # 0: one per core
    media_loopback: bool = False  # SFU gathers 127.0.0.1 too, even when served beyond loopback (tests, benchmarks)
    media_announced_address: str | None = None  # advertised in the SFU's host candidates (1:1 NAT)
    media_ports: tuple[int, int] | None = None  # UDP port range of the SFU's sockets
    limits: Limits = field(default_factory=Limits)  # ALCOVE_LIMIT_*: throttling (server/throttle.py)
    redis_url: Secret = field(default_factory=lambda: Secret(""))  # several instances share rooms (server/cluster)
    redis_lease: float = 6.0  # seconds a room's owner lease lasts unrenewed (takeover bound after an owner dies)
    runtime_dir: Path | None = None  # the SFU workers' control sockets (ALCOVE_RUNTIME_DIR; see media_runtime_dir)
    media_adopt_seconds: float = 30.0  # SFU workers outlive a restart this long, waiting to be adopted
    media_host: Path | None = None  # ALCOVE_MEDIA_HOST: `alcove media-host`'s socket, which starts the SFU workers
    emergency_numbers: tuple[EmergencyNumber, ...] = DEFAULT_NUMBERS  # shown on the clients' safety form

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        timing = Timing(
            early_join=float(env.get("ALCOVE_EARLY_JOIN_MINUTES", "15")) * 60,
            grace=float(env.get("ALCOVE_GRACE_SECONDS", "120")),
            overrun_cap=float(env.get("ALCOVE_OVERRUN_CAP_MINUTES", "15")) * 60,
            warnings_minutes=tuple(int(x) for x in env.get("ALCOVE_WARNINGS_MINUTES", "10,5,1").split(",") if x),
        )
        announced, ports = env.get("ALCOVE_MEDIA_ANNOUNCED_ADDRESS", ""), env.get("ALCOVE_MEDIA_PORTS", "")
        data_dir = env.get("ALCOVE_DATA_DIR")
        cert, key = env.get("ALCOVE_TLS_CERT"), env.get("ALCOVE_TLS_KEY")
        return cls(
            host=env.get("ALCOVE_HOST", "127.0.0.1"),
            port=int(env.get("ALCOVE_PORT", "8443")),
            public_url=(env.get("ALCOVE_PUBLIC_URL") or None),
            admin_key=Secret(env.get("ALCOVE_ADMIN_KEY", "")),
            data_dir=Path(data_dir) if data_dir else None,
            tls=not _bool(env.get("ALCOVE_NO_TLS")),
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            trust_proxy=_bool(env.get("ALCOVE_TRUST_PROXY")),
            turn_urls=tuple(u for u in env.get("ALCOVE_TURN_URLS", "").replace(",", " ").split() if u),
            turn_secret=Secret(env.get("ALCOVE_TURN_SECRET", "")),
            timing=timing,
            log_level=env.get("ALCOVE_LOG_LEVEL", "INFO").upper(),
            allowed_origins=tuple(o.strip() for o in env.get("ALCOVE_ALLOWED_ORIGINS", "").split(",") if o.strip()),
            kinds=parse_topologies(env.get("ALCOVE_TOPOLOGY", "")),
            media_workers=int(env.get("ALCOVE_MEDIA_WORKERS", "0")),
            media_loopback=_bool(env.get("ALCOVE_MEDIA_LOOPBACK")),
            media_announced_address=parse_announced_address(announced) if announced.strip() else None,
            media_ports=parse_ports(ports) if ports.strip() else None,
            limits=Limits.from_env(env),
            redis_url=Secret(env.get("ALCOVE_REDIS_URL", "")),
            redis_lease=_lease(env.get("ALCOVE_REDIS_LEASE_SECONDS", "6")),
            runtime_dir=Path(env["ALCOVE_RUNTIME_DIR"]) if env.get("ALCOVE_RUNTIME_DIR") else None,
            media_adopt_seconds=_adopt(env.get("ALCOVE_MEDIA_ADOPT_SECONDS", "30")),
            media_host=Path(env["ALCOVE_MEDIA_HOST"]) if env.get("ALCOVE_MEDIA_HOST") else None,
            emergency_numbers=parse_numbers(env.get("ALCOVE_EMERGENCY_NUMBERS", "")),
        )

    def media_runtime_dir(self) -> Path | None:
        """Where the SFU workers listen for the signaling process (one directory per instance, by port, so that
        several instances may share a data directory); None without a data directory (nothing survives a
        restart then: the signing keys do not either)."""
        base = self.runtime_dir or (self.data_dir / "run" if self.data_dir else None)
        if base is None:
            return None
        wanted = base / f"sfu-{self.port}"
        if len(os.fsencode(wanted)) + SOCKET_ROOM <= MAX_SOCKET_PATH:
            return wanted
        # A unix socket's path holds at most 108 bytes: a deep data directory gets a short stand-in, the same for
        # the same directory and port (the next signaling process finds its workers there); the manager refuses
        # it unless it is ours (0700, our uid).
        digest = hashlib.sha256(os.fsencode(wanted.absolute())).hexdigest()[:16]
        for tmp in (Path(tempfile.gettempdir()), Path("/tmp")):
            short = tmp / f"alcove-sfu-{os.getuid()}-{digest}"
            if len(os.fsencode(short)) + SOCKET_ROOM <= MAX_SOCKET_PATH:
                return short
        return wanted  # the manager says the path is too long

    def media_addressing(self) -> MediaAddressing:
        """What the SFU binds and advertises; loopback candidates come by themselves on a loopback-only server."""
        return MediaAddressing(
            loopback=self.media_loopback or serves_loopback_only(self.host, self.public_url),
            announced=self.media_announced_address,
            ports=self.media_ports,
        )

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    def base_url(self, bound_port: int | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{bound_port or self.port}"
