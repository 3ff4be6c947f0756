"""The short links' store in one process (server/links.py MemoryStore): a journal in the data directory, appended per
change and compacted now and then, so creating many rooms costs a line each, not a rewrite of every link."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from server import links as links_mod
from server.links import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_changes_are_appended_and_survive_a_restart(tmp_path: Path, monkeypatch: object) -> None:
    path, clock = tmp_path / "links.json", Clock()
    rewrites: list[int] = []
    real = links_mod.write_private
    monkeypatch.setattr(links_mod, "write_private", lambda p, t: (rewrites.append(1), real(p, t)))  # type: ignore[attr-defined]
    store = MemoryStore(clock, path)
    for i in range(500):
        await store.put(f"seat:{i}", f"blob{i}".encode(), 3600)
    await store.delete("seat:7")
    assert len(rewrites) <= 2  # the first write makes the file; the rest are appended lines
    assert len(path.read_text().splitlines()) == 501
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = MemoryStore(clock, path)
    assert await again.get("seat:7") is None and await again.get("seat:499") == b"blob499"
    assert len(await again.values("seat:")) == 499


async def test_the_journal_is_compacted_and_expired_entries_leave_it(tmp_path: Path) -> None:
    path, clock = tmp_path / "links.json", Clock()
    store = MemoryStore(clock, path)
    await store.put("adm:keep", b"k", 10_000)
    await store.put("seat:short", b"s", 10)
    for i in range(1000):  # one record rewritten again and again (the admin's record of a room)
        await store.put("adm:r", f"v{i}".encode(), 3600)
    assert len(path.read_text().splitlines()) <= 2 * 3 + 65
    clock.now += 100  # seat:short expired
    assert await store.get("seat:short") is None and await store.values("seat:") == []
    again = MemoryStore(clock, path)
    assert await again.get("adm:r") == b"v999" and await again.get("adm:keep") == b"k"
    assert "seat:short" not in path.read_text()


async def test_a_file_in_the_former_layout_is_read(tmp_path: Path) -> None:
    path, clock = tmp_path / "links.json", Clock()
    path.write_text(json.dumps({"seat:a": [base64.b64encode(b"A").decode(), 5000.0],
                                "seat:old": [base64.b64encode(b"O").decode(), 10.0]}))
    store = MemoryStore(clock, path)
    assert await store.get("seat:a") == b"A" and await store.get("seat:old") is None
    await store.put("seat:b", b"B", 100)
    again = MemoryStore(clock, path)
    assert await again.get("seat:a") == b"A" and await again.get("seat:b") == b"B"
