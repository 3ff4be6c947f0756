"""A throw-away coturn on 127.0.0.1 (Debian's `turnserver`), REST-API credentials (use-auth-secret).

Run inside the loopback-only namespace: unshare -n sh -c 'ip link set lo up && .venv/bin/pytest tests/turn'.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aioice import stun

from .stun_client import stun_transact

HOST = "127.0.0.1"
REALM = "alcove.test"


@dataclass(frozen=True)
class Coturn:
    host: str
    port: int
    secret: str = field(repr=False)
    realm: str
    min_port: int
    max_port: int
    log_path: Path

    @property
    def urls(self) -> tuple[str, ...]:
        return (f"turn:{self.host}:{self.port}?transport=udp", f"turn:{self.host}:{self.port}?transport=tcp")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """True once turnserver accepts TCP on ``port`` and answers a STUN Binding request over UDP there.

    coturn opens its TCP and UDP listeners in separate threads: a TCP connection alone does not say the UDP
    socket is bound yet, and a datagram sent before it is dropped without a word (a test's first Allocate then
    waited for nothing on a busy machine).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, 0))
        try:  # 0.2 s, then doubling: about 6 s in all
            stun_transact(udp, (host, port), stun.Message(stun.Method.BINDING, stun.Class.REQUEST),
                          rto=0.2, retransmissions=4)
        except TimeoutError:
            return False
    return True


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    binary = turnserver_binary()
    port = free_port()
    min_port, max_port = relay_port_range()
    secret = secrets.token_urlsafe(32)
    log_path = tmp_path / "turnserver.log"
    args = [
        binary, "-n",
        f"--listening-ip={HOST}", f"--relay-ip={HOST}", f"--listening-port={port}",
        "--use-auth-secret", f"--static-auth-secret={secret}", f"--realm={REALM}",
        "--allow-loopback-peers",  # tests only: every peer is 127.0.0.1 here; never in production
        "--no-tls", "--no-dtls", "--no-cli", "--fingerprint",
        f"--min-port={min_port}", f"--max-port={max_port}",
        "--log-file=stdout", "--simple-log",
        f"--pidfile={tmp_path / 'turnserver.pid'}",
        f"--userdb={tmp_path / 'turndb.sqlite'}",
    ]
    server = Coturn(HOST, port, secret, REALM, min_port, max_port, log_path)
    with run_turnserver(args, server):
        yield server


@contextmanager
def run_turnserver(args: list[str], server: Coturn) -> Iterator[None]:
    """Start turnserver with ``args`` (logging to ``server.log_path``), wait for it to listen, stop it after."""
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        if not _wait_listening(server.host, server.port, proc):
            pytest.fail(f"coturn did not start listening on {server.host}:{server.port}:\n{server.log()[-4000:]}")
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def turnserver_binary() -> str:
    binary = shutil.which("turnserver")
    if binary is None:
        message = "coturn's turnserver is not installed (apt-get install coturn)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def relay_port_range() -> tuple[int, int]:
    base = 49152 + secrets.randbelow(200) * 64
    return base, base + 63


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_coturn(tmp_path: Path) -> Iterator[Coturn]:
    """coturn with the shipped deploy/coturn/turnserver.conf, moved to 127.0.0.1 and free ports.

    Only what cannot work in a loopback-only namespace is overridden on the command line: the listener and relay
    address, the ports, the certificate paths (a dev certificate), the pid file and the database. The secret is
    appended the way docker-compose.yml does it. `allow-loopback-peers` is NOT added.
    """
    from server.certs import make_dev_certificate

    binary = turnserver_binary()
    port, tls_port = free_port(), free_port()
    min_port, max_port = relay_port_range()
    secret = secrets.token_urlsafe(32)
    cert, key = tmp_path / "turn-cert.pem", tmp_path / "turn-key.pem"
    make_dev_certificate(cert, key)
    conf = (REPO / "deploy" / "coturn" / "turnserver.conf").read_text()
    conf = conf.replace("/etc/alcove/certs/turn-cert.pem", str(cert)).replace("/etc/alcove/certs/turn-key.pem", str(key))
    conf_path = tmp_path / "turnserver.conf"
    conf_path.write_text(conf + f"\nstatic-auth-secret={secret}\n")
    args = [
        binary, "-c", str(conf_path),
        f"--listening-ip={HOST}", f"--relay-ip={HOST}",
        f"--listening-port={port}", f"--tls-listening-port={tls_port}",
        f"--min-port={min_port}", f"--max-port={max_port}",
        f"--pidfile={tmp_path / 'turnserver.pid'}", f"--userdb={tmp_path / 'turndb.sqlite'}",
    ]
    server = Coturn(HOST, port, secret, "turn.example.org", min_port, max_port, tmp_path / "turnserver.log")
    with run_turnserver(args, server):
        yield server
