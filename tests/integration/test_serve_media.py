"""`alcove serve` with its defaults, as a laptop demo runs it: group sessions get media over loopback by
themselves; and a server whose SFU no client could reach says so (start, /healthz, probe) instead of timing out.

Both run the installed console script and `alcove probe` as operators do.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_loopback_namespace

pytestmark = [pytest.mark.integration, pytest.mark.sfu, pytest.mark.media]

ALCOVE = Path(sys.executable).parent / "alcove"
MESSAGE = "the media server has no reachable address"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, base: str, lines: list[str], stderr: Path, key: str) -> None:
        self.base, self.lines, self.stderr, self.key = base, lines, stderr, key

    def healthz(self) -> dict:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(f"{self.base}/healthz", context=ctx, timeout=10) as r:
            return dict(json.loads(r.read()))

    def probe(self, scenario: str, cwd: Path) -> tuple[dict, float]:
        started = time.monotonic()
        env = {**os.environ, "ALCOVE_ADMIN_KEY": self.key}
        out = subprocess.run([str(ALCOVE), "probe", "--server", self.base, "--scenario", scenario,
                              "--duration", "2s", "--json"], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=120)
        result = json.loads(out.stdout)
        assert (out.returncode == 0) == result["ok"]
        return result, time.monotonic() - started


def _serve(tmp_path: Path, *args: str) -> Iterator[Served]:
    require_loopback_namespace()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALCOVE_")}  # the defaults
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen([str(ALCOVE), "serve", *args, "--port", str(port)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while not lines or "serving" not in lines[-1]:
            assert proc.poll() is None and time.monotonic() < deadline, lines
            lines.append(proc.stdout.readline().rstrip())
        # a warning, if any, comes before the serving line
        key = (tmp_path / "var" / "admin-key").read_text().strip()
        yield Served(f"https://127.0.0.1:{port}", lines, stderr, key)
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def default_serve(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path)


@pytest.fixture
def unreachable_serve(tmp_path: Path) -> Iterator[Served]:
    # Every address, in a namespace with nothing but lo: no address a client elsewhere could reach, no TURN.
    yield from _serve(tmp_path, "--host", "0.0.0.0")


def test_probe_group_passes_against_a_default_serve_on_loopback(default_serve: Served, tmp_path: Path) -> None:
    assert default_serve.healthz()["media"] == {"reachable": True}
    assert not any(MESSAGE in line for line in default_serve.lines)
    result, _ = default_serve.probe("group", tmp_path)
    assert result["ok"] is True, result
    assert result["figures"]["server_decoded_frames"] in (0, None)


def test_an_unreachable_sfu_is_reported_at_start_in_healthz_and_by_the_probe(unreachable_serve: Served,
                                                                            tmp_path: Path) -> None:
    assert any(line.startswith("warning: " + MESSAGE) for line in unreachable_serve.lines), unreachable_serve.lines
    logged = [json.loads(x[x.index("{"):]) for x in unreachable_serve.stderr.read_text().splitlines() if "{" in x]
    assert {"event": "sfu-unreachable", "reason": "no-address"}.items() <= next(
        x for x in logged if x.get("event") == "sfu-unreachable").items()
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", unreachable_serve.stderr.read_text())  # no addresses logged
    assert unreachable_serve.healthz()["media"] == {"reachable": False, "reason": "no-address", "message": MESSAGE}
    result, seconds = unreachable_serve.probe("group", tmp_path)
    assert result["ok"] is False and MESSAGE in result["error"], result
    assert seconds < 15  # reported, not a 20 s frame timeout


@pytest.mark.parametrize(("name", "value"), [("ALCOVE_MEDIA_PORTS", "40000"),
                                             ("ALCOVE_MEDIA_ANNOUNCED_ADDRESS", "video.example.org")])
def test_a_bad_media_setting_stops_serve_with_a_clear_message(tmp_path: Path, name: str, value: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALCOVE_")}, name: value}
    out = subprocess.run([str(ALCOVE), "serve", "--port", str(_free_port())], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith(f"alcove: {name}: "), out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "var").exists()  # nothing started, nothing written
