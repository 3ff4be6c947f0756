"""The server's own commands (``alcove serve``, ``certs dev``, ``keys rotate``); :mod:`tools.cli` parses the flags."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import ssl
import sys
from pathlib import Path

from signaling.safety import parse_numbers

from .config import Config, Secret, is_loopback

DEFAULT_DATA_DIR = Path("var")


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


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .certs import ensure_dev_certificate

    try:
        config = Config.from_env()
    except ValueError as err:  # a setting that cannot work: say which, start nothing
        print(f"alcove: {err}", file=sys.stderr)
        return 2
    if args.host:
        config = config.with_(host=args.host)
    if getattr(args, "emergency_numbers", None) is not None:
        try:
            config = config.with_(emergency_numbers=parse_numbers(args.emergency_numbers))
        except ValueError as err:
            print(f"alcove: {err}", file=sys.stderr)
            return 2
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
    def deploy() -> None:  # SIGTERM: stop for a restart; the SFU workers go on forwarding for the next process
        app[HUB].keep_media = True
        stop.set()

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, deploy)
    base = config.base_url()
    if app[HUB].media_unreachable is not None:
        print("warning: the media server has no reachable address: family and group sessions will get no media "
              "(see \"Behind 1:1 NAT\" in docs/operations.md)", flush=True)
    print(f"Alcove is serving on {base}  (admin key in {data_dir / 'admin-key'} or ALCOVE_ADMIN_KEY)",
          flush=True)
    if demo:
        room = await create_room(app[HUB], {"type": "individual", "start": "now", "host": "Demo Therapist"}, base)
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


def cmd_media_host(args: argparse.Namespace) -> int:
    """``alcove media-host``: start the SFU workers for ``alcove serve`` and outlive it (a container of its own)."""
    from .sfu.host import run

    if not args.socket:
        print("alcove media-host: set --socket or ALCOVE_MEDIA_HOST", file=sys.stderr)
        return 2
    return run(Path(args.socket))


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
