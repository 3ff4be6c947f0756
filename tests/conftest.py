"""Shared fixtures: a real Alcove server on loopback with a clock the tests move (tests never sleep for it)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from peer.participant import Participant
from server.app import create_app
from server.config import Config, Secret
from server.state import HUB


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(condition: bool, what: str) -> None:
    """A missing component fails the run in CI; on a developer's machine it skips."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"missing in CI: {what}")
    pytest.skip(f"missing: {what}")


def require_chromium() -> None:
    """Debian's Chromium and the Playwright driver (never a downloaded browser): fail in CI, skip elsewhere."""
    from tools.chromium import CHROMIUM

    require(CHROMIUM.exists(), f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:  # pragma: no cover
        require(False, "playwright (pip install playwright)")


def loopback_only() -> bool:
    import ifaddr

    return {a.nice_name for a in ifaddr.get_adapters()} == {"lo"}


def require_loopback_namespace() -> None:
    """Media moves only inside a network namespace with nothing but `lo` (`make test` arranges it)."""
    require(loopback_only(), "a loopback-only network namespace (run under `unshare -n`, as `make test` does)")
    from rtc.aiortc_hooks import allow_loopback_candidates

    allow_loopback_candidates()


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AlcoveServer:
    def __init__(self, data_dir: Path, clock: FakeClock, config: Config | None = None) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.admin_key = secrets.token_urlsafe(24)
        self.config = (config or Config()).with_(
            host="127.0.0.1", port=0, tls=False, admin_key=Secret(self.admin_key), data_dir=data_dir)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub(self) -> Any:
        assert self.runner is not None
        return self.runner.app[HUB]

    async def start(self) -> None:
        app = create_app(self.config, clock=self.clock)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self) -> None:
        """Stop and start again on the same port and data directory: all in-memory state is gone."""
        await self.stop()
        await self.start()

    async def create_room(self, type: str = "individual", start: str = "now", duration_minutes: float | None = None,
                          clients: int | None = None, host: str | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type, "start": start, **extra}
        if duration_minutes is not None:
            body["duration_minutes"] = duration_minutes
        if clients is not None:
            body["clients"] = clients
        if host is not None:
            body["host"] = host
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.url}/api/rooms", json=body, headers={"Authorization": f"Bearer {self.admin_key}"}) as r:
            data: dict[str, Any] = await r.json()
            assert r.status == 201, data
            return data

    async def delete_room(self, room_id: str) -> None:
        async with aiohttp.ClientSession() as http, http.delete(
                f"{self.url}/api/rooms/{room_id}", headers={"Authorization": f"Bearer {self.admin_key}"}) as r:
            assert r.status == 200

    async def advance(self, seconds: float) -> None:
        """Move the server's clock and run its tick once."""
        self.clock.advance(seconds)
        self.hub.tick()


@contextlib.asynccontextmanager
async def serving(data_dir: Path, config: Config | None = None) -> AsyncIterator[AlcoveServer]:
    server = AlcoveServer(data_dir, FakeClock(), config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def alcove(tmp_path: Path) -> AsyncIterator[AlcoveServer]:
    async with serving(tmp_path / "data") as server:
        yield server


@pytest.fixture
async def sfu_alcove(tmp_path: Path) -> AsyncIterator[AlcoveServer]:
    """The server with its SFU on loopback (one worker process), for family and group rooms."""
    async with serving(tmp_path / "data", Config(media_loopback=True, media_workers=1)) as server:
        yield server


async def sfu_decoded_frames(server: AlcoveServer) -> float:
    """The SFU's own counter on /metrics (frames its workers decoded: must stay 0, it only forwards)."""
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    found = re.search(r"^alcove_sfu_decoded_frames(?:\{[^}]*\})?\s+(\S+)$", text, re.M)
    assert found, "alcove_sfu_decoded_frames is not exported"
    return float(found.group(1))


@pytest.fixture
def media_namespace() -> None:
    """Media tests run only in a loopback-only network namespace (``unshare -n``)."""
    require_loopback_namespace()


JoinFn = Callable[..., Awaitable[Participant]]


@pytest.fixture
async def join(alcove: Any) -> AsyncIterator[JoinFn]:
    """``await join(link, name=...)``: a Participant on the fixture server, closed at the end of the test."""
    joined: list[Participant] = []

    async def _join(link: str, **kwargs: Any) -> Participant:
        p = await Participant.join(alcove.url, link, **kwargs)
        joined.append(p)
        return p

    yield _join
    for p in joined:
        await p.close()


# Tests whose figures depend on having the machine to themselves (a rate, a throughput, a CPU ratio, packet sizes
# under load, six media participants, instances starting on a deadline): `make test`
# runs them alone, after the suites that run side by side (Makefile, SUITE).
SERIAL_FILES = frozenset({"test_churn.py", "test_bench_cluster.py", "test_participant_bench.py", "test_fuzz.py",
                          "test_bench_blur.py", "test_browser_interop.py", "test_group_mixed.py",
                          "test_cluster_browser.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).name in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)
