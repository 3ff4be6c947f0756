"""The `alcove` command as operators use it: serve (TLS by default, --demo), room create --json, config."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.config import Config

pytestmark = pytest.mark.integration
ALCOVE = [sys.executable, "-m", "tools.cli"]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_serve(tmp_path: Path, *args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    env = {**os.environ, "ALCOVE_DATA_DIR": str(tmp_path / "data")}
    env.pop("ALCOVE_ADMIN_KEY", None)
    proc = await asyncio.create_subprocess_exec(
        *ALCOVE, "serve", *args, "--certs-dir", str(tmp_path / "certs"), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    assert proc.stdout is not None
    last = "Admin page" if "--demo" in args else "serving"
    async with asyncio.timeout(20):
        while not lines or last not in lines[-1]:
            line = (await proc.stdout.readline()).decode()
            if not line:
                break
            lines.append(line.rstrip())
    return proc, lines


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await asyncio.wait_for(proc.wait(), 10)


async def test_serve_demo_prints_working_links_over_tls_by_default(tmp_path: Path) -> None:
    port = free_port()
    proc, lines = await start_serve(tmp_path, "--port", str(port), "--demo")
    try:
        therapist = next(x for x in lines if "Therapist:" in x).split()[-1]
        client = next(x for x in lines if "Client:" in x).split()[-1]
        assert therapist.startswith(f"https://127.0.0.1:{port}/j/#t=")
        assert (tmp_path / "certs" / "dev-cert.pem").exists()
        key_file = tmp_path / "data" / "admin-key"
        assert key_file.stat().st_mode & 0o077 == 0
        async with aiohttp.ClientSession() as http:
            async with http.post(f"https://127.0.0.1:{port}/api/session", ssl=False,
                                 json={"token": client.split("#t=")[1]}) as r:
                assert r.status == 200 and (await r.json())["role"] == "client"
            # room create, as an operator would
            env = {**os.environ, "ALCOVE_ADMIN_KEY": key_file.read_text().strip()}
            create = await asyncio.create_subprocess_exec(
                *ALCOVE, "room", "create", "--server", f"https://127.0.0.1:{port}", "--type", "couple",
                "--duration", "90s", "--json", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(create.communicate(), 30)
            assert create.returncode == 0
            room = json.loads(out)
            assert set(room) == {"room_id", "type", "opens_at", "starts_at", "ends_at", "therapist_link",
                                 "client_links"}
            assert room["type"] == "couple" and len(room["client_links"]) == 2
    finally:
        await stop(proc)
    assert "eyJ" not in "\n".join(x for x in lines if "Therapist:" not in x and "Client:" not in x)


async def test_no_tls_is_refused_off_loopback(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *ALCOVE, "serve", "--host", "0.0.0.0", "--no-tls", cwd=ROOT,
        env={**os.environ, "ALCOVE_DATA_DIR": str(tmp_path)}, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2 and b"loopback" in err


def test_config_from_env_masks_secrets_and_uses_public_url() -> None:
    config = Config.from_env({"ALCOVE_ADMIN_KEY": "super-secret-key", "ALCOVE_TURN_SECRET": "turn-secret",
                              "ALCOVE_PUBLIC_URL": "https://alcove.example.org/", "ALCOVE_GRACE_SECONDS": "90",
                              "ALCOVE_TURN_URLS": "turn:t.example.org:3478?transport=udp, turns:t.example.org:443"})
    text = repr(config) + str(config)
    assert "super-secret-key" not in text and "turn-secret" not in text
    assert config.base_url() == "https://alcove.example.org"
    assert config.timing.grace == 90
    assert config.turn_urls == ("turn:t.example.org:3478?transport=udp", "turns:t.example.org:443")
    assert config.admin_key.reveal() == "super-secret-key"


def test_topology_per_session_type_is_configurable() -> None:
    config = Config.from_env({"ALCOVE_TOPOLOGY": "family=mesh, couple=sfu"})
    assert config.kinds["family"].topology == "mesh" and config.kinds["couple"].topology == "sfu"
    assert config.kinds["group"].topology == "sfu" and config.kinds["individual"].topology == "mesh"
    with pytest.raises(ValueError):
        Config.from_env({"ALCOVE_TOPOLOGY": "family=p2p"})


class RecordingProxy:
    """A loopback TCP proxy in front of the server: keeps every byte the CLI sends (what the server receives)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = bytearray()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            while data := await src.read(65536):
                if keep:
                    self.sent.extend(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False), return_exceptions=True)


async def _room_create(server: str, admin_key: str, *args: str, env: dict[str, str] | None = None
                       ) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *ALCOVE, "room", "create", "--server", server, "--type", "couple", "--json", *args, cwd=ROOT,
        env={**os.environ, "ALCOVE_ADMIN_KEY": admin_key, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_room_create_adds_the_therapist_key_code_locally_and_never_sends_it(alcove: Any) -> None:
    import base64
    import hashlib

    raw = hashlib.sha256(b"a therapist's identity key").digest()[:16]
    code = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    proxy = RecordingProxy(alcove.port)
    async with proxy as port:
        server = f"http://127.0.0.1:{port}"
        rc, out, _ = await _room_create(server, alcove.admin_key, "--therapist-key-code", f" {code[:11]} {code[11:]} ")
        assert rc == 0
        room = json.loads(out)
        assert set(room) == {"room_id", "type", "opens_at", "starts_at", "ends_at", "therapist_link", "client_links"}
        assert len(room["client_links"]) == 2
        for link in room["client_links"]:
            assert link.endswith(f"&tk={code}") and "#t=" in link
            assert len(link.split("#t=")[1].split("&")[0]) == 22  # the short form: a seat id
        assert "tk=" not in room["therapist_link"] and len(room["therapist_link"].split("#t=")[1]) == 22
        # The same from the environment (a file the admin keeps, sourced into the shell).
        rc, out, _ = await _room_create(server, alcove.admin_key, env={"ALCOVE_THERAPIST_KEY_CODE": code})
        assert rc == 0 and all(link.endswith(f"&tk={code}") for link in json.loads(out)["client_links"])
        assert b"POST /api/rooms" in proxy.sent
        # The server never received the code, in any form.
        for form in (code.encode(), code[:11].encode(), raw, raw.hex().encode(), b"tk="):
            assert form not in proxy.sent
        # A bad code: a clear error, non-zero exit, and no request at all.
        before = len(proxy.sent)
        for bad in ("not-a-code", code[:-1] + "!", code + "AA"):
            rc, out, err = await _room_create(server, alcove.admin_key, "--therapist-key-code", bad)
            assert rc != 0 and out == b"" and b"therapist key code" in err
        assert len(proxy.sent) == before


@pytest.mark.parametrize("args, said", [
    (["--load-streams", "1000"], "load streams 0..400"),
    (["--publishers", "99"], "publishers 1..8"),
])
def test_bench_sfu_refuses_a_size_out_of_range_with_a_sentence_not_a_traceback(
        args: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.cli import main

    assert main(["bench", "sfu", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alcove bench sfu: ") and said in err and "Traceback" not in err


def test_bench_sfu_without_load_streams_runs_the_bench_default_and_no_other_command_loads_the_bench(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    import tools.bench_sfu as bench

    asked: list[int] = []

    async def fake_bench(**kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs["load_streams"])
        return {}

    monkeypatch.setattr(bench, "check_request", lambda **kwargs: asked.append(kwargs["load_streams"]))
    monkeypatch.setattr(bench, "bench_sfu", fake_bench)
    from tools.cli import main

    assert main(["bench", "sfu", "--json"]) == 0
    assert asked == [bench.LOAD_STREAMS, bench.LOAD_STREAMS]
    # `alcove serve`, `room create` and the rest start without importing the bench
    loaded = subprocess.run([sys.executable, "-c", "import sys, tools.cli; print('tools.bench_sfu' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
