"""HTTP API: token → ticket exchange, and the admin's room API (see docs/admin-api.md)."""

from __future__ import annotations

import hmac
import math
import re
import time
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from signaling.effects import RevokeToken, RoomId
from signaling.errors import SignalingError
from signaling.names import clean_name
from signaling.room import RoomSpec, iso
from signaling.safety import SafetySettings

from . import jsondecode, throttle
from .cluster.common import ClusterUnavailable
from .echo import CALL_LIMIT_S, TURN_LIFETIME_S, EchoBusy, EchoUnreachable
from .hub import Hub
from .links import is_seat_id
from .logs import log_event
from .sfu.addressing import UNREACHABLE_MESSAGE
from .state import HUB, THROTTLES
from .tokens import LEEWAY, NotOpenYet, RoomToken, new_id

STATUS = {"token-invalid": 400, "token-revoked": 410, "room-ended": 410, "room-not-open": 425,
          "invalid-message": 400, "not-allowed": 401, "bad-json": 400, "name-invalid": 400}
MAX_DURATION = 4 * 3600
MAX_AHEAD = timedelta(days=400)
ROOM_ID = re.compile(r"r_[A-Za-z0-9_-]{1,62}")  # new_id("r", 9): opaque, URL-safe base64


def unavailable(err: ClusterUnavailable) -> web.Response:
    """Redis (shared by several instances) is out of reach: a clear, retryable refusal that changed nothing."""
    response = error_response(err.code, err.message, status=503)
    response.headers["Retry-After"] = str(err.retry_after)
    return response


def error_response(code: str, message: str, status: int | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status or STATUS.get(code, 400))


async def _json(request: web.Request) -> dict[str, Any]:
    """The body through the one bounded decoder (``server.jsondecode``): 64 KiB, depth and integer limits."""
    if request.content_length is not None and request.content_length > jsondecode.MAX_BYTES:
        raise SignalingError("bad-json", f"the body has at most {jsondecode.MAX_BYTES} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise SignalingError("bad-json", f"the body has at most {jsondecode.MAX_BYTES} bytes") from None
    return jsondecode.decode_body(raw)


def base_url(request: web.Request, hub: Hub) -> str:
    if hub.config.public_url:
        return hub.config.public_url.rstrip("/")
    scheme, host = request.scheme, request.host
    if hub.config.trust_proxy:
        scheme = request.headers.get("X-Forwarded-Proto", scheme)
        host = request.headers.get("X-Forwarded-Host", host)
    return f"{scheme}://{host}"


# ---------------------------------------------------------------- participants


async def room_token(hub: Hub, presented: str) -> str:
    """The room token a link carries: itself, or the token a short link's seat id stands for (``server.links``).
    An unknown seat id (never made, or its room is over) is ``token-invalid``; Redis out of reach is retryable."""
    if not is_seat_id(presented):
        return presented
    token = await hub.links.resolve(presented)
    if token is None:
        raise SignalingError("token-invalid", "this link is not valid")
    return token


async def _token_body(request: web.Request) -> str:
    """The room token of a ``{"token": "…"}`` body (nothing else is accepted), a short link's seat id resolved."""
    body = await _json(request)
    token = body.get("token")
    if not isinstance(token, str) or set(body) - {"token"}:
        raise SignalingError("invalid-message", "send exactly {\"token\": \"…\"}")
    return await room_token(request.app[HUB], token)


async def short_link(hub: Hub, base: str, token: RoomToken, now: float) -> str:
    """A link that fits in a text message: ``<base>/j/#t=<seat id>``, the seat kept until its token expires."""
    seat = await hub.links.new_seat(token.token, token.expires - now + LEEWAY)
    return f"{base}/j/#t={seat}"


async def session(request: web.Request) -> web.Response:
    """Exchange a room token (from the link's fragment) for a single-use websocket ticket."""
    hub = request.app[HUB]
    now = hub.clock()
    try:
        admission = hub.tokens.verify_room_token(await _token_body(request), now)
    except ClusterUnavailable as err:
        return unavailable(err)
    except SignalingError as err:
        extra: dict[str, Any] = {}
        if isinstance(err, NotOpenYet):
            extra["opens_at"] = iso(err.opens_at)
            extra["role"] = err.role  # the too-early page speaks to the therapist or the client
        hub.metrics.error(err.code)
        return error_response(err.code, err.message, **{k: v for k, v in extra.items() if v})
    if (refused := throttle.spend("ticket", request.app[THROTTLES].tickets, admission.token_id, hub.metrics.throttle)):
        return refused
    spec = admission.spec
    if hub.cluster is not None:  # revocations and ended rooms of every instance, and a ticket any instance redeems
        try:
            await hub.cluster.refresh(admission.token_id, spec.room_id)
            hub.tokens.check_revoked(admission)
        except ClusterUnavailable as err:
            return unavailable(err)
        except SignalingError as err:
            hub.metrics.error(err.code)
            return error_response(err.code, err.message)
    if hub.rooms.is_over(spec, now):
        return error_response("room-ended", "this session has ended")
    room = hub.rooms.get(spec.room_id)
    ends_at = room.ends_at if room is not None else spec.ends_at
    if hub.cluster is not None:
        try:
            ticket = await hub.cluster.issue_ticket(admission, now)
        except ClusterUnavailable as err:
            return unavailable(err)
    else:
        ticket = hub.tokens.issue_ticket(admission, now)
    return web.json_response({
        "ticket": ticket,
        "role": admission.role,
        "room": {"id": spec.room_id, "type": spec.type, "opens_at": iso(spec.opens_at(hub.config.timing)),
                 "starts_at": iso(spec.starts_at), "ends_at": iso(ends_at), "host": spec.host or None,
                 "seats": spec.seats, "topology": spec.topology,
                 "safety": {**spec.safety.public(), "numbers": [n.public() for n in hub.config.emergency_numbers]}},
    })


async def invites(request: web.Request) -> web.Response:
    """The therapist's own client links for its room (one per seat), so its console can add `s` and `tk`.

    Authorised by the therapist's room token (the room's host), never by a client's. The links are fresh client
    tokens of the same room; the seat cap and the waiting room hold as for any link.
    """
    hub = request.app[HUB]
    now = hub.clock()
    try:
        admission = hub.tokens.verify_room_token(await _token_body(request), now)
    except ClusterUnavailable as err:
        return unavailable(err)
    except SignalingError as err:
        hub.metrics.error(err.code)
        return error_response(err.code, err.message)
    if admission.role != "therapist":
        return error_response("not-allowed", "only the therapist's link can make invitations", status=403)
    spec = admission.spec
    if (refused := throttle.spend("invite", request.app[THROTTLES].invites, spec.room_id, hub.metrics.throttle)):
        return refused
    base = base_url(request, hub)
    try:
        links = [await short_link(hub, base, hub.tokens.issue_room_token(spec, "client", now), now)
                 for _ in range(spec.seats)]
    except ClusterUnavailable as err:
        return unavailable(err)
    log_event("invites-issued", room=spec.room_id, count=len(links))
    return web.json_response({"room_id": spec.room_id, "client_links": links})


# ---------------------------------------------------------------- pre-join connectivity test (server.echo)

MAX_SDP = 60_000


async def _echo_admission(request: web.Request, allowed: set[str]) -> tuple[dict[str, Any], web.Response | None]:
    """The body of an echo request, or the error to answer: a valid, live link's token, throttled per link."""
    hub = request.app[HUB]
    now = hub.clock()
    try:
        body = await _json(request)
        token = body.get("token")
        if not isinstance(token, str) or set(body) - allowed:
            raise SignalingError("invalid-message", f"send exactly {{{', '.join(sorted(allowed))}}}")
        admission = hub.tokens.verify_room_token(await room_token(hub, token), now)
    except ClusterUnavailable as err:
        return {}, unavailable(err)
    except SignalingError as err:
        hub.metrics.error(err.code)
        return {}, error_response(err.code, err.message)
    if hub.rooms.is_over(admission.spec, now):
        return {}, error_response("room-ended", "this session has ended")
    room = hub.rooms.get(admission.spec.room_id)
    if room is not None and room.is_admitted(admission.token_id):
        # Once in the session, media goes end-to-end encrypted to the others only, never to this echo.
        return {}, error_response("not-allowed", "the connection test is for before the session", status=409)
    refused = throttle.spend("echo", request.app[THROTTLES].echo, admission.token_id, hub.metrics.throttle)
    return body, refused


async def echo_ice(request: web.Request) -> web.Response:
    """The test's own ICE servers: TURN credentials that expire after ``TURN_LIFETIME_S`` seconds (or none)."""
    _, refused = await _echo_admission(request, {"token"})
    if refused is not None:
        return refused
    hub = request.app[HUB]
    return web.json_response({"ice_servers": hub.echo_ice_servers(), "expires_in": TURN_LIFETIME_S,
                              "limit_s": CALL_LIMIT_S})


async def echo_offer(request: web.Request) -> web.Response:
    """Answer an offer with the echo peer, which returns the client's media for ``CALL_LIMIT_S`` seconds."""
    body, refused = await _echo_admission(request, {"token", "sdp"})
    if refused is not None:
        return refused
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not 0 < len(sdp) <= MAX_SDP:
        return error_response("invalid-message", f"sdp is an offer of at most {MAX_SDP} characters")
    hub = request.app[HUB]
    try:
        answer = await hub.echo.answer(sdp)
    except EchoBusy:
        hub.metrics.throttle("echo-busy")
        return error_response("busy", "too many connection tests right now; try again in a minute", status=503)
    except EchoUnreachable:
        return error_response("media-unreachable", UNREACHABLE_MESSAGE, status=503)
    except ValueError as err:
        return error_response("invalid-message", str(err))
    log_event("echo-call")
    return web.json_response({"sdp": answer, "limit_s": CALL_LIMIT_S})


# ---------------------------------------------------------------- admin


def _require_admin(request: web.Request, hub: Hub) -> None:
    """The admin key or an admin token. Failures are throttled per address (429 + Retry-After)."""
    failures = request.app[THROTTLES].admin_failures
    address = throttle.client_address(request, hub.config.trust_proxy)
    if wait := failures.retry_after(address, time.monotonic()):
        hub.metrics.throttle("admin-auth")
        raise web.HTTPTooManyRequests(
            text='{"error":{"code":"rate-limited","message":"too many failed attempts; try again later"}}',
            content_type="application/json", headers={"Retry-After": str(wait)})
    auth = request.headers.get("Authorization", "")
    presented = auth[7:].strip() if auth.startswith("Bearer ") else ""
    key = hub.config.admin_key.reveal()
    if presented and key and hmac.compare_digest(presented.encode(), key.encode()):
        return
    try:
        hub.tokens.verify_admin_token(presented, hub.clock())
    except SignalingError:
        if presented:  # a missing key is no guess
            failures.take(address, time.monotonic())
        raise web.HTTPUnauthorized(text='{"error":{"code":"not-allowed","message":"admin key required"}}',
                                   content_type="application/json", headers={"WWW-Authenticate": "Bearer"}) from None


async def admin_token(request: web.Request) -> web.Response:
    """Trade the admin key for a short-lived admin token (the admin page keeps only the token)."""
    hub = request.app[HUB]
    _require_admin(request, hub)
    return web.json_response({"admin_token": hub.tokens.issue_admin_token(hub.clock())})


def parse_start(value: Any, now: float) -> float:
    if value in (None, "now"):
        return float(math.floor(now))
    if not isinstance(value, str):
        raise SignalingError("invalid-message", "start is 'now' or an ISO-8601 time with a zone")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SignalingError("invalid-message", "start is 'now' or an ISO-8601 time with a zone") from None
    if when.tzinfo is None:
        raise SignalingError("invalid-message", "start needs a time zone (e.g. 2026-11-26T14:00:00+02:00)")
    start = when.timestamp()
    if start > now + MAX_AHEAD.total_seconds():
        raise SignalingError("invalid-message", "start is too far ahead")
    return start


async def create_room(hub: Hub, body: dict[str, Any], base: str) -> dict[str, Any]:
    allowed = {"type", "start", "duration_minutes", "duration_seconds", "clients", "host", "topology",
               "safety_check", "disconnect_plan", "disconnect_wait_minutes"}
    unknown = set(body) - allowed
    if unknown:
        raise SignalingError("invalid-message", f"unknown field(s): {', '.join(sorted(unknown))}")
    kinds = hub.config.kinds
    kind_name = body.get("type")
    if kind_name not in kinds:
        raise SignalingError("invalid-message", f"type is one of {', '.join(kinds)}")
    kind = kinds[kind_name]
    now = hub.clock()
    start = parse_start(body.get("start"), now)
    seconds: Any = kind.minutes * 60
    for field_name, unit in (("duration_seconds", 1), ("duration_minutes", 60)):
        value = body.get(field_name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SignalingError("invalid-message", f"{field_name} is a number")
        seconds = value * unit
        break
    if not 1 <= seconds <= MAX_DURATION:
        raise SignalingError("invalid-message", "the duration is between 1 second and 4 hours")
    clients = body.get("clients", kind.max_clients)
    if isinstance(clients, bool) or not isinstance(clients, int) or not 1 <= clients <= kind.max_clients:
        raise SignalingError("invalid-message", f"a {kind_name} session has 1 to {kind.max_clients} clients")
    host_raw = body.get("host")
    if host_raw is not None and not isinstance(host_raw, str):
        raise SignalingError("invalid-message", "host is a display name")
    host = clean_name(host_raw) if host_raw else ""
    topology = body.get("topology", kind.topology)
    if topology not in ("mesh", "sfu"):
        raise SignalingError("invalid-message", "topology is mesh or sfu")
    safety = SafetySettings.from_request(body)
    end = start + float(seconds)
    if end <= now:
        raise SignalingError("invalid-message", "this session would already be over")
    spec = RoomSpec(room_id=RoomId(new_id("r", 9)), type=kind_name, starts_at=start, ends_at=end, seats=clients,
                    topology=topology, host=host, safety=safety)
    tokens = [hub.tokens.issue_room_token(spec, "therapist", now),
              *(hub.tokens.issue_room_token(spec, "client", now) for _ in range(clients))]
    seats = []
    for token in tokens:
        seat = await hub.links.new_seat(token.token, token.expires - now + LEEWAY)
        seats.append({"role": token.role, "seat": seat, "jti": token.jti, "exp": token.expires, "revoked": False})
    record = {"room_id": spec.room_id, "type": kind_name, "topology": topology, "seats": clients,
              "safety_check": safety.check, "disconnect_plan": safety.plan or None,
              "disconnect_wait_minutes": safety.wait_minutes if safety.plan == "wait" else None,
              "opens_at": spec.opens_at(hub.config.timing), "starts_at": start, "ends_at": end, "links": seats}
    await hub.links.save_room(record, tokens[0].expires - now + LEEWAY)
    log_event("room-created", room=spec.room_id, kind=kind_name, count=clients)
    return room_view(record, base)


def room_view(record: dict[str, Any], base: str) -> dict[str, Any]:
    """A room as the admin API shows it (docs/admin-api.md): the seat ids as short links, nothing else of them."""
    links = [{"n": n, "role": s["role"], "link": f"{base}/j/#t={s['seat']}", "revoked": bool(s["revoked"])}
             for n, s in enumerate(record["links"])]
    return {
        "room_id": record["room_id"],
        "type": record["type"],
        "topology": record["topology"],
        "seats": record["seats"],
        "safety_check": record.get("safety_check", "optional"),
        "disconnect_plan": record.get("disconnect_plan"),
        "disconnect_wait_minutes": record.get("disconnect_wait_minutes"),
        "opens_at": iso(record["opens_at"]),
        "starts_at": iso(record["starts_at"]),
        "ends_at": iso(record["ends_at"]),
        "therapist_link": links[0]["link"],
        "client_links": [x["link"] for x in links[1:]],
        "links": links,
    }


async def rooms_create(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    _require_admin(request, hub)
    address = throttle.client_address(request, hub.config.trust_proxy)
    if (refused := throttle.spend("room", request.app[THROTTLES].rooms, address, hub.metrics.throttle)):
        return refused
    try:
        body = await _json(request)
        result = await create_room(hub, body, base_url(request, hub))
    except ClusterUnavailable as err:
        return unavailable(err)
    except SignalingError as err:
        return error_response(err.code, err.message)
    return web.json_response(result, status=201)


async def rooms_delete(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    _require_admin(request, hub)
    room_id = request.match_info["room_id"]
    if ROOM_ID.fullmatch(room_id) is None:
        return error_response("invalid-message", "not a room id", status=404)
    now = hub.clock()
    room = hub.rooms.get(room_id)
    until = now + MAX_DURATION + hub.config.timing.overrun_cap + hub.config.timing.early_join + 400 * 86400
    if hub.cluster is not None and room is None:  # the room may live on another instance: its owner ends it
        try:
            await hub.cluster.end_room(room_id)
        except ClusterUnavailable as err:
            return unavailable(err)
    hub.perform(hub.rooms.end(room_id, "admin", now, until=None if room else until))
    try:
        if hub.cluster is not None:
            await hub.cluster.settle()
        await hub.links.forget_room(room_id)
    except ClusterUnavailable as err:
        return unavailable(err)
    log_event("room-deleted", room=room_id)
    return web.json_response({"room_id": room_id, "ended": True})


async def rooms_list(request: web.Request) -> web.Response:
    """The admin's list: every session not yet over, soonest first, with its links (docs/admin-api.md)."""
    hub = request.app[HUB]
    _require_admin(request, hub)
    now = hub.clock()
    try:
        records = await hub.links.rooms()
    except ClusterUnavailable as err:
        return unavailable(err)
    ended = hub.tokens.revocations.rooms

    def ends_at(record: dict[str, Any]) -> float:
        # an extended session ends later than planned: the room held here knows (elsewhere, up to the overrun cap)
        room = hub.rooms.get(record["room_id"])
        if room is not None:
            return float(room.ends_at)
        return float(record["ends_at"]) + (hub.config.timing.overrun_cap if hub.cluster is not None else 0.0)

    live = sorted((r for r in records if ends_at(r) > now and r["room_id"] not in ended),
                  key=lambda r: (r["starts_at"], r["room_id"]))
    base = base_url(request, hub)
    return web.json_response({"rooms": [room_view(r, base) for r in live]})


async def link_revoke(request: web.Request) -> web.Response:
    """Revoke one link of a room (its number in the room's ``links``): refused from then on, on every instance."""
    hub = request.app[HUB]
    _require_admin(request, hub)
    room_id, n = request.match_info["room_id"], request.match_info["n"]
    if ROOM_ID.fullmatch(room_id) is None or not n.isdigit() or len(n) > 3:
        return error_response("invalid-message", "no such link", status=404)
    now = hub.clock()
    try:
        record = await hub.links.room(room_id)
        if record is None or int(n) >= len(record["links"]):
            return error_response("invalid-message", "no such link", status=404)
        seat = record["links"][int(n)]
        hub.perform([RevokeToken(RoomId(room_id), str(seat["jti"]), float(seat["exp"]))])
        if hub.cluster is not None:
            await hub.cluster.settle()
        if not seat["revoked"]:
            seat["revoked"] = True
            await hub.links.save_room(record, float(seat["exp"]) - now + LEEWAY)
    except ClusterUnavailable as err:
        return unavailable(err)
    log_event("link-revoked", room=room_id)
    return web.json_response({"room_id": room_id, "n": int(n), "revoked": True})


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    media: dict[str, object] = {"reachable": hub.media_unreachable is None}
    if hub.media_unreachable is not None:
        media.update(reason=hub.media_unreachable, message=UNREACHABLE_MESSAGE)
    body: dict[str, object] = {"ok": True, "rooms": hub.rooms.live_count(), "media": media}
    if hub.cluster is not None:
        body["cluster"] = hub.cluster.census()
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.update_gauges()
    if hub.media is not None:
        stats = await hub.media.stats(within=1.0)
        hub.metrics.sfu_decoded_frames.set(sum(int(w.get("decoded_frames", 0)) for w in stats.values()))
        hub.metrics.sfu_forwarded_packets.set(sum(int(w.get("forwarded_packets", 0)) for w in stats.values()))
        hub.metrics.sfu_worker_deaths.set(hub.media.worker_deaths)
    body, content_type = hub.metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})
