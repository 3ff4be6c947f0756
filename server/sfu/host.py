"""The media host (``alcove media-host``): starts the SFU worker processes for the signaling process and outlives it.

Under systemd the workers outlive a restart of ``alcove serve`` by running in sessions of their own
(``KillMode=process``). In a container, stopping the container ends every process in it; there the workers are
started by this host instead, a process of its own (Docker Compose: a service of its own, from the same image, whose
network namespace the signaling service shares), so that a restart or redeploy of the signaling service leaves
group media running and the next ``alcove serve`` adopts the workers as usual (docs/sfu.md §4).

The signaling process asks over a unix socket (``ALCOVE_MEDIA_HOST``, mode 0600 in a 0700 directory): one
request per connection, ``{"path": the worker's socket, "config": base64 of its configuration}``; the host never
decodes the configuration (it goes to the worker's stdin as the signaling process made it) and answers
``{"ok": true, "pid": n}``. The worker's socket must be ``w*.sock`` in a directory of this user's, mode 0700.
Light: no aiortc here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

log = logging.getLogger("alcove.sfu")

MAX_REQUEST = 1 << 20


def spawn_worker(path: Path, config: bytes) -> subprocess.Popen[bytes]:
    """A worker process in its own session (a signal to the starter's group does not reach it), listening at
    ``path``; its configuration (pickled by the signaling process) goes through stdin, off the command line."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from server.sfu.worker import main; main()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    assert process.stdin is not None
    process.stdin.write(config)
    process.stdin.close()
    return process


def start_hosted(host: Path, path: Path, config: bytes, timeout: float = 10.0) -> int:
    """Ask the media host at ``host`` to start a worker listening at ``path``; its pid (in the host's namespace).
    Raises OSError when the host is not there or refuses (blocking: run it in an executor)."""
    with Client(str(host), family="AF_UNIX") as conn:
        conn.send_bytes(json.dumps({"path": str(path), "config": base64.b64encode(config).decode()}).encode())
        if not conn.poll(timeout):
            raise OSError("the media host did not answer")
        answer = json.loads(conn.recv_bytes(MAX_REQUEST))
    if not isinstance(answer, dict) or answer.get("ok") is not True or not isinstance(answer.get("pid"), int):
        raise OSError("the media host refused to start a worker")
    return int(answer["pid"])


def _worker_path(text: object) -> Path:
    """The worker socket asked for: ``w*.sock`` in a directory of ours with mode 0700 (ValueError otherwise)."""
    if not isinstance(text, str) or not text:
        raise ValueError("no path")
    path = Path(text)
    if not path.is_absolute() or not (path.name.startswith("w") and path.name.endswith(".sock")) or path.exists():
        raise ValueError("not a new worker socket")
    parent = path.parent.lstat()
    if not stat.S_ISDIR(parent.st_mode) or parent.st_uid != os.getuid() or parent.st_mode & 0o077:
        raise ValueError("not a private directory of ours")
    return path


class MediaHost:
    """Listens at ``socket_path`` and starts workers; reaps them when they exit."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.started = 0
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._stopping = False

    def open(self) -> None:
        directory = self.socket_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
        if info.st_uid != os.getuid() or stat.S_ISLNK(info.st_mode):
            raise RuntimeError("the media host's directory is not ours")
        os.chmod(directory, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a previous host's: it is gone (or this one replaces it)
        old = os.umask(0o077)
        try:
            self._listener = Listener(str(self.socket_path), family="AF_UNIX")
        finally:
            os.umask(old)

    def close(self) -> None:
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None

    def serve(self) -> None:
        """Answer requests until :meth:`close`, each connection in its own thread (one that stalls mid-request
        holds up nobody else)."""
        assert self._listener is not None
        while not self._stopping:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            threading.Thread(target=self._answer, args=(conn,), name="alcove-media-request", daemon=True).start()

    def _answer(self, conn: Connection) -> None:
        with conn:
            try:
                if not conn.poll(5.0):
                    return
                request = json.loads(conn.recv_bytes(MAX_REQUEST))
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                path = _worker_path(request.get("path"))
                config = base64.b64decode(str(request.get("config", "")), validate=True)
                process = spawn_worker(path, config)
            except EOFError:
                return  # connected and closed without a request (the container's health check): nothing to say
            except (OSError, ValueError) as err:
                log.warning("media host: request refused (%s)", type(err).__name__)
                with contextlib.suppress(OSError):
                    conn.send_bytes(b'{"ok": false}')
                return
            with self._lock:
                self.started += 1
            threading.Thread(target=process.wait, name="alcove-media-reap", daemon=True).start()
            with contextlib.suppress(OSError):
                conn.send_bytes(json.dumps({"ok": True, "pid": process.pid}).encode())


def run(socket_path: Path) -> int:
    """``alcove media-host``: serve until SIGTERM/SIGINT; the workers it started go on (each exits once nobody has
    adopted it for ``ALCOVE_MEDIA_ADOPT_SECONDS``, or when its signaling process stops it)."""
    host = MediaHost(socket_path)
    host.open()

    def stop(signum: int, frame: object) -> None:
        host.close()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("media host ready", flush=True)
    host.serve()
    return 0
