"""The application factory: the one place that wires things."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from . import api, headers, jsondecode, pages, ws
from .config import Config
from .hub import Hub
from .metrics import Metrics
from .state import HUB, THROTTLES
from .throttle import Throttles
from .tokens import KeyRing, Revocations, Tokens


def create_app(config: Config, *, clock: Callable[[], float] = time.time) -> web.Application:
    app = web.Application(client_max_size=jsondecode.MAX_BYTES)
    ring = KeyRing.load_or_create(config.data_dir)
    revocations = Revocations(config.data_dir / "revocations.json" if config.data_dir else None)
    tokens = Tokens(ring, revocations, config.timing.early_join, config.timing.overrun_cap)
    hub = Hub(config, tokens, Metrics(), clock)
    app[HUB] = hub
    app[THROTTLES] = Throttles(config.limits)
    headers.setup(app)  # every response, errors included

    app.router.add_post("/api/session", api.session)
    app.router.add_post("/api/invites", api.invites)
    app.router.add_post("/api/echo/ice", api.echo_ice)
    app.router.add_post("/api/echo/offer", api.echo_offer)
    app.router.add_post("/api/admin/token", api.admin_token)
    app.router.add_post("/api/rooms", api.rooms_create)
    app.router.add_get("/api/rooms", api.rooms_list)
    app.router.add_delete("/api/rooms/{room_id}", api.rooms_delete)
    app.router.add_delete("/api/rooms/{room_id}/links/{n}", api.link_revoke)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/ws", ws.websocket)

    pages.setup(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        cluster = None
        if config.redis_url:
            from .cluster.cluster import Cluster  # imports redis: only when several instances share one

            hub.cluster = cluster = Cluster(config.redis_url.reveal(), hub, lease=config.redis_lease)
            hub.links.store = cluster.store
            await cluster.start()
        yield
        if cluster is not None:
            await cluster.stop()
        await hub.stop()

    async def close_sockets(app: web.Application) -> None:
        """Close every websocket (1001) before aiohttp waits for their handlers to finish."""
        await hub.close_sockets()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_sockets)
    return app
