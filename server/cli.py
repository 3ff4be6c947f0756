"""The `alcove` command. Its flags and JSON shapes are a contract: operators and checks depend on them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import Config, Secret, is_loopback

DEFAULT_DATA_DIR = Path("var")


def parse_duration(text: str) -> float:
    """'50m', '90s', '1h', '1h30m' or a bare number of minutes → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 50m, 90s, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _admin_key(data_dir: Path) -> str:
    """ALCOVE_ADMIN_KEY, or a key created on first run in a git-ignored local file (mode 0600)."""
    key = os.environ.get("ALCOVE_ADMIN_KEY")
    if key:
        return key
    path = data_dir / "admin-key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .certs import ensure_dev_certificate

    config = Config.from_env()
    if args.host:
        config = config.with_(host=args.host)
    if args.port is not None:
        config = config.with_(port=args.port)
    if args.no_tls:
        if not is_loopback(config.host):
            print("alcove: --no-tls is only allowed on a loopback address", file=sys.stderr)
            return 2
        config = config.with_(tls=False)
    data_dir = config.data_dir or DEFAULT_DATA_DIR
    config = config.with_(data_dir=data_dir, admin_key=Secret(_admin_key(data_dir)))
    logs.configure(config.log_level)

    ssl_context = None
    if config.tls:
        cert, key = config.tls_cert, config.tls_key
        if not (cert and key):
            cert, key = ensure_dev_certificate(Path(args.certs_dir))
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(str(cert), str(key))

    asyncio.run(_serve(config, ssl_context, demo=args.demo, data_dir=data_dir))
    return 0


async def _serve(config: Config, ssl_context: ssl.SSLContext | None, *, demo: bool, data_dir: Path) -> None:
    """Serve until SIGINT/SIGTERM; the links are printed once the socket is listening."""
    import signal

    from aiohttp import web

    from .api import create_room
    from .app import create_app
    from .state import HUB

    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = config.base_url()
    print(f"Alcove is serving on {base}  (admin key in {data_dir / 'admin-key'} or ALCOVE_ADMIN_KEY)",
          flush=True)
    if demo:
        room = create_room(app[HUB], {"type": "individual", "start": "now", "host": "Demo Therapist"}, base)
        print("\nDemo session (individual, starts now, 50 minutes):", flush=True)
        print(f"  Therapist: {room['therapist_link']}", flush=True)
        print(f"  Client:    {room['client_links'][0]}", flush=True)
        if config.tls and not config.tls_cert:
            print("\n  (self-signed certificate: your browser will ask you to accept it once)", flush=True)
        print(f"  Admin page: {base}/admin\n", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- room create


def _client_ssl(url: str, insecure: bool) -> ssl.SSLContext | bool:
    host = urlsplit(url).hostname or ""
    if url.startswith("https") and (insecure or is_loopback(host)):
        return False  # a loopback dev server with its self-signed certificate
    return True


async def _create_room(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    key = os.environ.get("ALCOVE_ADMIN_KEY")
    if not key:
        raise SystemExit("alcove: set ALCOVE_ADMIN_KEY to the server's admin key")
    body: dict[str, Any] = {"type": args.type, "start": args.start}
    if args.duration is not None:
        body["duration_seconds"] = args.duration
    if args.clients is not None:
        body["clients"] = args.clients
    if args.host_name:
        body["host"] = args.host_name
    if args.topology:
        body["topology"] = args.topology
    url = args.server.rstrip("/") + "/api/rooms"
    async with aiohttp.ClientSession() as http, http.post(
            url, json=body, headers={"Authorization": f"Bearer {key}"},
            ssl=_client_ssl(url, args.insecure)) as r:
        data: dict[str, Any] = await r.json()
        if r.status != 201:
            err = data.get("error", {})
            raise SystemExit(f"alcove: {err.get('code', r.status)}: {err.get('message', '')}")
        return data


def cmd_room_create(args: argparse.Namespace) -> int:
    data = asyncio.run(_create_room(args))
    keys = ("room_id", "type", "opens_at", "starts_at", "ends_at", "therapist_link", "client_links")
    out = {k: data[k] for k in keys}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"Room {out['room_id']} ({out['type']}) {out['starts_at']} – {out['ends_at']}")
        print(f"Therapist: {out['therapist_link']}")
        for i, link in enumerate(out["client_links"], 1):
            print(f"Client {i}:  {link}")
    return 0


# ---------------------------------------------------------------- probe & bench


def cmd_probe(args: argparse.Namespace) -> int:
    from peer.probe import run_probe

    key = os.environ.get("ALCOVE_ADMIN_KEY", "")
    try:
        result = asyncio.run(run_probe(args.server, args.scenario, duration=args.duration, clients=args.clients,
                                       admin_key=key, insecure=True))
    except Exception as exc:  # the probe reports, it does not crash
        result = {"ok": False, "scenario": args.scenario, "figures": {}, "error": type(exc).__name__}
    if args.json:
        print(json.dumps(result))
    else:
        print(("OK" if result["ok"] else "FAILED") + f"  {args.scenario}  " + json.dumps(result.get("figures", {})))
        if result.get("error"):
            print(f"error: {result['error']}")
    return 0 if result["ok"] else 1


def cmd_bench(args: argparse.Namespace) -> int:
    result: dict[str, Any]
    if args.what == "signaling":
        from peer.bench_signaling import bench_signaling

        result = asyncio.run(bench_signaling(rooms=args.rooms, participants=args.participants,
                                             seconds=args.seconds, server=args.server,
                                             admin_key=os.environ.get("ALCOVE_ADMIN_KEY")))
    elif args.what == "join":
        from peer.bench_join import bench_join

        result = asyncio.run(bench_join(runs=args.runs))
    elif args.what == "e2ee":
        from peer.bench_e2ee import bench_e2ee

        result = asyncio.run(bench_e2ee(seconds=args.seconds))
    else:
        from peer.bench_sfu import bench_sfu

        result = asyncio.run(bench_sfu(publishers=args.publishers, subscribers=args.subscribers,
                                       seconds=args.seconds))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------- client code


def cmd_verify_client(args: argparse.Namespace) -> int:
    from .verify_client import verify_client

    if args.insecure and not is_loopback(urlsplit(args.server).hostname or ""):
        print("alcove: --insecure is for a development server on loopback; use --cafile", file=sys.stderr)
        return 2
    result = asyncio.run(verify_client(args.server, insecure=args.insecure, cafile=args.cafile))
    if args.json:
        print(json.dumps(result))
    else:
        for d in result["differences"]:
            print(f"DIFFERS  {d['path']}  ({d['why']})")
        if result["error"]:
            print(f"error: {result['error']}")
        verdict = "OK  identical to" if result["ok"] else "FAILED  not identical to"
        print(f"{verdict} alcove {result['release']} ({result['checked']} files and pages checked)")
    return 0 if result["ok"] else 1


def cmd_manifest(args: argparse.Namespace) -> int:
    from .pages import installed_release

    print(json.dumps(installed_release().manifest(), indent=None if args.json else 1))
    return 0


# ---------------------------------------------------------------- certs & keys


def cmd_certs_dev(args: argparse.Namespace) -> int:
    from .certs import ensure_dev_certificate

    cert, key = ensure_dev_certificate(Path(args.dir))
    print(f"certificate: {cert}\nkey:         {key}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    import time

    from .tokens import KeyRing

    ring = KeyRing.load_or_create(Path(args.data_dir))
    key = ring.rotate(time.time(), keep=args.keep)
    print(f"new signing key {key.kid}; active keys: {', '.join(k.kid for k in ring.keys)}")
    print("restart the server to use it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alcove", description="Alcove: private video sessions for therapy")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server (embedded default: one process, in-memory state)")
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1 or ALCOVE_HOST)")
    s.add_argument("--port", type=int, default=None, help="port (default 8443 or ALCOVE_PORT)")
    s.add_argument("--no-tls", action="store_true", help="plain HTTP; only allowed on a loopback address")
    s.add_argument("--demo", action="store_true", help="create a demo session that starts now and print its links")
    s.add_argument("--certs-dir", default="certs", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    room = sub.add_parser("room", help="rooms").add_subparsers(dest="room_command", required=True)
    rc = room.add_parser("create", help="create a session and print its links (admin key: ALCOVE_ADMIN_KEY)")
    rc.add_argument("--server", required=True)
    rc.add_argument("--type", required=True, choices=["individual", "couple", "family", "group"])
    rc.add_argument("--start", default="now", help="ISO-8601 with a zone, or now")
    rc.add_argument("--duration", type=parse_duration, default=None, help="e.g. 50m or 90s")
    rc.add_argument("--clients", type=int, default=None)
    rc.add_argument("--host-name", default=None, help="the therapist's name shown to clients")
    rc.add_argument("--topology", choices=["mesh", "sfu"], default=None)
    rc.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_room_create)

    pr = sub.add_parser("probe", help="smoke-test a deployment with real aiortc peers")
    pr.add_argument("--server", required=True)
    pr.add_argument("--scenario", required=True,
                    choices=["basic", "decline", "end", "resume", "wrong-key", "mitm", "group", "relay", "sendback"])
    pr.add_argument("--duration", type=parse_duration, default=15.0)
    pr.add_argument("--clients", type=int, default=1)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_probe)

    b = sub.add_parser("bench", help="benchmarks (print JSON)")
    b.add_argument("what", choices=["signaling", "join", "e2ee", "sfu"])
    b.add_argument("--rooms", type=int, default=500)
    b.add_argument("--participants", type=int, default=3)
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--runs", type=int, default=10)
    b.add_argument("--publishers", type=int, default=2)
    b.add_argument("--subscribers", type=int, default=4)
    b.add_argument("--server", default=None, help="a running server (default: start one in a child process)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    v = sub.add_parser("verify-client", help="check that a server serves exactly this release's client code")
    v.add_argument("server", help="https://host[:port]")
    v.add_argument("--insecure", action="store_true",
                   help="do not verify the certificate (the development certificate, loopback only)")
    v.add_argument("--cafile", default=None, help="trust this CA or certificate (e.g. certs/dev.crt)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify_client)

    mf = sub.add_parser("manifest", help="print the SHA-256 manifest of this release's client code")
    mf.add_argument("--json", action="store_true")
    mf.set_defaults(func=cmd_manifest)

    c = sub.add_parser("certs", help="certificates").add_subparsers(dest="certs_command", required=True)
    cd = c.add_parser("dev", help="make a localhost certificate for development")
    cd.add_argument("--dir", default="certs")
    cd.set_defaults(func=cmd_certs_dev)

    k = sub.add_parser("keys", help="token signing keys").add_subparsers(dest="keys_command", required=True)
    kr = k.add_parser("rotate", help="add a new signing key; the previous one keeps verifying")
    kr.add_argument("--data-dir", default=os.environ.get("ALCOVE_DATA_DIR", str(DEFAULT_DATA_DIR)))
    kr.add_argument("--keep", type=int, default=2)
    kr.set_defaults(func=cmd_keys_rotate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
