"""Admission is the therapist's act alone: a resume credential signed before the seat last left the session
(sent back, left, removed, declined, grace expired) never admits again — in the same room, in a room rebuilt after
it emptied, and after a restart (the edge hands the persisted generation in with the ticket)."""

from __future__ import annotations

import pytest

from signaling import messages as m
from signaling.effects import SeatGeneration
from signaling.policy import Timing
from signaling.room import ResumeClaims
from signaling.rooms import Rooms

from .core_fixtures import T0, C, FakeServices, admission, hello, new_room, sent, spec

NOW = T0 + 60
UNTIL = T0 + 50 * 60 + 900  # the client token's expiry (core_fixtures.admission)


class RecordingServices(FakeServices):
    """Keeps every resume credential the room signed, as the client would."""

    def __init__(self) -> None:
        super().__init__()
        self.signed: list[ResumeClaims] = []

    def sign_resume(self, claims: ResumeClaims, now: float) -> str:
        self.signed.append(claims)
        return super().sign_resume(claims, now)


def admitted_credential(services: RecordingServices) -> ResumeClaims:
    return [c for c in services.signed if c.pid == "p2" and c.admitted][-1]


def room_with_admitted_client(services: RecordingServices):  # type: ignore[no-untyped-def]
    from signaling.room import Room

    room = Room(spec(), Timing(), services)
    room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(room.spec, "client", "t1"), hello("Alex"), NOW)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    return room


def replay(room, claims: ResumeClaims, generation: int = 0, conn: str = "c1x", now: float = NOW + 5):  # type: ignore[no-untyped-def]
    adm = admission(room.spec, "client", "t1", claims)
    if generation:
        import dataclasses

        adm = dataclasses.replace(adm, generation=generation)
    out = room.connect(C(conn), adm, m.Hello(v=1, ticket="t"), now)
    return sent(out, conn)


def test_credentials_carry_the_seat_generation_and_a_send_back_bumps_it_with_an_exact_effect() -> None:
    services = RecordingServices()
    room = room_with_admitted_client(services)
    assert admitted_credential(services).generation == 0
    out = room.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 1)
    assert [e for e in out if isinstance(e, SeatGeneration)] == [SeatGeneration(room.room_id, "t1", 1, UNTIL)]
    assert services.signed[-1] == ResumeClaims(room_id="r1", pid="p2", token_id="t1", role="client", admitted=False,
                                               name="Alex", generation=1)


def test_sent_back_client_replaying_its_admitted_credential_waits() -> None:
    services = RecordingServices()
    room = room_with_admitted_client(services)
    old = admitted_credential(services)
    room.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 1)
    room.receive(C("c1"), m.Leave(), NOW + 2)
    welcome = replay(room, old)[0]
    assert isinstance(welcome, m.Welcome) and welcome.status == "waiting"
    assert [p.status for p in room.clients()] == ["waiting"]


def test_after_a_new_admit_the_new_credential_readmits_but_the_old_one_does_not() -> None:
    services = RecordingServices()
    room = room_with_admitted_client(services)
    old = admitted_credential(services)
    room.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 1)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW + 2)
    new = admitted_credential(services)
    assert new.generation == 1
    room.receive(C("c1"), m.Leave(), NOW + 3)
    assert replay(room, old)[0].status == "waiting"  # type: ignore[union-attr]
    room.receive(C("c1x"), m.Leave(), NOW + 4)
    # a restart (fresh room) whose edge persisted generation 2 (the two ways out above)
    fresh = new_room()
    assert replay(fresh, new, generation=2)[0].status == "waiting"  # type: ignore[union-attr]


@pytest.mark.parametrize("way_out", ["sent-back", "left", "removed", "grace", "therapist-away"])
def test_no_way_out_is_undone_by_an_old_credential_after_a_restart(way_out: str) -> None:
    services = RecordingServices()
    room = room_with_admitted_client(services)
    old = admitted_credential(services)
    if way_out == "sent-back":
        out = room.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 1)
    elif way_out == "left":
        out = room.receive(C("c1"), m.Leave(), NOW + 1)
    elif way_out == "removed":
        out = room.receive(C("ct"), m.Remove(pid="p2"), NOW + 1)
    elif way_out == "grace":
        room.disconnect(C("c1"), NOW + 1)
        out = room.tick(NOW + 1 + Timing().grace)
    else:
        # the therapist steps out: the room waits the grace, then everyone goes back to waiting
        assert not any(isinstance(e, SeatGeneration) for e in room.receive(C("ct"), m.Leave(), NOW + 1))
        out = room.tick(NOW + 1 + Timing().grace)
    bumps = [e for e in out if isinstance(e, SeatGeneration)]
    assert bumps == [SeatGeneration(room.room_id, "t1", 1, UNTIL)]
    # The server restarts: a fresh room, the therapist back, the edge hands in the persisted generation.
    fresh = new_room()
    fresh.connect(C("ct2"), admission(fresh.spec, "therapist", "tt"), hello(), NOW + 200)
    welcome = replay(fresh, old, generation=bumps[0].generation, now=NOW + 201)[0]
    assert isinstance(welcome, m.Welcome) and welcome.status == "waiting"
    assert fresh.clients("admitted") == []


def test_a_blocked_declined_seat_never_held_an_admitted_credential_and_its_token_is_refused() -> None:
    room = new_room()
    room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(room.spec, "client", "t1"), hello("Alex"), NOW)
    out = room.receive(C("ct"), m.Decline(pid="p2", block=True), NOW)
    assert not any(isinstance(e, SeatGeneration) for e in out)  # it was never admitted: nothing to retire
    forged = ResumeClaims(room_id="r1", pid="p2", token_id="t1", role="client", admitted=True, name="Alex")
    assert replay(room, forged)[0] == m.Error(code="token-revoked", message="this link was revoked")


def test_a_restart_without_any_way_out_still_resumes_the_admitted_client() -> None:
    services = RecordingServices()
    room_with_admitted_client(services)
    fresh = new_room()
    welcome = replay(fresh, admitted_credential(services))[0]
    assert isinstance(welcome, m.Welcome) and welcome.status == "admitted"


def test_a_credential_without_a_generation_never_admits() -> None:
    claims = ResumeClaims(room_id="r1", pid="p2", token_id="t1", role="client", admitted=True, name="Alex",
                          generation=-1)
    assert replay(new_room(), claims)[0].status == "waiting"  # type: ignore[union-attr]


def test_the_registry_remembers_generations_when_an_emptied_room_is_dropped() -> None:
    services = RecordingServices()
    rooms = Rooms(Timing(), services)
    s = spec()
    rooms.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    rooms.connect(C("c1"), admission(s, "client", "t1"), hello("Alex"), NOW)
    rooms.receive(C("ct"), m.Admit(pid="p2"), NOW)
    old = admitted_credential(services)
    rooms.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 1)
    rooms.receive(C("c1"), m.Leave(), NOW + 2)
    rooms.receive(C("ct"), m.Leave(), NOW + 3)
    assert rooms.rooms == {}  # everyone left: the room is dropped
    out = rooms.connect(C("c1x"), admission(s, "client", "t1", old), m.Hello(v=1, ticket="t"), NOW + 4).effects
    assert sent(out, "c1x")[0].status == "waiting"  # type: ignore[union-attr]
    rooms.tick(UNTIL + 1)
    assert "t1" not in rooms.generations  # forgotten once the token expired
