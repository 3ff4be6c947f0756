"""The core's ``app`` message: who may send end-to-end encrypted app messages to whom (docs/protocol.md)."""

from __future__ import annotations

import pytest

from signaling import messages as m
from signaling.effects import Send
from signaling.errors import SignalingError

from .core_fixtures import T0, C, admission, hello, new_room, spec

NOW = T0 + 60


def group_of_three():  # type: ignore[no-untyped-def]
    """Therapist p1 (ct), admitted clients p2 (c1) and p3 (c2), waiting client p4 (c3)."""
    room = new_room(spec("group", seats=3))
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW)
    room.connect(C("c2"), admission(s, "client", "t2"), hello("B"), NOW)
    room.connect(C("c3"), admission(s, "client", "t3"), hello("W"), NOW)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    room.receive(C("ct"), m.Admit(pid="p3"), NOW)
    return room


def errors(effects: list[object]) -> list[str]:
    return [e.message.code for e in effects if isinstance(e, Send) and isinstance(e.message, m.Error)]


def test_to_everyone_reaches_every_other_admitted_participant_and_never_the_waiting_room() -> None:
    room = group_of_three()
    out = room.receive(C("c1"), m.App(to=None, data="blob"), NOW)
    assert out == [Send(C("ct"), m.PeerApp(from_="p2", data="blob")), Send(C("c2"), m.PeerApp(from_="p2", data="blob"))]
    out = room.receive(C("ct"), m.App(to=None, data="blob"), NOW)
    assert out == [Send(C("c1"), m.PeerApp(from_="p1", data="blob")), Send(C("c2"), m.PeerApp(from_="p1", data="blob"))]


def test_the_therapist_sends_privately_to_one_admitted_client_only() -> None:
    room = group_of_three()
    assert room.receive(C("ct"), m.App(to="p3", data="x"), NOW) == [Send(C("c2"), m.PeerApp(from_="p1", data="x"))]
    assert errors(room.receive(C("ct"), m.App(to="p4", data="x"), NOW)) == ["unknown-peer"]  # waiting
    assert errors(room.receive(C("ct"), m.App(to="p9", data="x"), NOW)) == ["unknown-peer"]


def test_a_client_sends_privately_to_the_therapist_only_never_to_another_client() -> None:
    room = group_of_three()
    assert room.receive(C("c1"), m.App(to="p1", data="x"), NOW) == [Send(C("ct"), m.PeerApp(from_="p2", data="x"))]
    assert errors(room.receive(C("c1"), m.App(to="p3", data="x"), NOW)) == ["not-allowed"]
    assert errors(room.receive(C("c1"), m.App(to="p2", data="x"), NOW)) == ["not-allowed"]  # itself
    assert errors(room.receive(C("c1"), m.App(to="p4", data="x"), NOW)) == ["not-allowed"]


def test_a_waiting_client_can_neither_send_nor_receive() -> None:
    room = group_of_three()
    assert errors(room.receive(C("c3"), m.App(to=None, data="x"), NOW)) == ["not-allowed"]
    out = room.receive(C("ct"), m.App(to=None, data="x"), NOW)
    assert C("c3") not in [e.conn for e in out if isinstance(e, Send)]


@pytest.mark.parametrize("raw", [
    b'{"type":"app","to":null,"data":""}',
    b'{"type":"app","to":null}',
    b'{"type":"app","data":"x"}',
    b'{"type":"app","to":"not a pid!","data":"x"}',
    b'{"type":"app","to":null,"data":"x","extra":1}',
])
def test_a_malformed_app_message_is_a_typed_error(raw: bytes) -> None:
    with pytest.raises(SignalingError) as err:
        m.decode_client(raw)
    assert err.value.code == "invalid-message"


def test_app_data_is_at_most_16_kib() -> None:
    ok = m.decode_client(b'{"type":"app","to":null,"data":"' + b"a" * 16384 + b'"}')
    assert isinstance(ok, m.App)
    with pytest.raises(SignalingError) as err:
        m.decode_client(b'{"type":"app","to":null,"data":"' + b"a" * 16385 + b'"}')
    assert err.value.code == "invalid-message"
