"""Typed application state keys (one place)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .hub import Hub
    from .throttle import Throttles

HUB: web.AppKey[Hub] = web.AppKey("hub")
THROTTLES: web.AppKey[Throttles] = web.AppKey("throttles")
