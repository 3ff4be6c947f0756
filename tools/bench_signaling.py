"""Signaling load benchmark (no media): many rooms, relay latency, join latency, server RSS, and a baseline.

    result = await bench_signaling(rooms=500, participants=3, seconds=20)

Without ``server``, an Alcove server is started in a child process (``python -m tools.bench_signaling
serve-alcove``, plain HTTP on 127.0.0.1) so that the load generator and the server do not share an event loop.
Each room gets 1 therapist and ``participants - 1`` clients, all admitted. For ``seconds``, every participant
sends one ``candidate`` per second (evenly spread) to the next admitted participant of its room; the relay
latency is measured from send to receive on this process's clock. The same sockets/rate pattern is then run
against a bare aiohttp websocket relay (``serve-echo``, also a child process) as the baseline.

CLI: ``python -m tools.bench_signaling bench --rooms 500 --participants 3 --seconds 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from peer.signaling_client import SignalingClient, base_of
from signaling import messages as m
from tools.admin_client import create_room

__all__ = ["bench_signaling", "percentile"]

RATE = 1.0  # messages per second per participant
JOIN_CONCURRENCY = 64
DRAIN_SECONDS = 3.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    want = min(want, 1 << 20)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


# ---------------------------------------------------------------------------------------------- children


class Child:
    """A server in a child process, stopped on exit."""

    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.bench_signaling", *args, "--port", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=str(Path(__file__).resolve().parent.parent),
                                     env={**os.environ, **(env or {})})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the benchmark server exited with {self.proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError("the benchmark server did not start")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _exit_with_parent() -> None:
    """A benchmark server must not outlive the benchmark (even if the benchmark is killed)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def serve_alcove(port: int, admin_key: str, data_dir: str) -> None:
    from aiohttp import web

    from server.app import create_app
    from server.config import Config, Secret
    from server.throttle import Limits

    raise_fd_limit()
    _exit_with_parent()
    # the load generator is one address: the benchmark's own server does not throttle it
    config = Config(host="127.0.0.1", port=port, tls=False, admin_key=Secret(admin_key), data_dir=Path(data_dir),
                    limits=Limits.unlimited())
    web.run_app(create_app(config), host="127.0.0.1", port=port, print=None, access_log=None)


def serve_echo(port: int) -> None:
    """The baseline: a bare aiohttp websocket relay with the same shape (join, then ``to``-addressed JSON)."""
    from aiohttp import web

    raise_fd_limit()
    _exit_with_parent()
    sockets: dict[str, web.WebSocketResponse] = {}
    decoder = msgspec.json.Decoder()
    encoder = msgspec.json.Encoder()

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=m.MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        me = None
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = decoder.decode(msg.data)
                if me is None:
                    me = str(data["join"])
                    sockets[me] = ws
                    await ws.send_str('{"type":"welcome"}')
                    continue
                target = sockets.get(data.pop("to"))
                if target is not None:
                    data["from"] = me
                    await target.send_str(encoder.encode(data).decode())
        finally:
            if me is not None:
                sockets.pop(me, None)
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------------------------------------- load


class Latencies:
    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.samples: list[float] = []
        self.seq = 0
        self.sending = True

    def next(self) -> int:
        self.seq += 1
        self.sent[self.seq] = time.perf_counter()
        return self.seq

    def got(self, seq: int) -> None:
        at = self.sent.pop(seq, None)
        if at is not None:
            self.samples.append(time.perf_counter() - at)


async def _gather_limited(factories: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(f: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await f()

    return await asyncio.gather(*(run(f) for f in factories))


async def _steady(senders: list[Callable[[], Awaitable[None]]], seconds: float, lat: Latencies) -> int:
    """Each sender is called ``RATE`` times a second with an even phase spread; the number of sends."""
    count = 0
    period = 1.0 / RATE
    gc.collect()
    gc.freeze()  # the load generator's own GC pauses would show up as relay latency (both runs alike)
    end = time.monotonic() + seconds

    async def loop(send: Callable[[], Awaitable[None]], phase: float) -> None:
        nonlocal count
        at = time.monotonic() + phase
        while at < end:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            try:
                await send()
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return
            count += 1
            at += period

    try:
        await asyncio.gather(*(loop(s, random.random() * period) for s in senders))
    finally:
        gc.unfreeze()
    deadline = time.monotonic() + DRAIN_SECONDS
    while lat.sent and time.monotonic() < deadline:  # noqa: ASYNC110 (a bounded drain)
        await asyncio.sleep(0.05)
    return count


async def _alcove_run(server: str, admin_key: str, rooms: int, participants: int, seconds: float
                      ) -> dict[str, Any]:
    lat = Latencies()
    clients: list[SignalingClient] = []
    created: list[dict[str, Any]] = []
    kind = "individual" if participants <= 2 else "couple" if participants == 3 else "group"
    body = {"type": kind, "clients": participants - 1, "topology": "mesh"}
    async with aiohttp.ClientSession() as http:
        async def create() -> dict[str, Any]:
            return await create_room(http, server, admin_key, body)
        created = await _gather_limited([create for _ in range(rooms)], JOIN_CONCURRENCY)

    def on_message(msg: m.ServerMessage) -> None:
        if isinstance(msg, m.PeerCandidate) and msg.candidate:
            lat.got(int(msg.candidate[10:].split(" ", 1)[0]))

    async def join(link: str, name: str) -> SignalingClient:
        sc = await SignalingClient.open(server, link, name=name, timeout=60, listeners=[on_message])
        clients.append(sc)
        return sc

    try:
        async def setup_room(room: dict[str, Any]) -> list[SignalingClient]:
            t = await join(room["therapist_link"], "Therapist")
            members = [t]
            for i, link in enumerate(room["client_links"]):
                c = await join(link, f"Client {i}")
                await t.send(m.Admit(pid=c.pid))
                await c.next("admitted", timeout=30)
                members.append(c)
            await t.next("roster", timeout=30)
            return members

        groups = await _gather_limited([functools.partial(setup_room, r) for r in created], JOIN_CONCURRENCY // 4)
        joins = [sc.join_seconds for sc in clients if sc.join_seconds is not None]
        for sc in clients:
            sc.keep_inbox = False
            sc.drain()

        def sender(sc: SignalingClient, to: str) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                seq = lat.next()
                await sc.send(m.Candidate(to=to, candidate=f"candidate:{seq} 1 udp 2130706431 127.0.0.1 9 typ host",
                                          sdp_mid="0", sdp_mline_index=0))
            return send

        senders = [sender(g[i], g[(i + 1) % len(g)].pid) for g in groups for i in range(len(g))]
        messages = await _steady(senders, seconds, lat)
        return {"messages": messages, "lost": len(lat.sent), "samples": lat.samples, "joins": joins}
    finally:
        await asyncio.gather(*(sc.close() for sc in clients), return_exceptions=True)


async def _echo_run(server: str, rooms: int, participants: int, seconds: float) -> dict[str, Any]:
    lat = Latencies()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # no pool cap on websockets
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder()

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = decoder.decode(msg.data)
                cand = data.get("candidate")
                if cand:
                    lat.got(int(cand[10:].split(" ", 1)[0]))

    async def connect(ident: str) -> aiohttp.ClientWebSocketResponse:
        ws = await http.ws_connect(f"{server.replace('http', 'ws', 1)}/ws", headers={"Origin": server})
        await ws.send_str(encoder.encode({"join": ident}).decode())
        await ws.receive()
        sockets.append(ws)
        readers.append(asyncio.create_task(read(ws)))
        return ws

    try:
        ids = [[f"r{r}p{p}" for p in range(participants)] for r in range(rooms)]
        flat = [i for g in ids for i in g]
        conns = await _gather_limited([functools.partial(connect, i) for i in flat], JOIN_CONCURRENCY)
        by_id = dict(zip(flat, conns, strict=True))

        def sender(ws: aiohttp.ClientWebSocketResponse, to: str) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                seq = lat.next()
                await ws.send_str(encoder.encode({"type": "candidate", "to": to, "candidate":
                                                  f"candidate:{seq} 1 udp 2130706431 127.0.0.1 9 typ host",
                                                  "sdp_mid": "0", "sdp_mline_index": 0}).decode())
            return send

        senders = [sender(by_id[g[i]], g[(i + 1) % len(g)]) for g in ids for i in range(len(g))]
        messages = await _steady(senders, seconds, lat)
        return {"messages": messages, "lost": len(lat.sent), "samples": lat.samples}
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await http.close()


async def bench_signaling(*, rooms: int, participants: int, seconds: float, server: str | None = None,
                          admin_key: str | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the figures as a JSON-able dict."""
    if participants < 2 or rooms < 1 or seconds <= 0:
        raise ValueError("at least 1 room, 2 participants and a positive duration")
    fd_limit = raise_fd_limit()
    children: list[Child] = []
    tmp = tempfile.TemporaryDirectory(prefix="alcove-bench-")
    try:
        server_pid: int | None = None
        if server is None:
            admin_key = secrets.token_urlsafe(24)
            child = Child(["serve-alcove", "--data-dir", tmp.name], _free_port(), {"ALCOVE_BENCH_ADMIN_KEY": admin_key})
            children.append(child)
            await child.ready()
            server, server_pid = child.url, child.proc.pid
        elif admin_key is None:
            raise ValueError("an admin key is needed with a server URL")
        assert admin_key is not None
        started = time.monotonic()
        run = await _alcove_run(base_of(server), admin_key, rooms, participants, seconds)
        rss = rss_mb(server_pid) if server_pid is not None else None
        alcove_wall = time.monotonic() - started

        echo = Child(["serve-echo"], _free_port())
        children.append(echo)
        await echo.ready()
        base = await _echo_run(echo.url, rooms, participants, seconds)
        p99 = percentile(run["samples"], 0.99)
        base_p99 = percentile(base["samples"], 0.99)
        return {
            "rooms": rooms,
            "participants": participants,
            "seconds": seconds,
            "messages": run["messages"],
            "received": len(run["samples"]),
            "lost": run["lost"],
            "p50_ms": _ms(percentile(run["samples"], 0.5)),
            "p99_ms": _ms(p99),
            "max_ms": _ms(max(run["samples"], default=None) if run["samples"] else None),
            "join_p50_ms": _ms(percentile(run["joins"], 0.5)),
            "join_p99_ms": _ms(percentile(run["joins"], 0.99)),
            "rss_mb": rss,
            "wall_s": round(alcove_wall, 1),
            "fd_limit": fd_limit,
            "baseline": {"messages": base["messages"], "lost": base["lost"],
                         "p50_ms": _ms(percentile(base["samples"], 0.5)), "p99_ms": _ms(base_p99)},
            "baseline_ratio": round(p99 / base_p99, 2) if p99 is not None and base_p99 else None,
        }
    finally:
        for child in children:
            child.stop()
        tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_signaling")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench")
    bench.add_argument("--rooms", type=int, default=500)
    bench.add_argument("--participants", type=int, default=3)
    bench.add_argument("--seconds", type=float, default=20.0)
    bench.add_argument("--server")
    bench.add_argument("--admin-key", default=os.environ.get("ALCOVE_ADMIN_KEY"))
    alcove = sub.add_parser("serve-alcove")
    alcove.add_argument("--port", type=int, required=True)
    alcove.add_argument("--data-dir", required=True)
    echo = sub.add_parser("serve-echo")
    echo.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve-alcove":
        serve_alcove(args.port, os.environ["ALCOVE_BENCH_ADMIN_KEY"], args.data_dir)
    elif args.command == "serve-echo":
        serve_echo(args.port)
    else:
        result = asyncio.run(bench_signaling(rooms=args.rooms, participants=args.participants,
                                             seconds=args.seconds, server=args.server, admin_key=args.admin_key))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
