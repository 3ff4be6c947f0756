"""The one client of the admin API's ``POST /api/rooms`` (the CLI's ``room create``, the probe, benchmarks),
and the therapist's key code an admin adds to the client links it made, on its own side."""

from __future__ import annotations

import base64
import re
import ssl
from typing import Any

import aiohttp


class RoomNotCreated(RuntimeError):
    """The server refused ``POST /api/rooms``: ``status`` and its JSON ``answer``."""

    def __init__(self, status: int, answer: Any) -> None:
        super().__init__(f"POST /api/rooms answered {status}: {answer}")
        self.status, self.answer = status, answer

    @property
    def code(self) -> str:
        error = self.answer.get("error", {}) if isinstance(self.answer, dict) else {}
        return str(error.get("code", self.status))

    @property
    def reason(self) -> str:
        error = self.answer.get("error", {}) if isinstance(self.answer, dict) else {}
        return str(error.get("message", ""))


async def create_room(http: aiohttp.ClientSession, server: str, admin_key: str, body: dict[str, Any], *,
                      ssl_context: ssl.SSLContext | bool = True) -> dict[str, Any]:
    """Create a session with the admin key; its links and times (the 201 answer), or :class:`RoomNotCreated`."""
    url = server.rstrip("/") + "/api/rooms"
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {admin_key}"}, ssl=ssl_context) as r:
        data: dict[str, Any] = await r.json(content_type=None)
        if r.status != 201:
            raise RoomNotCreated(r.status, data)
        return data


KEY_CODE_BYTES = 16
"""The therapist's key code is the links' ``tk``: the first 16 bytes of SHA-256 of the therapist's identity key,
base64url without padding (22 characters), shown once in the therapist's console (docs/security.md §3)."""


def parse_key_code(text: str) -> str:
    """The therapist's key code in its canonical form (white space removed); ``ValueError`` if it is not one."""
    code = "".join(text.split())
    if not re.fullmatch(r"[A-Za-z0-9_-]{22}", code):
        raise ValueError("a therapist's key code has 22 characters: letters, digits, - and _")
    raw = base64.urlsafe_b64decode(code + "==")
    if len(raw) != KEY_CODE_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != code:
        raise ValueError("not a therapist's key code")
    return code


def with_key_code(link: str, code: str) -> str:
    """A client link with the therapist's key code as ``tk`` in its fragment, added here: the fragment never
    reaches the server, so neither does the code. ``ValueError`` if ``link`` is not a session link."""
    base, sep, fragment = link.partition("#")
    params = [p for p in fragment.split("&") if p and not p.startswith("tk=")]
    if not sep or not any(p.startswith("t=") and len(p) > 2 for p in params):
        raise ValueError("not a session link")
    return f"{base}#{'&'.join(params)}&tk={parse_key_code(code)}"
