"""An asyncio client for the Alcove signaling protocol (docs/protocol.md), for tests, the probe and benchmarks.

    sc = await SignalingClient.open("http://127.0.0.1:8080", token, name="Alex")
    sc.welcome            # the decoded ``welcome``
    await sc.send(m.Admit(pid=...))
    msg = await sc.next("queue", timeout=5)

Every server message is decoded with :func:`signaling.messages.decode_server` (the schema is never redefined
here). Messages are kept in an inbox; :meth:`SignalingClient.next` takes the oldest one of the wanted types
and leaves the others for later calls, so nothing is lost between two waits. ``listeners`` are called for
every message as it arrives (the participant and the benchmark use them; they may turn the inbox off).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from signaling import messages as m

__all__ = [
    "JoinRefused",
    "SignalingClient",
    "SignalingClosed",
    "SignalingError",
    "base_of",
    "token_of",
]


class SignalingError(Exception):
    """Base of the client's errors."""


class JoinRefused(SignalingError):
    """The server refused to let us in: an HTTP error from ``POST /api/session`` or an ``error`` after hello.

    ``status`` is the HTTP status (``None`` when the refusal came on the websocket), ``close_code`` the
    websocket close code when known, ``opens_at`` the opening time of a ``room-not-open`` answer.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None, close_code: int | None = None,
                 opens_at: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.close_code = close_code
        self.opens_at = opens_at


class SignalingClosed(SignalingError):
    """The websocket is closed and no buffered message matches."""

    def __init__(self, close_code: int | None) -> None:
        super().__init__(f"the signaling socket is closed (code {close_code})")
        self.close_code = close_code


def token_of(link_or_token: str) -> str:
    """The room token of a link (``…/j/#t=<token>``) or the token itself."""
    if "#" in link_or_token:
        fragment = link_or_token.split("#", 1)[1]
        for part in fragment.split("&"):
            if part.startswith("t="):
                return part[2:]
        raise ValueError("the link has no #t= token")
    return link_or_token


def base_of(url: str) -> str:
    """``scheme://host:port`` of a URL (a link or a server address)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an absolute URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


Listener = Callable[[m.ServerMessage], None]
IntroSource = str | Callable[[dict[str, Any]], str | None] | None
"""A ``hello.intro``: a string, ``None``, or a function of the ``POST /api/session`` answer."""


class SignalingClient:
    """One signaling session: ticket exchange, websocket, hello/welcome, then a stream of messages."""

    def __init__(self, base_url: str, token: str, http: aiohttp.ClientSession, *, insecure: bool = False) -> None:
        self.base_url = base_of(base_url)
        self.token = token
        self.insecure = insecure
        self._http = http
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: m.Welcome | None = None
        self.session_info: dict[str, Any] | None = None
        """The ``POST /api/session`` answer (minus the ticket)."""
        self.resume: str | None = None
        """The latest resume credential (from ``welcome`` or ``resume``)."""
        self.listeners: list[Listener] = []
        self.keep_inbox = True
        self.received = 0
        self.close_code: int | None = None
        self.join_seconds: float | None = None
        """Time from ``POST /api/session`` to ``welcome``."""
        self._inbox: deque[m.ServerMessage] = deque()
        self._arrived = asyncio.Event()
        self._closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(cls, base_url: str, token: str, name: str | None = None, resume: str | None = None,
                   intro: IntroSource = None, *, insecure: bool = False, timeout: float = 10.0,
                   listeners: Iterable[Listener] = (), keep_inbox: bool = True) -> SignalingClient:
        """``POST /api/session``, websocket ``/ws`` with the right ``Origin``, ``hello``, wait for ``welcome``.

        Raises :class:`JoinRefused` if the server refuses. ``insecure=True`` skips TLS verification (the dev
        self-signed certificate on loopback only).
        """
        self = cls.create(base_url, token, insecure=insecure)
        self.listeners.extend(listeners)
        self.keep_inbox = keep_inbox
        await self.connect(name, resume, intro, timeout=timeout)
        return self

    @classmethod
    def create(cls, base_url: str, token: str, *, insecure: bool = False) -> SignalingClient:
        """A client that is not connected yet (call :meth:`connect`); :meth:`open` does both."""
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False if insecure else True))
        return cls(base_url, token_of(token), http, insecure=insecure)

    async def connect(self, name: str | None = None, resume: str | None = None, intro: IntroSource = None, *,
                      timeout: float = 10.0) -> None:
        """Ticket exchange, websocket, hello and welcome; closes itself and raises on failure.

        ``intro`` may be a callable: it is called with the ``POST /api/session`` answer (role, room) once the
        ticket is in hand, and returns the ``hello.intro`` (the E2EE intro needs the room id).
        """
        if resume is not None:
            self.resume = resume  # still held if this attempt fails: the next reconnect resumes with it
        try:
            await asyncio.wait_for(self._join(name, resume, intro), timeout)
        except BaseException:
            await self.close()
            raise

    async def _join(self, name: str | None, resume: str | None, intro: IntroSource) -> None:
        started = time.perf_counter()
        async with self._http.post(f"{self.base_url}/api/session", json={"token": self.token}) as r:
            try:
                body = await r.json(content_type=None)
            except (aiohttp.ContentTypeError, ValueError):
                body = None
            if r.status != 200 or not isinstance(body, dict) or "ticket" not in body:
                err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
                raise JoinRefused(str(err.get("code", f"http-{r.status}")), str(err.get("message", "")),
                                  status=r.status, opens_at=err.get("opens_at"))
        ticket = body.pop("ticket")
        self.session_info = body
        if callable(intro):
            intro = intro(body)
        ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self._ws = await self._http.ws_connect(ws_url, headers={"Origin": self.base_url}, autoping=True,
                                               max_msg_size=4 * m.MAX_MESSAGE_BYTES)
        await self._ws.send_bytes(m.encode(m.Hello(v=m.PROTOCOL_VERSION, ticket=ticket, name=name,
                                                   resume=resume, intro=intro)))
        first = await self._ws.receive()
        if first.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise JoinRefused("closed", f"the socket closed before welcome ({first.type.name})",
                              close_code=self._ws.close_code)
        msg = m.decode_server(first.data)
        if isinstance(msg, m.Error):
            closing = await self._ws.receive()
            code = self._ws.close_code if closing.type != aiohttp.WSMsgType.TEXT else None
            raise JoinRefused(msg.code, msg.message, close_code=code)
        if not isinstance(msg, m.Welcome):
            raise JoinRefused("protocol", f"expected welcome, got {type(msg).__name__}")
        self.join_seconds = time.perf_counter() - started
        self.welcome = msg
        self.resume = msg.resume
        for listener in list(self.listeners):
            listener(msg)
        self._reader = asyncio.create_task(self._read(), name="alcove-signaling-reader")

    # ------------------------------------------------------------------ properties

    @property
    def pid(self) -> str:
        assert self.welcome is not None
        return self.welcome.pid

    @property
    def role(self) -> str:
        assert self.welcome is not None
        return self.welcome.role

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # ------------------------------------------------------------------ traffic

    async def _read(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for raw in ws:
                if raw.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    continue
                try:
                    msg = m.decode_server(raw.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # a newer server's message: ignore it
                self.received += 1
                if isinstance(msg, m.Welcome):
                    self.resume = msg.resume
                elif isinstance(msg, m.Resume):
                    self.resume = msg.credential
                for listener in list(self.listeners):
                    listener(msg)
                if self.keep_inbox:
                    self._inbox.append(msg)
                self._arrived.set()
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.close_code = ws.close_code
            self._closed.set()
            self._arrived.set()

    async def send(self, msg: m.ClientMessage | bytes | str) -> None:
        """Send one message (a client struct, or raw bytes/text for tests of malformed input)."""
        if self._ws is None or self._ws.closed:
            raise SignalingClosed(self.close_code)
        if isinstance(msg, str):
            await self._ws.send_str(msg)
        elif isinstance(msg, bytes):
            await self._ws.send_str(msg.decode())
        else:
            await self._ws.send_str(m.encode(msg).decode())

    def _take(self, types: frozenset[str] | None) -> m.ServerMessage | None:
        for i, msg in enumerate(self._inbox):
            if types is None or m.tag_of(msg) in types:
                del self._inbox[i]
                return msg
        return None

    async def next(self, types: str | Iterable[str] | None = None, timeout: float = 5.0) -> Any:
        """The oldest buffered message of one of ``types`` (``None``: any), waiting up to ``timeout`` s.

        Raises ``TimeoutError``, or :class:`SignalingClosed` when the socket closed and nothing matches.
        """
        wanted = None if types is None else frozenset([types] if isinstance(types, str) else types)
        deadline = time.monotonic() + timeout
        while True:
            found = self._take(wanted)
            if found is not None:
                return found
            if self._closed.is_set():
                raise SignalingClosed(self.close_code)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {sorted(wanted) if wanted else 'message'} within {timeout} s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def pending(self) -> list[m.ServerMessage]:
        """The buffered messages (not taken by :meth:`next`), oldest first."""
        return list(self._inbox)

    def drain(self) -> list[m.ServerMessage]:
        """Take every buffered message."""
        out = list(self._inbox)
        self._inbox.clear()
        return out

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the socket; the close code."""
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_code

    # ------------------------------------------------------------------ closing

    async def drop(self) -> None:
        """Close the websocket without ``leave`` (the server keeps the seat for the grace)."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def close(self) -> None:
        """Close the websocket and the HTTP session; idempotent."""
        with contextlib.suppress(Exception):
            await self.drop()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._closed.set()
        if not self._http.closed:
            await self._http.close()
