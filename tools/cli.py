"""The `alcove` command: parses the flags and dispatches to the server's commands (:mod:`server.commands`) and
the tools (probe, benchmarks). Its flags and JSON shapes are a contract: operators and checks depend on them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from server.commands import DEFAULT_DATA_DIR, cmd_certs_dev, cmd_keys_rotate, cmd_media_host, cmd_serve
from server.config import is_loopback
from tools.admin_client import RoomNotCreated, create_room, parse_key_code, with_key_code


def parse_duration(text: str) -> float:
    """'50m', '90s', '1h', '1h30m' or a bare number of minutes → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 50m, 90s, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


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
    if args.safety_check:
        body["safety_check"] = args.safety_check
    if args.disconnect_plan:
        plan, _, minutes = args.disconnect_plan.partition(":")
        body["disconnect_plan"] = plan
        if plan == "wait":
            body["disconnect_wait_minutes"] = int(minutes) if minutes.isdigit() else minutes
    async with aiohttp.ClientSession() as http:
        try:
            return await create_room(http, args.server, key, body,
                                     ssl_context=_client_ssl(args.server, args.insecure))
        except RoomNotCreated as err:
            raise SystemExit(f"alcove: {err.code}: {err.reason}") from None


def therapist_key_code(args: argparse.Namespace) -> str | None:
    """``--therapist-key-code`` or ``ALCOVE_THERAPIST_KEY_CODE`` (canonical), or None; exits on a bad code."""
    text = args.therapist_key_code or os.environ.get("ALCOVE_THERAPIST_KEY_CODE") or ""
    if not text.strip():
        return None
    try:
        return parse_key_code(text)
    except ValueError as err:
        raise SystemExit(f"alcove: therapist key code: {err}") from None


def cmd_room_create(args: argparse.Namespace) -> int:
    code = therapist_key_code(args)  # a bad code stops here, before any request
    data = asyncio.run(_create_room(args))
    keys = ("room_id", "type", "opens_at", "starts_at", "ends_at", "therapist_link", "client_links")
    out = {k: data[k] for k in keys}
    if code is not None:
        # Added here, after the server answered: the code is never part of a request.
        out["client_links"] = [with_key_code(link, code) for link in out["client_links"]]
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
    from tools.probe import run_probe

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
    if args.what == "sfu":
        from tools.bench_sfu import LOAD_STREAMS, BenchRefused, check_request

        if args.load_streams is None:  # the bench's own default, read here: no other command loads the bench
            args.load_streams = LOAD_STREAMS
        try:  # a size out of range, or not in a loopback-only namespace: said, with nothing started
            check_request(publishers=args.publishers, subscribers=args.subscribers, seconds=args.seconds,
                          load_streams=args.load_streams)
        except BenchRefused as err:
            print(f"alcove bench sfu: {err}", file=sys.stderr)
            return 2
    result = _bench(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any]
    if args.what == "signaling":
        from tools.bench_signaling import bench_signaling

        result = asyncio.run(bench_signaling(rooms=args.rooms, participants=args.participants,
                                             seconds=args.seconds, server=args.server,
                                             admin_key=os.environ.get("ALCOVE_ADMIN_KEY"), knee=True,
                                             instances=args.instances, redis=args.redis))
    elif args.what == "join":
        from tools.bench_join import bench_join

        result = asyncio.run(bench_join(runs=args.runs))
    elif args.what == "blur":
        from tools.bench_blur import bench_blur

        result = asyncio.run(bench_blur(seconds=args.seconds))
    elif args.what == "e2ee":
        from tools.bench_e2ee import bench_e2ee

        result = asyncio.run(bench_e2ee(seconds=args.seconds))
    elif args.what == "share":
        from tools.bench_share import bench_share

        result = asyncio.run(bench_share(seconds=args.seconds))
    else:
        from tools.bench_sfu import bench_sfu

        result = asyncio.run(bench_sfu(publishers=args.publishers, subscribers=args.subscribers,
                                       seconds=args.seconds, lossy=args.lossy, load_streams=args.load_streams))
    return result


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
    from server.pages import installed_release

    print(json.dumps(installed_release().manifest(), indent=None if args.json else 1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alcove", description="Alcove: private video sessions for therapy")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server (embedded default: one process, in-memory state)")
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1 or ALCOVE_HOST)")
    s.add_argument("--port", type=int, default=None, help="port (default 8443 or ALCOVE_PORT)")
    s.add_argument("--no-tls", action="store_true", help="plain HTTP; only allowed on a loopback address")
    s.add_argument("--emergency-numbers", default=None, metavar="LIST",
                   help="numbers shown on the clients' safety form, e.g. '112=Emergency;0800 801 200=Crisis line' "
                        "(default 112 or ALCOVE_EMERGENCY_NUMBERS)")
    s.add_argument("--demo", action="store_true", help="create a demo session that starts now and print its links")
    s.add_argument("--certs-dir", default="certs", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    mh = sub.add_parser("media-host", help="start the SFU workers for `alcove serve` and outlive it (containers)")
    mh.add_argument("--socket", default=os.environ.get("ALCOVE_MEDIA_HOST"),
                    help="the unix socket `alcove serve` asks (default ALCOVE_MEDIA_HOST)")
    mh.set_defaults(func=cmd_media_host)

    room = sub.add_parser("room", help="rooms").add_subparsers(dest="room_command", required=True)
    rc = room.add_parser("create", help="create a session and print its links (admin key: ALCOVE_ADMIN_KEY)")
    rc.add_argument("--server", required=True)
    rc.add_argument("--type", required=True, choices=["individual", "couple", "family", "group"])
    rc.add_argument("--start", default="now", help="ISO-8601 with a zone, or now")
    rc.add_argument("--duration", type=parse_duration, default=None, help="e.g. 50m or 90s")
    rc.add_argument("--clients", type=int, default=None)
    rc.add_argument("--host-name", default=None, help="the therapist's name shown to clients")
    rc.add_argument("--topology", choices=["mesh", "sfu"], default=None)
    rc.add_argument("--safety-check", choices=["required", "optional", "off"], default=None,
                    help="ask clients the safety check at the start (default optional: they may answer later)")
    rc.add_argument("--disconnect-plan", default=None, metavar="PLAN",
                    help="prefill the 'if we get disconnected' plan: call-back, or wait:MINUTES (e.g. wait:10)")
    rc.add_argument("--therapist-key-code", default=None, metavar="CODE",
                    help="the therapist's key code (shown in their console, given to you out of band; or "
                         "ALCOVE_THERAPIST_KEY_CODE): added to the client links here, never sent to the server")
    rc.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_room_create)

    pr = sub.add_parser("probe", help="smoke-test a deployment with real aiortc peers")
    pr.add_argument("--server", required=True)
    pr.add_argument("--scenario", required=True,
                    choices=["basic", "decline", "end", "resume", "wrong-key", "mitm", "group", "relay", "sendback",
                             "echo", "ghost", "chat"])
    pr.add_argument("--duration", type=parse_duration, default=15.0)
    pr.add_argument("--clients", type=int, default=1)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_probe)

    b = sub.add_parser("bench", help="benchmarks (print JSON)")
    b.add_argument("what", choices=["signaling", "join", "e2ee", "sfu", "share", "blur"])
    b.add_argument("--rooms", type=int, default=500)
    b.add_argument("--participants", type=int, default=3)
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--runs", type=int, default=10)
    b.add_argument("--publishers", type=int, default=2)
    b.add_argument("--subscribers", type=int, default=4)
    b.add_argument("--server", default=None, help="a running server (default: start one in a child process)")
    b.add_argument("--lossy", action="store_true", help="sfu: one subscriber behind a lossy, rate-limited link")
    b.add_argument("--load-streams", type=int, default=None,
                   help="sfu: the loaded phase forwards about this many streams, in rooms of the run's size (0: skip)")
    b.add_argument("--instances", type=int, default=1,
                   help="signaling: also run the load on this many instances sharing --redis")
    b.add_argument("--redis", default=None, help="signaling: the Redis URL several instances share (a test Redis)")
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
