"""What several instances share through Redis, and how a socket reaches its room's owner.

Redis holds only opaque ids, numbers and sealed blobs, each key with a TTL (``PREFIX`` below):

- ``rev:t:<token id>``, ``rev:r:<room id>``: a revoked link, an ended room (until its tokens expire anyway);
- ``gen:<token id>``: a seat's admission generation (old resume credentials stop admitting);
- ``tk:<hash of ticket>``: a websocket ticket, its admission sealed (AES-GCM) under a key derived from the ticket
  itself, which Redis never sees; taken with GETDEL (single use);
- ``own:<room id>``: the instance that owns the room (a lease, renewed while the room is live);
- ``inst:<instance id>``: an instance's heartbeat;
- ``seat:<hash of a seat id>``, ``adm:<room id>``: short links' seats and the admin's list, sealed
  (:mod:`server.links`), until their room is over.

A socket that lands on an instance that does not own its room is relayed: its messages go to the owner over Redis
pub/sub (channel ``i:<owner>``) and the owner's answers come back on ``i:<edge>``, in batches. The core runs on the
owner only; the one-device-per-link rule therefore holds across instances without a key of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import RedisError

from signaling.effects import ConnId
from signaling.errors import SignalingError
from signaling.room import Admission, ResumeClaims, RoomSpec
from signaling.safety import SafetySettings

from ..links import MemoryStore
from ..logs import log_event
from ..tokens import LEEWAY, TICKET_TTL, new_id
from .common import ANSWER_TIMEOUT, OP_TIMEOUT, ClusterUnavailable

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("alcove")

PREFIX: Final = "alc:"
T = TypeVar("T")

# The room's lease: take it when free (or already ours), renew it; answers the owner.
_CLAIM = """
local o = redis.call('GET', KEYS[1])
if (not o) or o == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return o
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# A number that only grows, with an expiry that only grows (revocations, generations).
_RAISE = """
local old = tonumber(redis.call('GET', KEYS[1]) or '-1')
local new = tonumber(ARGV[1])
if old > new then new = old end
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left > ttl then ttl = left end
redis.call('SET', KEYS[1], new, 'PX', ttl)
return new
"""


def admission_to_json(a: Admission) -> dict[str, Any]:
    return {"spec": dataclasses.asdict(a.spec), "role": a.role, "tok": a.token_id, "exp": a.token_expires,
            "gen": a.generation, "resume": dataclasses.asdict(a.resume) if a.resume else None}


def admission_from_json(d: dict[str, Any]) -> Admission:
    spec = dict(d["spec"])
    safety = SafetySettings(**spec.pop("safety")) if isinstance(spec.get("safety"), dict) else SafetySettings()
    return Admission(spec=RoomSpec(**spec, safety=safety), role=d["role"], token_id=str(d["tok"]),
                     token_expires=float(d["exp"]), generation=int(d["gen"]),
                     resume=ResumeClaims(**d["resume"]) if d.get("resume") else None)


def ticket_key(ticket: str) -> tuple[str, bytes]:
    """The Redis key of a ticket and the key that seals its admission, both from the ticket alone."""
    digest = hashlib.sha256(b"alcove-ticket\0" + ticket.encode()).digest()
    return f"{PREFIX}tk:{digest[:16].hex()}", digest[16:]


class RedisStore:
    """The short links' store (:class:`server.links.Store`) in Redis, written through to this process's memory: after
    Redis came back empty, what this instance wrote is written again (``republish``)."""

    def __init__(self, cluster: Cluster, local: MemoryStore) -> None:
        self.cluster = cluster
        self.local = local

    async def put(self, key: str, blob: bytes, ttl: float) -> None:
        await self.local.put(key, blob, ttl)
        await self.cluster._op(self.cluster.redis.set(PREFIX + key, blob, px=max(1000, int(ttl * 1000))))

    async def get(self, key: str) -> bytes | None:
        value = await self.cluster._op(self.cluster.redis.get(PREFIX + key))
        if isinstance(value, bytes):
            return value
        local = await self.local.get(key)
        if local is None and time.monotonic() - self.cluster.healthy_since < 2 * self.cluster.lease:
            # Redis just came back, perhaps empty, and the instance that made this link may not have written it
            # again yet: retryable, not "this link is not valid" (which a page takes as final).
            raise ClusterUnavailable()
        return local

    async def delete(self, key: str) -> None:
        await self.local.delete(key)
        await self.cluster._op(self.cluster.redis.delete(PREFIX + key))

    async def values(self, prefix: str) -> list[bytes]:
        redis = self.cluster.redis

        async def scan() -> list[Any]:
            keys = [k async for k in redis.scan_iter(match=f"{PREFIX}{prefix}*", count=500)]
            return list(await redis.mget(keys)) if keys else []

        return [v for v in await self.cluster._op(scan()) if isinstance(v, bytes)]

    async def republish(self) -> None:
        now = self.local.clock()
        entries = await self.local.entries()
        async with self.cluster.redis.pipeline(transaction=False) as p:
            for key, (blob, until) in entries.items():
                p.set(PREFIX + key, blob, px=max(1000, int((until - now) * 1000)), nx=True)
            await p.execute()


@dataclasses.dataclass
class Relayed:
    """A socket on this instance whose room another instance owns."""

    room_id: str
    owner: str
    answered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class Cluster:
    def __init__(self, url: str, hub: Hub, lease: float = 6.0, instance: str | None = None) -> None:
        self.hub = hub
        self.me = instance or new_id("i", 6)
        self.lease = lease
        self.redis: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=OP_TIMEOUT, socket_connect_timeout=OP_TIMEOUT, retry_on_timeout=False,
            health_check_interval=2)
        self._claim = self.redis.register_script(_CLAIM)
        self._release = self.redis.register_script(_RELEASE)
        self._raise = self.redis.register_script(_RAISE)
        self.healthy = False
        self.healthy_since = 0.0  # monotonic: when Redis was last found reachable after being out of reach
        self.owned: dict[str, float] = {}  # rooms whose lease we hold -> when we took it (monotonic)
        self.relayed: dict[ConnId, Relayed] = {}  # edge side
        self.remote: dict[ConnId, str] = {}  # owner side: conn -> edge instance
        self._pending: dict[str, tuple[int, float]] = {}  # shared-state writes not yet in Redis: key -> (value, until)
        self._out: dict[str, list[list[Any]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.store = RedisStore(self, MemoryStore(hub.clock))
        self.stats = {"published": 0, "received": 0, "publish_batches": 0}

    def census(self) -> dict[str, object]:
        """Counts only (for /healthz): this instance, rooms it owns, sockets relayed each way."""
        return {"instance": self.me, "redis": self.healthy, "owned": len(self.owned), "relayed": len(self.relayed),
                "remote": len(self.remote)}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        with contextlib.suppress(ClusterUnavailable):
            await self._maintain()
        self._tasks += [asyncio.create_task(self._listen(), name="alcove-cluster-listen"),
                        asyncio.create_task(self._flusher(), name="alcove-cluster-flush"),
                        asyncio.create_task(self._tick_loop(), name="alcove-cluster-tick")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._op(self._drop_all())
        await self.redis.aclose()

    async def _drop_all(self) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            for room_id in self.owned:
                p.evalsha(self._release.sha, 1, f"{PREFIX}own:{room_id}", self.me)
            p.delete(f"{PREFIX}inst:{self.me}")
            await p.execute()

    async def _op(self, aw: Awaitable[T]) -> T:
        """One Redis operation, bounded: a fault or a slow answer is ``ClusterUnavailable``."""
        try:
            return await asyncio.wait_for(aw, OP_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as err:
            self._set_healthy(False)
            raise ClusterUnavailable() from err

    # ------------------------------------------------------------------ shared revocations and generations

    def shared(self, kind: str, ident: str, value: int, until: float) -> None:
        """A revocation (``t``, ``r``) or a seat generation (``gen``) the core decided: to Redis, retried until it lands."""
        key = f"{PREFIX}gen:{ident}" if kind == "gen" else f"{PREFIX}rev:{kind}:{ident}"
        old = self._pending.get(key, (-1, 0.0))
        self._pending[key] = (max(value, old[0]), max(until, old[1]))
        self._wake.set()

    async def settle(self) -> None:
        """Write the revocations decided so far to Redis now: an admin's revoke or delete answers only once every
        instance refuses the link (``ClusterUnavailable`` if Redis cannot take it)."""
        if self._pending:
            await self._op(self._push_pending())

    async def _push_pending(self) -> None:
        if not self._pending:
            return
        pending, now = dict(self._pending), self.hub.clock()
        async with self.redis.pipeline(transaction=False) as p:
            for key, (value, until) in pending.items():
                ttl = max(1, int((until + LEEWAY - now) * 1000))
                p.evalsha(self._raise.sha, 1, key, value, ttl)
            await p.execute()
        for key, entry in pending.items():
            if self._pending.get(key) == entry:
                del self._pending[key]

    async def _republish_links(self) -> None:
        """Write again the short links this instance made (Redis may have come back empty); the first commands after
        a restart of Redis may meet a connection it closed, so a few tries."""
        for attempt in range(5):
            try:
                await asyncio.wait_for(self.store.republish(), OP_TIMEOUT)
                return
            except (RedisError, OSError, TimeoutError):
                await asyncio.sleep(0.2 * (attempt + 1))

    def _republish_all(self) -> None:
        """After Redis came back (perhaps empty): write again every revocation and generation this instance knows."""
        rev = self.hub.tokens.revocations
        for jti, until in rev.tokens.items():
            self.shared("t", jti, 1, until)
        for room_id, until in rev.rooms.items():
            self.shared("r", room_id, 1, until)
        for jti, (gen, until) in rev.seats.items():
            self.shared("gen", jti, gen, until)

    async def refresh(self, token_id: str, room_id: str) -> None:
        """Merge what Redis knows of a link and its room into this instance's revocations."""
        keys = [f"{PREFIX}rev:t:{token_id}", f"{PREFIX}rev:r:{room_id}", f"{PREFIX}gen:{token_id}"]

        async def get() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as p:
                for k in keys:
                    p.get(k)
                    p.pttl(k)
                return await p.execute()

        got = await self._op(get())
        now, rev = self.hub.clock(), self.hub.tokens.revocations
        (tok, tok_ttl, room, room_ttl, gen, gen_ttl) = got
        if tok is not None:
            rev.revoke_token(token_id, now + tok_ttl / 1000 - LEEWAY)
        if room is not None:
            rev.end_room(room_id, now + room_ttl / 1000 - LEEWAY)
        if gen is not None:
            rev.set_generation(token_id, int(gen), now + gen_ttl / 1000 - LEEWAY)

    # ------------------------------------------------------------------ tickets

    async def issue_ticket(self, admission: Admission, now: float) -> str:
        ticket = new_id("w", 24)
        key, seal = ticket_key(ticket)
        nonce = os.urandom(12)
        blob = nonce + AESGCM(seal).encrypt(nonce, json.dumps(admission_to_json(admission)).encode(), key.encode())
        await self._op(self.redis.set(key, blob, px=int(TICKET_TTL * 1000)))
        return ticket

    async def redeem_ticket(self, ticket: str, now: float) -> Admission:
        key, seal = ticket_key(ticket)
        blob = await self._op(self.redis.getdel(key))
        try:
            if not isinstance(blob, bytes) or len(blob) < 13:
                raise ValueError("no ticket")
            admission = admission_from_json(json.loads(AESGCM(seal).decrypt(blob[:12], blob[12:], key.encode())))
        except (ValueError, InvalidTag, KeyError, TypeError):
            raise SignalingError("ticket-invalid", "the ticket is unknown, used or expired") from None
        await self.refresh(admission.token_id, admission.spec.room_id)
        self.hub.tokens.check_revoked(admission)
        return admission

    # ------------------------------------------------------------------ room ownership

    async def owner_for(self, room_id: str) -> str:
        """The room's owner; this instance when the room was free (it takes the lease)."""
        owner = await self._op(self._claim(keys=[f"{PREFIX}own:{room_id}"], args=[self.me, int(self.lease * 1000)]))
        owner = owner.decode() if isinstance(owner, bytes) else str(owner)
        if owner == self.me:
            self.owned.setdefault(room_id, time.monotonic())
        return owner

    async def end_room(self, room_id: str) -> None:
        """An admin ended a room: tell its owner, if another instance holds it."""
        raw = await self._op(self.redis.get(f"{PREFIX}own:{room_id}"))
        owner = raw.decode() if isinstance(raw, bytes) else raw
        if owner is not None and owner != self.me:
            self._send(owner, ["e", room_id])

    # ------------------------------------------------------------------ relaying (edge side)

    def relay_hello(self, conn: ConnId, owner: str, admission: Admission, hello: str) -> Relayed:
        entry = Relayed(admission.spec.room_id, owner)
        self.relayed[conn] = entry
        self._send(owner, ["h", conn, self.me, admission_to_json(admission), hello])
        return entry

    def relay_message(self, conn: ConnId, data: str) -> None:
        entry = self.relayed.get(conn)
        if entry is not None:
            self._send(entry.owner, ["m", conn, data])

    def relay_bye(self, conn: ConnId) -> None:
        entry = self.relayed.pop(conn, None)
        if entry is not None:
            self._send(entry.owner, ["b", conn])

    # ------------------------------------------------------------------ relaying (owner side)

    def to_edge(self, edge: str, conn: ConnId, data: bytes) -> None:
        self._send(edge, ["s", conn, data.decode()])

    def close_on_edge(self, edge: str, conn: ConnId, code: int, reason: str) -> None:
        self._send(edge, ["x", conn, code, reason])

    # ------------------------------------------------------------------ pub/sub

    def _send(self, instance: str, op: list[Any]) -> None:
        self._out.setdefault(instance, []).append(op)
        self._wake.set()

    async def _flusher(self) -> None:
        """One writer, so batches keep their order: everything queued since the last round trip goes in one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            out, self._out = self._out, {}
            try:
                if out:
                    async with self.redis.pipeline(transaction=False) as p:
                        for instance, ops in out.items():
                            p.publish(f"{PREFIX}i:{instance}", json.dumps(ops, separators=(",", ":")))
                        await asyncio.wait_for(p.execute(), OP_TIMEOUT)
                    self.stats["published"] += sum(len(ops) for ops in out.values())
                    self.stats["publish_batches"] += 1
                if self._pending and self.healthy:
                    await asyncio.wait_for(self._push_pending(), OP_TIMEOUT)
            except (RedisError, OSError, TimeoutError):
                self._set_healthy(False)  # relayed sockets are closed: their clients reconnect and resume

    async def _listen(self) -> None:
        channel = f"{PREFIX}i:{self.me}"
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(channel), OP_TIMEOUT)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._handle(json.loads(message["data"]))
            except (RedisError, OSError, TimeoutError):
                self._set_healthy(False)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            except Exception:  # pragma: no cover - a bug must not stop the relay
                log.exception("cluster message failed")
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.5)

    async def _handle(self, ops: list[list[Any]]) -> None:
        hub = self.hub
        for op in ops:
            self.stats["received"] += 1
            kind, arg = op[0], op[1]
            if kind == "s":
                if (entry := self.relayed.get(arg)) is not None:
                    entry.answered.set()
                    hub.deliver_raw(arg, op[2].encode())
            elif kind == "x":
                if (entry := self.relayed.get(arg)) is not None:
                    entry.answered.set()
                    hub.close(arg, int(op[2]), str(op[3]))
            elif kind == "h":
                await self._remote_hello(ConnId(arg), op[2], admission_from_json(op[3]), op[4])
            elif kind == "m":
                if arg in self.remote:
                    hub.receive_raw(arg, op[2])
            elif kind == "b":
                self.remote.pop(arg, None)
                hub.unregister_remote(arg)
            elif kind == "e":
                hub.perform(hub.rooms.end(arg, "admin", hub.clock()))

    async def _remote_hello(self, conn: ConnId, edge: str, admission: Admission, hello: str) -> None:
        try:
            if admission.spec.room_id not in self.owned and await self.owner_for(admission.spec.room_id) != self.me:
                raise ClusterUnavailable()
        except ClusterUnavailable:
            self.close_on_edge(edge, conn, 1001, "owner-moved")
            return
        self.remote[conn] = edge  # until the edge says bye (or is gone), also when the core refused it
        self.hub.connect_remote(conn, edge, admission, hello)

    # ------------------------------------------------------------------ upkeep

    def _set_healthy(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        log_event("cluster-redis", logging.INFO if healthy else logging.WARNING, code="up" if healthy else "down")
        if healthy:
            self.healthy_since = time.monotonic()
            self._republish_all()
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.create_task(self._republish_links(), name="alcove-cluster-links"))
            return
        # Cross-instance sockets cannot work without Redis: their clients reconnect (and resume) once it is back.
        for conn in list(self.relayed):
            self.hub.close(conn, 1001, "unavailable")
        for conn in list(self.remote):
            del self.remote[conn]
            self.hub.unregister_remote(conn)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 4)
            with contextlib.suppress(ClusterUnavailable):
                await self._maintain()

    async def _maintain(self) -> None:
        """Heartbeat, renew the leases of live rooms (take them again after Redis came back empty), release the
        rest; close relayed sockets whose owner changed, forget remote sockets whose edge is gone."""
        live = set(self.hub.rooms.rooms)
        fresh = time.monotonic() - 2 * ANSWER_TIMEOUT
        keep = [r for r in self.owned if r in live or self.owned[r] > fresh]
        drop = [r for r in self.owned if r not in keep]
        rooms = sorted(live | set(keep))
        watched = sorted({e.room_id for e in self.relayed.values()})
        edges = sorted(set(self.remote.values()))
        ttl = int(self.lease * 1000)

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as p:
                p.set(f"{PREFIX}inst:{self.me}", 1, px=ttl)
                for r in rooms:
                    p.evalsha(self._claim.sha, 1, f"{PREFIX}own:{r}", self.me, ttl)
                for r in drop:
                    p.evalsha(self._release.sha, 1, f"{PREFIX}own:{r}", self.me)
                for r in watched:
                    p.get(f"{PREFIX}own:{r}")
                for e in edges:
                    p.exists(f"{PREFIX}inst:{e}")
                return await p.execute()

        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.script_load(_CLAIM), OP_TIMEOUT)  # Redis may have restarted empty
            await asyncio.wait_for(self.redis.script_load(_RELEASE), OP_TIMEOUT)
            await asyncio.wait_for(self.redis.script_load(_RAISE), OP_TIMEOUT)
        got = await self._op(run())
        self._set_healthy(True)
        got = got[1:]
        for r, owner in zip(rooms, got[:len(rooms)], strict=True):
            owner = owner.decode() if isinstance(owner, bytes) else str(owner)
            if owner == self.me:
                self.owned.setdefault(r, time.monotonic())
            else:  # another instance took it (e.g. while we were cut off): hand the room over
                self.owned.pop(r, None)
                for conn in self.hub.rooms.evict(r):
                    self.hub.close(conn, 1001, "owner-moved")
        for r in drop:
            self.owned.pop(r, None)
        got = got[len(rooms) + len(drop):]
        owners = {r: (o.decode() if isinstance(o, bytes) else None) for r, o in zip(watched, got[:len(watched)], strict=True)}
        for conn, entry in list(self.relayed.items()):
            # (a socket relayed while this round trip was under way is checked next time)
            if entry.room_id in owners and owners[entry.room_id] != entry.owner:
                self.hub.close(conn, 1001, "owner-moved")
        alive = dict(zip(edges, got[len(watched):], strict=True))
        for conn, edge in list(self.remote.items()):
            if edge in alive and not alive[edge]:
                del self.remote[conn]
                self.hub.unregister_remote(conn)
        if self._pending:
            self._wake.set()
