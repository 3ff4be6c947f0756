"""The release's client code, hashed: the manifest, Subresource Integrity and the import map.

Everything is derived from the files of the installed release (the ``web/static`` folder, walked, never a
hard-coded list) when the server starts:

- ``manifest``: the SHA-256 (hex) of every static file by its URL path, and of every rendered page. Served at
  ``/client-manifest`` and printed by ``alcove manifest``; ``alcove verify-client`` compares what a server serves
  with it.
- ``sri(path)``: ``sha256-<base64>`` for an ``integrity`` attribute (scripts, stylesheets).
- ``import_map``: ``{"integrity": {url: sri}}`` for every ES module, so the browser refuses any module whose bytes
  differ (Chromium applies import-map integrity to the document's module graph). It is an inline script, allowed
  by its own hash in the pages' CSP (``script_hash``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

STATIC_PREFIX = "/static/"
MANIFEST_PATH = "/client-manifest"


def release_version() -> str:
    try:
        return version("alcove")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without an install
        return "unknown"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sri_of_hex(hex_digest: str) -> str:
    return "sha256-" + base64.b64encode(bytes.fromhex(hex_digest)).decode()


def static_files(root: Path) -> dict[str, str]:
    """``{"/static/<relative path>": sha256 hex}`` for every file under ``root`` (sorted, any depth)."""
    found: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # not served (editor and OS droppings)
        found[STATIC_PREFIX + rel] = sha256_hex(path.read_bytes())
    return found


@dataclass
class ClientRelease:
    """The hashes of one release's client code (computed once; the files do not change while serving)."""

    files: dict[str, str]
    pages: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, static_root: Path) -> ClientRelease:
        return cls(static_files(static_root))

    def sri(self, url: str) -> str:
        """The ``integrity`` value of a static file; a file that is not part of the release is an error."""
        if url not in self.files:
            raise ValueError(f"{url} is not a file of this release's web/static")
        return sri_of_hex(self.files[url])

    @property
    def import_map(self) -> str:
        """The import map's JSON text: integrity for every ES module of the release (the e2ee worker included)."""
        modules = {url: self.sri(url) for url in self.files if url.endswith((".js", ".mjs"))}
        return json.dumps({"integrity": modules}, separators=(",", ":"), sort_keys=True)

    @property
    def script_hash(self) -> str:
        """The CSP source that allows exactly the inline import map."""
        return "'sha256-" + base64.b64encode(hashlib.sha256(self.import_map.encode()).digest()).decode() + "'"

    def manifest(self) -> dict[str, Any]:
        return {"alcove": release_version(), "algorithm": "sha256", "files": dict(self.files),
                "pages": dict(self.pages)}


def compare(expected: dict[str, str], served: dict[str, str | None]) -> list[tuple[str, str]]:
    """``(path, why)`` for every path whose served hash differs from the release's (sorted by path)."""
    problems: list[tuple[str, str]] = []
    for path in sorted(set(expected) | set(served)):
        want, got = expected.get(path), served.get(path)
        if want is None:
            problems.append((path, "served but not part of this release"))
        elif got is None:
            problems.append((path, "missing on the server"))
        elif got != want:
            problems.append((path, "differs from this release"))
    return problems
