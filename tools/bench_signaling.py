"""Signaling load benchmark (no media): many rooms, relay latency, join latency, server RSS, and a baseline.

    result = await bench_signaling(rooms=500, participants=3, seconds=20)

Without ``server``, an Alcove server is started in a child process (``python -m tools.bench_signaling
serve-alcove``, plain HTTP on 127.0.0.1) so that the load generator and the server do not share an event loop.
Each room gets 1 therapist and ``participants - 1`` clients, all admitted. For ``seconds``, every participant
sends one ``candidate`` per second (evenly spread) to the next admitted participant of its room; the relay
latency is measured from send to receive on this process's clock. The same sockets/rate pattern is then run
against a bare aiohttp websocket relay (``serve-echo``, also a child process) as the baseline; both servers and
both sets of sockets stay up until the end.

With ``knee`` (always from ``alcove bench signaling``) the offered load is then stepped up by 25 % a step, for
Alcove and for the baseline, until the relay median passes 10 ms; the search is repeated ``repeats`` times (3),
alternately on the two servers so that a change in the machine's other load hits both: ``knee`` and
``baseline.knee`` are the median highest delivered loads under 10 ms (every search's in ``repeats``),
``knee_ratio`` Alcove's share of the baseline's, ``knee_ratio_repeats`` the ratio of each pair of searches.

On a machine busy with other work the knee measures the machine's scheduling more than either server, so the
servers' own CPU is counted too (``/proc``, children only): ``cpu_us_per_delivery`` for Alcove and for the baseline
over the steady run (and per knee step), and ``cpu_ratio``, the baseline's over Alcove's — the knee ratio to expect
where each server's own CPU sets its knee. With ``instances`` > 1 and a ``redis`` URL, the same
load runs on one and on that many instances sharing Redis (``instances`` in the JSON: latency, delivered/s, the
share of deliveries that cross Redis, CPU microseconds per message and per crossing).

CLI: ``python -m tools.bench_signaling bench --rooms 500 --participants 3 --seconds 20 [--knee] [--repeats 3]
[--profile FILE]`` (``--profile``: a cProfile of the Alcove server, for ``python -m pstats``; it slows the server,
so its figures are not the server's).
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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from peer.signaling_client import SignalingClient, SignalingClosed, base_of
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

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
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
                    limits=Limits.unlimited(), redis_url=Secret(os.environ.get("ALCOVE_REDIS_URL", "")))
    profile = os.environ.get("ALCOVE_BENCH_PROFILE")
    if not profile:
        web.run_app(create_app(config), host="127.0.0.1", port=port, print=None, access_log=None)
        return
    import cProfile  # --profile: where the server's time goes (slows it: not for the figures)

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        web.run_app(create_app(config), host="127.0.0.1", port=port, print=None, access_log=None,
                    shutdown_timeout=1.0)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


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


async def _steady(senders: list[Callable[[], Awaitable[None]]], seconds: float, lat: Latencies,
                  rate: float = RATE) -> int:
    """Each sender is called ``rate`` times a second with an even phase spread; the number of sends."""
    count = 0
    period = 1.0 / rate
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
            except (ConnectionError, RuntimeError, aiohttp.ClientError, SignalingClosed):
                return  # a socket the server closed: its sender stops (counted in ``closed``)
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


KNEE_MEDIAN = 0.010
"""The knee: the highest delivered load whose relay median stays under 10 ms."""
KNEE_RATES = tuple(round(1.0 * 1.25 ** i, 2) for i in range(18))
"""Messages per second per participant, stepped up by 25 % from 1 to ~45 (the server's own limit is 50 per
socket): fine enough that the knee is not an artefact of a coarse grid."""
KNEE_STEP_S = 3.0
KNEE_REPEATS = 3
"""Each knee is searched this many times, Alcove and the baseline alternately on sockets kept open for both, and
the median taken: on a shared 2-core machine one search moves with the other load of the moment."""


async def _knee(senders: list[Callable[[], Awaitable[None]]], lat: Latencies, step: float,
                cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """The offered load stepped up until the median passes 10 ms (or deliveries fall behind): the highest
    delivered load under it, and every step."""
    steps: list[dict[str, Any]] = []
    best = None
    for rate in KNEE_RATES:
        lat.samples.clear()
        lat.sent.clear()
        used = cpu() if cpu is not None else 0.0
        sent = await _steady(senders, step, lat, rate)
        used = cpu() - used if cpu is not None else 0.0
        p50 = percentile(lat.samples, 0.5)
        delivered = round(len(lat.samples) / step)
        steps.append({"offered_per_s": round(sent / step), "delivered_per_s": delivered, "p50_ms": _ms(p50),
                      "cpu_us_per_delivery": round(used * 1e6 / len(lat.samples), 1) if cpu and lat.samples else None})
        if p50 is None or p50 >= KNEE_MEDIAN or len(lat.samples) < 0.95 * sent:
            break
        best = delivered
    return {"deliveries_per_s": best, "steps": steps}


def _median_knee(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of several knee searches (a search that found none counts as 0), with the steps of the search
    that gave it and every search's knee."""
    knees = [k["deliveries_per_s"] or 0 for k in searches]
    order = sorted(range(len(knees)), key=knees.__getitem__)
    middle = searches[order[len(order) // 2]]
    return {"deliveries_per_s": middle["deliveries_per_s"], "repeats": [k["deliveries_per_s"] for k in searches],
            "steps": middle["steps"]}


async def _measure(senders: list[Callable[[], Awaitable[None]]], seconds: float, lat: Latencies,
                   cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """The steady run at ``RATE``, with the CPU seconds ``cpu()`` counts over it."""
    before = cpu() if cpu is not None else 0.0
    messages = await _steady(senders, seconds, lat)
    used = (cpu() - before) if cpu is not None else None
    return {"messages": messages, "lost": len(lat.sent), "samples": list(lat.samples), "cpu_s": used}


def _per_delivery(run: dict[str, Any]) -> float | None:
    """Server CPU microseconds per delivered message over a steady run (None without a child's CPU)."""
    return round(run["cpu_s"] * 1e6 / len(run["samples"]), 1) if run["cpu_s"] is not None and run["samples"] else None


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _redis_cpu(url: str) -> float:
    """Redis's own CPU seconds (INFO cpu), so its share of a relayed message can be counted."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await client.aclose()


@dataclass
class Load:
    """Sockets set up and admitted, ready to be driven: one sender per participant, and the latencies."""

    senders: list[Callable[[], Awaitable[None]]]
    lat: Latencies
    joins: list[float] = field(default_factory=list)
    cross_share: float = 0.0
    closed: Callable[[], dict[str, int]] = dict
    """Sockets the server closed so far, by close code (a slow consumer is closed with 4009)."""


async def _alcove_run(server: str | list[str], admin_key: str, rooms: int, participants: int, seconds: float,
                      *, cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    async with _alcove_load(server, admin_key, rooms, participants) as load:
        result = await _measure(load.senders, seconds, load.lat, cpu)
        return {**result, "joins": load.joins, "cross_share": load.cross_share}


@contextlib.asynccontextmanager
async def _alcove_load(server: str | list[str], admin_key: str, rooms: int, participants: int
                       ) -> AsyncIterator[Load]:
    """Participant ``j`` of room ``r`` joins ``servers[(r + j) % len(servers)]``: with several instances the first
    joiner (who takes the room's lease) rotates, and the others land on instances that relay to the owner."""
    servers = [server] if isinstance(server, str) else server
    server = servers[0]
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

    place: dict[str, int] = {}  # pid -> index of its instance

    async def join(link: str, name: str, at: int) -> SignalingClient:
        sc = await SignalingClient.open(servers[at], link, name=name, timeout=60, listeners=[on_message])
        clients.append(sc)
        if sc.pid is not None:
            place[sc.pid] = at
        return sc

    try:
        async def setup_room(r: int, room: dict[str, Any]) -> list[SignalingClient]:
            t = await join(room["therapist_link"], "Therapist", r % len(servers))
            members = [t]
            for i, link in enumerate(room["client_links"]):
                c = await join(link, f"Client {i}", (r + i + 1) % len(servers))
                await t.send(m.Admit(pid=c.pid))
                await c.next("admitted", timeout=30)
                members.append(c)
            await t.next("roster", timeout=30)
            return members

        groups = await _gather_limited([functools.partial(setup_room, i, r) for i, r in enumerate(created)],
                                       JOIN_CONCURRENCY // 4)
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
        # a delivery crosses Redis when its sender or its receiver is not on the room's owner (its first joiner)
        crossing = sum(1 for g in groups for i in range(len(g))
                       if place.get(g[i].pid or "") != place.get(g[0].pid or "")
                       or place.get(g[(i + 1) % len(g)].pid or "") != place.get(g[0].pid or ""))
        def closed() -> dict[str, int]:
            return dict(Counter(str(sc.close_code) for sc in clients if sc.closed))

        yield Load(senders, lat, joins, round(crossing / len(senders), 3) if senders else 0.0, closed)
    finally:
        await asyncio.gather(*(sc.close() for sc in clients), return_exceptions=True)


@contextlib.asynccontextmanager
async def _echo_load(server: str, rooms: int, participants: int) -> AsyncIterator[Load]:
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
        def closed() -> dict[str, int]:
            return dict(Counter(str(ws.close_code) for ws in sockets if ws.closed))

        yield Load(senders, lat, closed=closed)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await http.close()


async def bench_signaling(*, rooms: int, participants: int, seconds: float, server: str | None = None,
                          admin_key: str | None = None, instances: int = 1, redis: str | None = None,
                          knee: bool = False, repeats: int = KNEE_REPEATS,
                          profile: str | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the figures as a JSON-able dict.

    ``knee``: also step the offered load up, for Alcove and the baseline relay, until the median passes 10 ms,
    ``repeats`` times each, alternately (the median is reported, and every search's knee in ``repeats``).
    ``profile``: a file for a cProfile of the Alcove server child (written when it stops; it slows the server).
    ``instances`` > 1 (with ``redis``): the same load once more on that many instances sharing Redis."""
    if participants < 2 or rooms < 1 or seconds <= 0 or repeats < 1:
        raise ValueError("at least 1 room, 2 participants and a positive duration")
    if instances < 1 or (instances > 1 and not redis) or (instances > 1 and server is not None):
        raise ValueError("several instances need --redis (and are started here: no --server)")
    fd_limit = raise_fd_limit()
    children: list[Child] = []
    tmp = tempfile.TemporaryDirectory(prefix="alcove-bench-")
    try:
        server_pid: int | None = None
        if server is None:
            admin_key = secrets.token_urlsafe(24)
            child = Child(["serve-alcove", "--data-dir", tmp.name], _free_port(),
                          {"ALCOVE_BENCH_ADMIN_KEY": admin_key, "ALCOVE_REDIS_URL": "",  # the default: no Redis
                           "ALCOVE_BENCH_PROFILE": str(Path(profile).resolve()) if profile else ""})
            children.append(child)
            await child.ready()
            server, server_pid = child.url, child.proc.pid
        elif admin_key is None:
            raise ValueError("an admin key is needed with a server URL")
        assert admin_key is not None
        echo = Child(["serve-echo"], _free_port())
        children.append(echo)
        await echo.ready()
        started = time.monotonic()
        pids = [server_pid] if server_pid is not None else []
        searches: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        async with _alcove_load(base_of(server), admin_key, rooms, participants) as mine:
            alcove_cpu = functools.partial(_cpu_seconds, pids)
            run = await _measure(mine.senders, seconds, mine.lat, alcove_cpu if pids else None)
            run.update(joins=mine.joins)
            rss = rss_mb(server_pid) if server_pid is not None else None
            alcove_wall = time.monotonic() - started
            async with _echo_load(echo.url, rooms, participants) as theirs:  # both stay connected
                relay_cpu = functools.partial(_cpu_seconds, [echo.proc.pid])
                base = await _measure(theirs.senders, seconds, theirs.lat, relay_cpu)
                step = max(1.0, min(seconds, KNEE_STEP_S))
                for i in range(repeats if knee else 0):  # alternately: a change of machine load hits both
                    for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                        load = (mine, theirs)[which]
                        searches[which].append(await _knee(load.senders, load.lat, step,
                                                           (alcove_cpu if pids else None, relay_cpu)[which]))
                closed = mine.closed(), theirs.closed()
        p99 = percentile(run["samples"], 0.99)
        base_p99 = percentile(base["samples"], 0.99)
        result: dict[str, Any] = {
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
            "closed_sockets": closed[0],
            "baseline": {"messages": base["messages"], "lost": base["lost"], "closed_sockets": closed[1],
                         "cpu_us_per_delivery": _per_delivery(base),
                         "p50_ms": _ms(percentile(base["samples"], 0.5)), "p99_ms": _ms(base_p99)},
            "baseline_ratio": round(p99 / base_p99, 2) if p99 is not None and base_p99 else None,
            "cpu_us_per_delivery": _per_delivery(run),
        }
        mine_us, theirs_us = result["cpu_us_per_delivery"], result["baseline"]["cpu_us_per_delivery"]
        result["cpu_ratio"] = round(theirs_us / mine_us, 3) if mine_us and theirs_us else None
        if knee:
            ours, relay = _median_knee(searches[0]), _median_knee(searches[1])
            result["knee"] = ours
            result["baseline"]["knee"] = relay
            a, b = ours["deliveries_per_s"], relay["deliveries_per_s"]
            result["knee_ratio"] = round(a / b, 3) if a and b else None
            paired = [x / y for x, y in zip(ours["repeats"], relay["repeats"], strict=True) if x and y]
            result["knee_ratio_repeats"] = [round(r, 3) for r in paired]
        if instances > 1 and redis:
            result["instances"] = await _instances_run(redis, instances, rooms, participants, seconds, run, tmp.name)
        return result
    finally:
        for child in children:
            child.stop(120.0 if profile else 10.0)  # a profiled server writes its profile as it stops
        tmp.cleanup()


async def _instances_run(redis: str, n: int, rooms: int, participants: int, seconds: float,
                         single: dict[str, Any], tmp: str) -> dict[str, Any]:
    """The same offered load on 1 and on ``n`` instances sharing ``redis``: latency, delivered/s, the share of
    deliveries that cross Redis, and the CPU each message costs (instances and Redis), in microseconds."""
    from server.tokens import KeyRing

    figures: dict[str, Any] = {"redis": "given", "offered_per_s": round(rooms * participants * RATE)}
    for count in (1, n):
        data_dir = Path(tmp) / f"cluster-{count}"
        KeyRing.load_or_create(data_dir)  # one key ring for every instance
        admin_key = secrets.token_urlsafe(24)
        env = {"ALCOVE_BENCH_ADMIN_KEY": admin_key, "ALCOVE_REDIS_URL": redis}
        children = [Child(["serve-alcove", "--data-dir", str(data_dir)], _free_port(), env) for _ in range(count)]
        try:
            for child in children:
                await child.ready()
            pids = [c.proc.pid for c in children]
            redis_before = await _redis_cpu(redis)
            run = await _alcove_run([c.url for c in children], admin_key, rooms, participants, seconds,
                                    cpu=lambda pids=pids: _cpu_seconds(pids))  # type: ignore[misc]
            redis_cpu = await _redis_cpu(redis) - redis_before
        finally:
            for child in children:
                child.stop()
        delivered = len(run["samples"])
        crossings = delivered * run["cross_share"]
        figures[str(count)] = {
            "p50_ms": _ms(percentile(run["samples"], 0.5)), "p99_ms": _ms(percentile(run["samples"], 0.99)),
            "delivered_per_s": round(delivered / seconds), "lost": run["lost"],
            "cross_instance_share": run["cross_share"],
            "instances_cpu_us_per_message": round(run["cpu_s"] * 1e6 / delivered, 1) if delivered else None,
            "redis_cpu_us_per_crossing": round(redis_cpu * 1e6 / crossings, 1) if crossings else None,
        }
    one, many = figures["1"], figures[str(n)]
    if one["instances_cpu_us_per_message"] and many["instances_cpu_us_per_message"] and many["cross_instance_share"]:
        extra = many["instances_cpu_us_per_message"] - one["instances_cpu_us_per_message"]
        figures["instances_cpu_us_per_crossing"] = round(extra / many["cross_instance_share"], 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_signaling")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench")
    bench.add_argument("--rooms", type=int, default=500)
    bench.add_argument("--participants", type=int, default=3)
    bench.add_argument("--seconds", type=float, default=20.0)
    bench.add_argument("--server")
    bench.add_argument("--admin-key", default=os.environ.get("ALCOVE_ADMIN_KEY"))
    bench.add_argument("--instances", type=int, default=1)
    bench.add_argument("--redis")
    bench.add_argument("--knee", action="store_true")
    bench.add_argument("--repeats", type=int, default=KNEE_REPEATS)
    bench.add_argument("--profile", help="write a cProfile of the Alcove server to this file")
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
                                             seconds=args.seconds, server=args.server, admin_key=args.admin_key,
                                             instances=args.instances, redis=args.redis, knee=args.knee,
                                             repeats=args.repeats, profile=args.profile))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
