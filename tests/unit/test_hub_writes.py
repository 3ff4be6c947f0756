"""The hub's write path: a message goes straight to a socket whose transport can take it, waits in the socket's
outbox only under backpressure, keeps its order across the switch, and a consumer that stays behind is closed
with 4009 (slow-consumer)."""

from __future__ import annotations

import asyncio

import pytest

from server.config import Config
from server.hub import DIRECT_WRITE_LIMIT, OUTBOX_LIMIT, Hub
from server.metrics import Metrics
from server.tokens import KeyRing, Revocations, Tokens
from signaling import messages as m
from signaling.effects import Send


class FakeTransport:
    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeSocket:
    """Records what is written; while ``blocked`` is set, a send writes and then waits (a transport drain)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.blocked: asyncio.Future[None] | None = None
        self.closed = False
        self.close_code: int | None = None

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        if self.blocked is not None:
            await self.blocked

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed, self.close_code = True, code


def make_hub() -> Hub:
    config = Config()
    tokens = Tokens(KeyRing.load_or_create(None), Revocations(None), config.timing.early_join,
                    config.timing.overrun_cap)
    return Hub(config, tokens, Metrics(), clock=lambda: 1_000_000.0)


def error(i: int) -> m.Error:
    return m.Error(code="rate-limited", message=f"n{i}")


def numbers(ws: FakeSocket) -> list[int]:
    errors = [m.decode_server(s) for s in ws.sent]
    return [int(str(e.message)[1:]) for e in errors if isinstance(e, m.Error)]


async def idle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_socket_that_can_take_it_is_written_at_once_without_a_task() -> None:
    hub, ws, transport = make_hub(), FakeSocket(), FakeTransport()
    c = hub.register(ws, transport)  # type: ignore[arg-type]
    hub.perform([Send(c.conn, error(i)) for i in range(10)])
    assert numbers(ws) == list(range(10))  # written inside perform(): no task, no wake-up
    assert c.writer is None and not c.outbox


async def test_backpressure_queues_in_order_and_then_writes_straight_again() -> None:
    hub, ws, transport = make_hub(), FakeSocket(), FakeTransport()
    c = hub.register(ws, transport)  # type: ignore[arg-type]
    hub.perform([Send(c.conn, error(0))])
    transport.buffered = DIRECT_WRITE_LIMIT + 1  # the peer reads slowly
    hub.perform([Send(c.conn, error(i)) for i in (1, 2, 3)])
    assert numbers(ws) == [0] and len(c.outbox) == 3 and c.writer is not None
    transport.buffered = 0
    hub.perform([Send(c.conn, error(4))])  # queued behind the others, never ahead of them
    await idle()
    assert numbers(ws) == [0, 1, 2, 3, 4]
    assert c.writer is None and not c.outbox
    hub.perform([Send(c.conn, error(5))])
    assert numbers(ws) == [0, 1, 2, 3, 4, 5]


async def test_a_send_that_has_to_wait_holds_the_later_ones_behind_it() -> None:
    hub, ws, transport = make_hub(), FakeSocket(), FakeTransport()
    c = hub.register(ws, transport)  # type: ignore[arg-type]
    ws.blocked = asyncio.get_running_loop().create_future()
    hub.perform([Send(c.conn, error(0)), Send(c.conn, error(1)), Send(c.conn, error(2))])
    assert numbers(ws) == [0] and len(c.outbox) == 2  # 0 is written, its drain is pending
    await idle()
    assert numbers(ws) == [0]
    ws.blocked.set_result(None)
    ws.blocked = None
    await idle()
    assert numbers(ws) == [0, 1, 2] and c.writer is None


async def test_a_consumer_that_stays_behind_is_closed_as_slow() -> None:
    hub, ws, transport = make_hub(), FakeSocket(), FakeTransport()
    c = hub.register(ws, transport)  # type: ignore[arg-type]
    ws.blocked = asyncio.get_running_loop().create_future()  # it never drains
    hub.perform([Send(c.conn, error(i)) for i in range(OUTBOX_LIMIT + 1)])
    assert not c.closing and len(c.outbox) == OUTBOX_LIMIT
    hub.perform([Send(c.conn, error(OUTBOX_LIMIT + 1))])
    assert c.closing and c.close_code == 4009 and not c.outbox  # what waited is dropped
    hub.perform([Send(c.conn, error(0))])
    assert not c.outbox  # nothing more is queued for it
    ws.blocked.set_result(None)
    await idle()
    assert ws.closed and ws.close_code == 4009
    assert hub.metrics.errors.labels(code="slow-consumer")._value.get() == 1
    await hub.unregister(c)
    assert c.conn not in hub.connections


async def test_without_a_transport_every_message_goes_through_the_writer() -> None:
    hub, ws = make_hub(), FakeSocket()
    c = hub.register(ws)  # type: ignore[arg-type]
    hub.perform([Send(c.conn, error(i)) for i in range(3)])
    assert not ws.sent and c.writer is not None
    await idle()
    assert numbers(ws) == [0, 1, 2]
    hub.close(c.conn, 4000, "bye")
    await idle()
    assert ws.closed and ws.close_code == 4000


async def test_a_message_to_several_sockets_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub()
    sockets = [FakeSocket() for _ in range(3)]
    conns = [hub.register(ws, FakeTransport()).conn for ws in sockets]  # type: ignore[arg-type]
    encoded: list[m.ServerMessage] = []
    encode = m.encode

    def counting(message: m.ServerMessage) -> bytes:
        encoded.append(message)
        return encode(message)

    monkeypatch.setattr(m, "encode", counting)
    everyone, other = error(1), error(2)
    hub.perform([Send(conn, everyone) for conn in conns] + [Send(conns[0], other), Send(conns[1], everyone)])
    assert encoded == [everyone, other, everyone]  # once for the three in a row, again after another message
    assert [numbers(ws) for ws in sockets] == [[1, 2], [1, 1], [1]]
