"""Several ``alcove serve`` processes on one Redis behind nginx, all on loopback, each with its own temp config.

Debian's ``redis-server`` and ``nginx`` are started here on ephemeral ports (never the system services). The
instances are real processes (``kill -9`` is a real crash) that share the data directory's signing keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.config import Config
from server.tokens import KeyRing

from ..conftest import require

ADMIN_KEY = "cluster-test-admin-key"
LEASE = 3.0
"""``ALCOVE_REDIS_LEASE_SECONDS`` for the tests: the takeover bound scales with it (production default 6 s)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up")
            await asyncio.sleep(0.1)


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class Instance:
    def __init__(self, name: str, data_dir: Path, redis_url: str, public_url: str, lease: float) -> None:
        self.name = name
        self.log = data_dir.parent / f"instance-{name}.log"
        self.port = free_port()
        self.env = {**os.environ, "ALCOVE_REDIS_URL": redis_url, "ALCOVE_DATA_DIR": str(data_dir),
                    "ALCOVE_ADMIN_KEY": ADMIN_KEY, "ALCOVE_TRUST_PROXY": "1", "ALCOVE_PUBLIC_URL": public_url,
                    "ALCOVE_REDIS_LEASE_SECONDS": str(lease), "ALCOVE_LOG_LEVEL": "WARNING"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        alcove = str(Path(sys.executable).with_name("alcove"))
        self.proc = subprocess.Popen([alcove, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-tls"],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))

    def kill(self) -> None:
        """``kill -9``: no goodbye, no lease released."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as r:
            return dict(await r.json())


class Nginx:
    """A websocket-aware load balancer: websockets go to the instance with the fewest connections."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, upstreams: list[int]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
        w = self.workdir
        (w / "nginx.conf").write_text(f"""
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {w}/body; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fastcgi;
  uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream alcove {{
    least_conn;
{servers}
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://alcove;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout 3600s;
      proxy_next_upstream error timeout;
      proxy_connect_timeout 1s;
    }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(w), "-c", str(w / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


class ClusterHarness:
    def __init__(self, tmp: Path, n: int, lease: float = LEASE) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        KeyRing.load_or_create(self.data_dir)  # one key ring, shared by every instance
        self.redis = RedisServer(tmp / "redis")
        self.nginx = Nginx(tmp / "nginx")
        self.instances = [Instance(chr(ord("a") + i), self.data_dir, self.redis.url, self.nginx.url, lease)
                          for i in range(n)]

    @property
    def url(self) -> str:
        return self.nginx.url

    async def start(self) -> None:
        self.redis.start()
        for i in self.instances:
            i.start()
        for i in self.instances:
            await wait_http(f"{i.url}/healthz")
        self.nginx.start([i.port for i in self.instances])
        await wait_http(f"{self.url}/healthz")

    def stop(self) -> None:
        self.nginx.stop()
        for i in self.instances:
            i.stop()
        self.redis.stop()
        for pid in self.sfu_workers():  # they outlive their instance by design (docs/sfu.md 4.1)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def sfu_workers(self, instance: Instance | None = None) -> set[int]:
        """OS pids of the SFU worker processes of every instance (or of one): their sockets' directory is in
        their command line."""
        marks = [f"{self.runtime_dir(i)}/".encode() for i in ([instance] if instance else self.instances)]
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes()
                    if any(mark in cmdline for mark in marks):
                        pids.add(int(entry.name))
        return pids

    @staticmethod
    def runtime_dir(instance: Instance) -> Path | None:
        """Where an instance's SFU workers listen (a short stand-in when the data directory is deep)."""
        return Config.from_env({**instance.env, "ALCOVE_PORT": str(instance.port)}).media_runtime_dir()

    async def create_room(self, **body: Any) -> dict[str, Any]:
        body = {"type": "individual", "start": "now", **body}
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.url}/api/rooms", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
            assert r.status == 201, await r.text()
            return dict(await r.json())

    async def census(self) -> dict[str, dict[str, Any]]:
        return {i.name: (await i.health())["cluster"] for i in self.instances if i.proc and i.proc.poll() is None}


def require_cluster_tools() -> None:
    require(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server; `make deps`)")
    require(shutil.which("nginx") is not None, "nginx (Debian package nginx-light; `make deps`)")


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    require_cluster_tools()
    made: list[ClusterHarness] = []

    async def make(n: int = 2, lease: float = LEASE) -> ClusterHarness:
        harness = ClusterHarness(tmp_path / f"c{len(made)}", n, lease)
        made.append(harness)
        await harness.start()
        return harness

    yield make
    for h in made:
        h.stop()


@pytest.fixture
async def cluster2(cluster_factory: Any) -> AsyncIterator[ClusterHarness]:
    yield await cluster_factory(2)
