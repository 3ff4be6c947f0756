"""The one client of the admin API's ``POST /api/rooms`` (the CLI's ``room create``, the probe, benchmarks)."""

from __future__ import annotations

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
