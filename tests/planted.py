"""Planted strings and the one scan for them (issue 15, item 5: nothing of a session persists).

Every feature that carries content through a session plants its own strings here and sends them in a session;
``scan`` then says where any of them shows up: in texts the test collected (the server's stdout/stderr, the
``/metrics`` page) and in every file under the given roots written since the run started. Zero hits is the rule.

    from tests.planted import PLANTED, scan
    hits = scan(PLANTED, texts={"stdout": out}, roots=[data_dir, tmp_dir], since=started)
    assert hits == []

Planted strings are plain ASCII (so that JSON escaping cannot hide them) and unique enough never to occur by chance.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

PLANTED: list[str] = [
    # chat (tests/integration/test_nothing_persists.py): to everyone, private both ways, a link, a display name
    "pl4nted-chat-everyone-7Q2x",
    "pl4nted-chat-private-to-client-7Q2x",
    "pl4nted-chat-private-to-therapist-7Q2x",
    "https://pl4nted-link-7Q2x.example/path",
    "Pl4ntedName7Q2x",
]
"""Add your feature's strings here (and send them in the session of test_nothing_persists.py)."""

#: Files larger than this are read only up to this size (a database or a log rarely is; a core dump might be).
MAX_BYTES = 64 * 1024 * 1024
SKIP_DIRS = frozenset({".git", "node_modules", "__pycache__"})


def _needles(planted: Iterable[str]) -> list[tuple[str, bytes]]:
    out = []
    for s in planted:
        out.append((s, s.encode("utf-8")))
        out.append((s, s.encode("utf-16-le")))  # a file written as UTF-16 (some loggers and databases)
    return out


def written_files(roots: Iterable[Path], since: float | None = None) -> list[Path]:
    """Every regular file under ``roots`` (modified at or after ``since``, epoch seconds, when given)."""
    candidates: list[Path] = []
    for root in roots:
        if root.is_file():
            candidates.append(root)
            continue
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
            candidates += [Path(d) / f for f in files]
    found: list[Path] = []
    for path in candidates:
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if since is None or st.st_mtime >= since or st.st_ctime >= since:
            found.append(path)
    return found


def scan(planted: Iterable[str], *, texts: Mapping[str, str | bytes] | None = None,
         roots: Iterable[Path] = (), since: float | None = None) -> list[str]:
    """Where any planted string appears, as ``"<where>: <string>"`` (empty: nowhere)."""
    needles = _needles(planted)
    hits: list[str] = []
    for where, text in (texts or {}).items():
        data = text.encode("utf-8") if isinstance(text, str) else text
        hits += [f"{where}: {s}" for s, b in needles if b in data]
    for path in written_files(roots, since):
        try:
            with path.open("rb") as f:
                data = f.read(MAX_BYTES)
        except OSError:
            continue
        hits += [f"{path}: {s}" for s, b in needles if b in data]
    return sorted(set(hits))
