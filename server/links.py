"""Short links and the admin's list of upcoming sessions (docs/admin-api.md, docs/security.md §3).

A short link carries an opaque **seat id** in its fragment (``#t=<22 characters>``, 16 random bytes): no name, no
claim, nothing but a handle. The server resolves it to the seat's signed room token at the ticket exchange, so a
seat id is exactly as strong (one device, revocable, the room's window) as the token it stands for, and it is gone
when its room is over (each record expires then).

What is kept, in memory or in Redis when several instances share one (``ALCOVE_REDIS_URL``), is sealed:

- ``seat:<hash of the seat id>``: the seat's room token, sealed (AES-GCM) under a key derived from the seat id, which
  the store never sees (as websocket tickets are);
- ``adm:<room id>``: the admin's record of a room (type, times, seat count, its seat ids and which are revoked; no
  name), sealed under a key derived from the admin key, so the list reads only where the admin key is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .tokens import write_private

SEAT_BYTES: Final = 16
"""128 bits: the seat id is a bearer handle, as hard to guess as a 128-bit key."""
SEAT_ID: Final = re.compile(r"[A-Za-z0-9_-]{22}")


class Store(Protocol):
    """Opaque blobs under string keys, each with a lifetime (seconds)."""

    async def put(self, key: str, blob: bytes, ttl: float) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def delete(self, key: str) -> None: ...
    async def values(self, prefix: str) -> list[bytes]: ...


class MemoryStore:
    """This process alone: a dict whose entries expire by the hub's clock; with a ``path`` (the data directory), kept
    there too (sealed blobs and times only), so links made for next week survive a restart.

    The file is a journal, one JSON line per change (``{"k", "b", "u"}`` put, ``{"k", "d"}`` delete), appended and
    flushed before the change is answered, and rewritten with only the live entries once it holds many more lines
    than entries: a room created costs a few appended lines, not a rewrite of every link (which made creating
    rooms quadratic). A file in the former layout (one JSON object) is read the same."""

    PRUNE_EVERY: Final = 60.0
    """Seconds between walks that drop expired entries (``get`` never returns one meanwhile)."""

    def __init__(self, clock: Callable[[], float], path: Path | None = None) -> None:
        self.clock = clock
        self.path = path
        self._data: dict[str, tuple[bytes, float]] = {}
        self._lines = 0
        self._next_prune = 0.0
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self._replay(json.loads(line))
            self._compact()

    def _replay(self, entry: dict[str, Any]) -> None:
        if "k" not in entry:  # the former layout: key -> [blob, until]
            self._data.update({str(k): (base64.b64decode(v[0]), float(v[1])) for k, v in entry.items()})
        elif entry.get("d"):
            self._data.pop(str(entry["k"]), None)
        else:
            self._data[str(entry["k"])] = (base64.b64decode(entry["b"]), float(entry["u"]))

    def _prune(self) -> None:
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + self.PRUNE_EVERY
        self._data = {k: v for k, v in self._data.items() if v[1] > now}

    def _compact(self) -> None:
        """The file rewritten with the live entries alone (atomically)."""
        if self.path is None:
            return
        now = self.clock()
        self._data = {k: v for k, v in self._data.items() if v[1] > now}
        write_private(self.path, "".join(self._line(k, v) for k, v in self._data.items()))
        self._lines = len(self._data)

    @staticmethod
    def _line(key: str, value: tuple[bytes, float] | None) -> str:
        entry: dict[str, Any] = ({"k": key, "d": 1} if value is None else
                                 {"k": key, "b": base64.b64encode(value[0]).decode(), "u": value[1]})
        return json.dumps(entry, separators=(",", ":")) + "\n"

    def _append(self, key: str, value: tuple[bytes, float] | None) -> None:
        if self.path is None:
            return
        if self._lines > 2 * len(self._data) + 64:
            self._compact()
            return
        if not self.path.exists():
            self._compact()
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(self._line(key, value))
        self._lines += 1

    async def put(self, key: str, blob: bytes, ttl: float) -> None:
        self._prune()
        self._data[key] = (blob, self.clock() + max(ttl, 1.0))
        self._append(key, self._data[key])

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        return entry[0] if entry is not None and entry[1] > self.clock() else None

    async def delete(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self._append(key, None)

    async def values(self, prefix: str) -> list[bytes]:
        now = self.clock()
        return [v[0] for k, v in self._data.items() if k.startswith(prefix) and v[1] > now]

    async def entries(self) -> dict[str, tuple[bytes, float]]:
        """Every live entry: key -> (blob, until)."""
        now = self.clock()
        return {k: v for k, v in self._data.items() if v[1] > now}


def _seal(key: bytes, aad: str, value: dict[str, Any]) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, json.dumps(value, separators=(",", ":")).encode(), aad.encode())


def _open(key: bytes, aad: str, blob: bytes | None) -> dict[str, Any] | None:
    if not isinstance(blob, bytes) or len(blob) < 13:
        return None
    try:
        value = json.loads(AESGCM(key).decrypt(blob[:12], blob[12:], aad.encode()))
    except (InvalidTag, ValueError):
        return None
    return value if isinstance(value, dict) else None


def seat_keys(seat_id: str) -> tuple[str, bytes]:
    """The store key of a seat id and the key that seals its token, both from the seat id alone."""
    digest = hashlib.sha256(b"alcove-seat\0" + seat_id.encode()).digest()
    return f"seat:{digest[:16].hex()}", digest[16:]


def new_seat_id() -> str:
    return secrets.token_urlsafe(SEAT_BYTES)


def is_seat_id(text: str) -> bool:
    """A seat id (22 characters of base64url) rather than a room token (a JWT, with dots, hundreds long)."""
    return SEAT_ID.fullmatch(text) is not None


class Links:
    def __init__(self, store: Store, admin_key: str) -> None:
        self.store = store
        # Without an admin key nobody reads the list anyway; a random key keeps it sealed in this process.
        ikm = admin_key.encode() if admin_key else os.urandom(32)
        self._list_key = HKDF(hashes.SHA256(), 32, b"alcove-admin-list", b"v1").derive(ikm)

    # ---------------------------------------------------------------- seats

    async def new_seat(self, token: str, ttl: float) -> str:
        """A fresh seat id for a room token, kept for ``ttl`` seconds (until the token would expire anyway)."""
        seat_id = new_seat_id()
        key, seal = seat_keys(seat_id)
        await self.store.put(key, _seal(seal, key, {"token": token}), ttl)
        return seat_id

    async def resolve(self, seat_id: str) -> str | None:
        """The room token a seat id stands for, or None (unknown, or its room is over)."""
        key, seal = seat_keys(seat_id)
        value = _open(seal, key, await self.store.get(key))
        token = value.get("token") if value else None
        return token if isinstance(token, str) else None

    # ---------------------------------------------------------------- the admin's list

    async def save_room(self, record: dict[str, Any], ttl: float) -> None:
        key = f"adm:{record['room_id']}"
        await self.store.put(key, _seal(self._list_key, "adm", record), ttl)

    async def room(self, room_id: str) -> dict[str, Any] | None:
        return _open(self._list_key, "adm", await self.store.get(f"adm:{room_id}"))

    async def forget_room(self, room_id: str) -> None:
        await self.store.delete(f"adm:{room_id}")

    async def rooms(self) -> list[dict[str, Any]]:
        """Every room the list holds (those not yet expired), in no order."""
        found = [_open(self._list_key, "adm", blob) for blob in await self.store.values("adm:")]
        return [r for r in found if r is not None]
