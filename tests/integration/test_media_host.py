"""Group media across a restart of the signaling container (docker-compose.yml: the ``media`` and ``alcove``
services), without Docker: the image's two commands as two processes, ``alcove media-host`` and ``alcove serve``
with ``ALCOVE_MEDIA_HOST``. Stopping a container ends every process in it: here the signaling process and every
process it started are killed (``kill -9``); the SFU worker, the media host's child, forwards on, and the next
``alcove serve`` adopts it. The longest gap in the frames each participant decrypts is printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.test_faults import (
    BACK_WITHIN,
    ROOT,
    FrameWatch,
    ServerProcess,
    everyone_gets,
    group_session,
    keyed,
    nothing_refused,
    therapist_back_first,
    timing_holds,
    workers_of,
)

pytestmark = [pytest.mark.media, pytest.mark.integration, pytest.mark.sfu, pytest.mark.usefixtures("media_namespace")]


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def tree(root: int) -> set[int]:
    """``root`` and every process it started (what a container stop ends, when ``root`` is its main process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


@pytest.fixture
async def media_host() -> AsyncIterator[tuple[Path, asyncio.subprocess.Process]]:
    """``alcove media-host`` on a short socket path (a unix socket's path holds 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="alcove-mh-"))
    sock = directory / "media-host.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "media-host", "--socket", str(sock), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert b"media host ready" in await proc.stdout.readline()
        assert sock.stat().st_mode & 0o077 == 0 and directory.stat().st_mode & 0o777 == 0o700
        yield sock, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert not sock.exists()
        with contextlib.suppress(OSError):
            directory.rmdir()


async def test_group_media_survives_a_restart_of_the_signaling_container(
        tmp_path: Path, media_host: tuple[Path, asyncio.subprocess.Process]) -> None:
    sock, host = media_host
    server = ServerProcess(tmp_path, ALCOVE_MEDIA_WORKERS="1", ALCOVE_MEDIA_HOST=str(sock))
    await server.start()
    t, cs = await group_session(server, clients=2)
    everyone = [t, *cs]
    watch = FrameWatch(everyone)
    try:
        await everyone_gets(everyone, 15)
        [worker] = workers_of(server)
        assert parent_of(worker) == host.pid  # the host's child, not the signaling process's
        assert server.proc is not None
        container = tree(server.proc.pid)
        assert worker not in container
        watch.reset()
        for pid in container:  # the container stops: everything in it, at once
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        await server.wait()
        down = time.monotonic()
        await everyone_gets(everyone, 15)  # the worker forwards on with no signaling process at all
        assert workers_of(server) == {worker}
        epoch, made = t.keys.current.epoch, len(t.epochs_made)  # type: ignore[union-attr]
        listening = await server.start()
        back = await therapist_back_first(t, cs)
        await t.wait_until(lambda: len(t.epochs_made) > made, 5, "a new epoch for the returning clients")
        await keyed(t, cs, after=epoch)
        await everyone_gets(everyone, 30, timeout=40)
        gap = watch.longest()
        print(f"\nsignaling container restarted (kill -9 of its processes, E2EE): server down {listening - down:.2f} s, "
              f"everyone back {back - listening:.2f} s after it listened; longest gap in decrypted video {gap:.2f} s; "
              f"frames that failed to decrypt {[p.decrypt_failures() for p in everyone]}")
        assert back - listening <= BACK_WITHIN
        if timing_holds():
            assert gap < 2.0, gap
        assert worker in workers_of(server)  # adopted, not replaced
        nothing_refused(everyone)
        # a new room's worker is the host's child too
        await t.end()
        for _ in range(50):
            if worker not in workers_of(server):
                break
            await asyncio.sleep(0.1)
        assert worker not in workers_of(server)
        assert all(parent_of(w) == host.pid for w in workers_of(server))
    finally:
        await watch.stop()
        for p in everyone:
            await p.close()
        await server.stop()
