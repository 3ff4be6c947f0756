"""The room core, synchronously: exact effect lists, no loop, no sockets, time passed in."""

from __future__ import annotations

import json

import pytest

from signaling import messages as m
from signaling.effects import Close, Effect, RevokeToken, RoomEnded, SeatGeneration, Send
from signaling.errors import SignalingError
from signaling.policy import Timing
from signaling.room import ResumeClaims, RoomSpec
from signaling.rooms import Rooms

from .core_fixtures import T0, C, FakeServices, admission, hello, new_room, sent, spec, types

NOW = T0 + 60


def quiet(effects: list[Effect]) -> list[Effect]:
    """Without the periodic resume-credential refresh (tested on its own)."""
    return [e for e in effects if not (isinstance(e, Send) and isinstance(e.message, m.Resume))]


def therapist_and_client(room_spec: RoomSpec | None = None):  # type: ignore[no-untyped-def]
    room = new_room(room_spec)
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(s, "client", "t1"), hello("Alex"), NOW)
    return room


def test_therapist_join_gets_welcome_queue_roster_and_ice_servers() -> None:
    room = new_room()
    effects = room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW)
    assert effects == [
        Send(C("ct"), m.Welcome(v=1, pid="p1", role="therapist", status="admitted", room=room.info(),
                                therapist="present", position=None, resume="R:p1:1")),
        Send(C("ct"), m.Queue(waiting=[])),
        Send(C("ct"), m.Roster(participants=[m.RosterEntry(pid="p1", role="therapist", name="Dr. Pop",
                                                           connected=True)])),
        Send(C("ct"), m.IceServers(ice_servers=[], expires_at=None)),
    ]


def test_client_waits_and_the_therapist_sees_it_in_the_queue() -> None:
    room = new_room()
    room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW)
    effects = room.connect(C("c1"), admission(room.spec, "client", "t1"), hello("  Alex\u202e\u200b "), NOW)
    assert effects == [
        Send(C("c1"), m.Welcome(v=1, pid="p2", role="client", status="waiting", room=room.info(),
                                therapist="present", position=1, resume="R:p2:0")),
        Send(C("ct"), m.Queue(waiting=[m.QueueEntry(pid="p2", name="Alex", since=m_iso(NOW), connected=True,
                                                    intro=None)])),
        Send(C("c1"), m.Waiting(position=1, therapist="present")),
    ]


def m_iso(t: float) -> str:
    from signaling.room import iso

    return iso(t)


def test_nobody_is_admitted_automatically_when_the_therapist_arrives_late() -> None:
    room = new_room(spec("family", seats=3))
    room.connect(C("c1"), admission(room.spec, "client", "t1"), hello("A"), NOW)
    room.connect(C("c2"), admission(room.spec, "client", "t2"), hello("B"), NOW + 1)
    effects = room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW + 2)
    assert [p.status for p in room.clients()] == ["waiting", "waiting"]
    assert sent(effects, "c1") == [m.Therapist(status="present"), m.Waiting(position=1, therapist="present")]
    assert sent(effects, "c2") == [m.Therapist(status="present"), m.Waiting(position=2, therapist="present")]


def test_admit_sends_admitted_resume_ice_and_roster_to_both() -> None:
    room = therapist_and_client()
    effects = room.receive(C("ct"), m.Admit(pid="p2", grant="g"), NOW + 5)
    roster = m.Roster(participants=[
        m.RosterEntry(pid="p1", role="therapist", name="Dr. Pop", connected=True),
        m.RosterEntry(pid="p2", role="client", name="Alex", connected=True)])
    assert effects == [
        Send(C("c1"), m.Admitted(grant="g")),
        Send(C("c1"), m.Resume(credential="R:p2:1")),
        Send(C("c1"), m.IceServers(ice_servers=[], expires_at=None)),
        Send(C("ct"), roster),
        Send(C("c1"), roster),
        Send(C("ct"), m.Queue(waiting=[])),
    ]


def test_a_client_cannot_admit_and_nothing_changes() -> None:
    room = therapist_and_client()
    effects = room.receive(C("c1"), m.Admit(pid="p2"), NOW)
    assert effects == [Send(C("c1"), m.Error(code="not-allowed", message="only the therapist can do this",
                                             ref="admit"))]
    assert room.members["p2"].status == "waiting"  # type: ignore[index]


def test_waiting_client_can_reach_nobody_and_nobody_can_reach_it() -> None:
    room = therapist_and_client()
    out = room.receive(C("c1"), m.Offer(to="p1", sdp="v=0"), NOW)
    assert types(out, "c1") == ["error"] and types(out, "ct") == []
    out = room.receive(C("ct"), m.Offer(to="p2", sdp="v=0"), NOW)
    assert sent(out, "ct")[0] == m.Error(code="unknown-peer", message="no such participant in the session",
                                         ref="offer")
    assert types(out, "c1") == []
    out = room.receive(C("ct"), m.Key(to="p2", data="k"), NOW)
    assert types(out, "c1") == [] and types(out, "ct") == ["error"]


def test_relay_between_admitted_stamps_from() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    assert room.receive(C("c1"), m.Offer(to="p1", sdp="v=0", sig="s"), NOW) == [
        Send(C("ct"), m.PeerOffer(from_="p2", sdp="v=0", sig="s"))]
    assert room.receive(C("ct"), m.Candidate(to="p2", candidate=None), NOW) == [
        Send(C("c1"), m.PeerCandidate(from_="p1", candidate=None))]


def test_decline_closes_the_client_and_leaves_its_link_usable() -> None:
    room = therapist_and_client()
    effects = room.receive(C("ct"), m.Decline(pid="p2", message="  Not   today "), NOW)
    assert effects == [
        Send(C("c1"), m.Declined(message="Not today", blocked=False)),
        Close(C("c1"), 4010, "declined"),
        Send(C("ct"), m.Queue(waiting=[])),
    ]
    assert room.revoked == set() and "p2" not in room.members
    # the same link knocks again later: back in the waiting room, as a new arrival
    again = room.connect(C("c9"), admission(room.spec, "client", "t1"), hello("Alex"), NOW + 60)
    welcome = sent(again, "c9")[0]
    assert isinstance(welcome, m.Welcome) and welcome.status == "waiting"
    assert [w.name for w in sent(again, "ct")[-1].waiting] == ["Alex"]


def test_decline_with_block_closes_the_client_and_revokes_its_token() -> None:
    room = therapist_and_client()
    effects = room.receive(C("ct"), m.Decline(pid="p2", message="   ", block=True), NOW)
    assert effects == [
        Send(C("c1"), m.Declined(message=None, blocked=True)),
        Close(C("c1"), 4010, "declined"),
        RevokeToken(room.room_id, "t1", room.spec.ends_at + 900),
        Send(C("ct"), m.Queue(waiting=[])),
    ]
    again = room.connect(C("c9"), admission(room.spec, "client", "t1"), hello("Alex"), NOW)
    assert again[-1] == Close(C("c9"), 4003, "token-revoked")


def test_decline_and_remove_refuse_a_message_over_280_characters_and_change_nothing() -> None:
    room = therapist_and_client()
    for bad in ({"type": "decline", "pid": "p2", "message": "x" * 281}, {"type": "remove", "pid": "p2", "block": "yes"}):
        with pytest.raises(SignalingError) as err:
            m.decode_client(json.dumps(bad))
        assert err.value.code == "invalid-message"
    assert room.clients("waiting")[0].pid == "p2" and room.revoked == set()


def test_send_back_to_waiting_and_readmit() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    effects = room.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 10)
    assert sent(effects, "c1") == [m.Waiting(position=1, therapist="present", reason="sent-back"),
                                   m.Resume(credential="R:p2:0")]
    assert sent(effects, "ct")[0] == m.Roster(participants=[
        m.RosterEntry(pid="p1", role="therapist", name="Dr. Pop", connected=True)])
    assert room.members["p2"].status == "waiting"  # type: ignore[index]
    assert types(room.receive(C("ct"), m.Admit(pid="p2"), NOW + 20), "c1")[0] == "admitted"


def test_the_cap_is_enforced_on_admission() -> None:
    room = new_room(spec("couple", seats=2))
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    for i in (1, 2, 3):
        room.connect(C(f"c{i}"), admission(s, "client", f"t{i}"), hello(f"N{i}"), NOW + i)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    room.receive(C("ct"), m.Admit(pid="p3"), NOW)
    out = room.receive(C("ct"), m.Admit(pid="p4"), NOW)
    assert sent(out) == [m.Error(code="room-full", message="every seat of this session is taken", ref="admit")]
    assert room.receive(C("ct"), m.AdmitAll(), NOW) == []  # the seats are taken: admit-all admits nobody
    assert room.clients("waiting")[0].pid == "p4"
    single = therapist_and_client()
    assert single.receive(C("ct"), m.AdmitAll(), NOW) == [Send(C("ct"), m.Error(
        code="not-allowed", message="admit all is for couple, family and group sessions", ref="admit-all"))]


def test_admit_all_takes_the_oldest_up_to_the_seats() -> None:
    room = new_room(spec("family", seats=2))
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    for i in (1, 2, 3):
        room.connect(C(f"c{i}"), admission(s, "client", f"t{i}"), hello(f"N{i}"), NOW + i)
    room.receive(C("ct"), m.AdmitAll(), NOW + 10)
    assert [(p.name, p.status) for p in room.clients()] == [
        ("N3", "waiting"), ("N1", "admitted"), ("N2", "admitted")]


def test_too_early_and_too_late() -> None:
    room = new_room()
    early = room.connect(C("c1"), admission(room.spec, "client", "t1"), hello("A"), T0 - 16 * 60)
    assert early[-1] == Close(C("c1"), 4004, "room-not-open")
    late = room.connect(C("c2"), admission(room.spec, "client", "t2"), hello("A"), room.spec.ends_at)
    assert late[-1] == Close(C("c2"), 4005, "room-ended")
    assert room.is_empty()


def test_bad_names_are_refused() -> None:
    room = new_room()
    for bad in ("", "   ", "\u202e\u200b", "x" * 65):
        out = room.connect(C("c1"), admission(room.spec, "client", "t1"), hello(bad), NOW)
        assert sent(out)[0].code == "name-invalid"  # type: ignore[union-attr]
    assert room.is_empty()


def test_warnings_at_10_5_1_then_hard_end_closes_everyone() -> None:
    room = therapist_and_client()
    end = room.spec.ends_at
    assert quiet(room.tick(end - 11 * 60)) == []
    assert sent(quiet(room.tick(end - 10 * 60)), "c1") == [m.Warning(minutes=10, ends_at=m_iso(end))]
    assert quiet(room.tick(end - 9 * 60)) == []
    assert sent(quiet(room.tick(end - 5 * 60)), "ct") == [m.Warning(minutes=5, ends_at=m_iso(end))]
    assert sent(quiet(room.tick(end - 60)), "ct") == [m.Warning(minutes=1, ends_at=m_iso(end))]
    effects = quiet(room.tick(end))
    assert effects == [
        Send(C("ct"), m.SessionEnded(reason="time")), Close(C("ct"), 1000, "session-ended"),
        Send(C("c1"), m.SessionEnded(reason="time")), Close(C("c1"), 1000, "session-ended"),
        RoomEnded(room.room_id, "time", end + 900),
    ]
    assert room.is_empty() and quiet(room.tick(end + 1)) == []


def test_extend_in_steps_up_to_the_cap_and_warnings_come_again() -> None:
    room = therapist_and_client()
    end = room.spec.ends_at
    quiet(room.tick(end - 5 * 60))
    out = room.receive(C("ct"), m.Extend(minutes=10), end - 5 * 60)
    assert sent(out, "c1") == [m.Time(ends_at=m_iso(end + 600), extended_minutes=10, overrun_left_minutes=5)]
    assert sent(quiet(room.tick(end - 60 * 5 + 1)), "c1") == []
    assert sent(quiet(room.tick(end + 5 * 60)), "c1") == [m.Warning(minutes=5, ends_at=m_iso(end + 600))]
    room.receive(C("ct"), m.Extend(minutes=5), end)
    out = room.receive(C("ct"), m.Extend(minutes=5), end)
    assert sent(out) == [m.Error(code="extend-limit", message="at most 0 more minutes can be added", ref="extend")]
    assert room.ends_at == end + 15 * 60


def test_therapist_drop_locks_then_returns_clients_to_waiting_after_grace() -> None:
    room = therapist_and_client()
    room.connect(C("c2"), admission(room.spec, "client", "t2"), hello("B"), NOW)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    out = room.disconnect(C("ct"), NOW + 1)
    assert sent(out, "c1") == [m.Therapist(status="reconnecting"), m.Roster(participants=[
        m.RosterEntry(pid="p1", role="therapist", name="Dr. Pop", connected=False),
        m.RosterEntry(pid="p2", role="client", name="Alex", connected=True)])]
    assert room.locked
    assert quiet(room.tick(NOW + 100)) == []
    out = quiet(room.tick(NOW + 121))
    assert sent(out, "c1")[0] == m.Waiting(position=2, therapist="absent", reason="therapist-away")
    assert [p.status for p in room.clients()] == ["waiting", "waiting"]


def test_therapist_return_with_resume_restores_host_without_admission() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    room.disconnect(C("ct"), NOW + 1)
    resume = ResumeClaims(room_id="r1", pid="p1", token_id="tt", role="therapist", admitted=True, name="Dr. Pop")
    out = room.connect(C("ct2"), admission(room.spec, "therapist", "tt", resume), hello(), NOW + 30)
    assert sent(out, "ct2")[0].status == "admitted"  # type: ignore[union-attr]
    assert sent(out, "c1")[0] == m.Therapist(status="present")
    assert room.members["p2"].status == "admitted" and not room.locked  # type: ignore[index]


def test_second_device_is_refused_and_never_displaces_the_first() -> None:
    room = therapist_and_client()
    out = room.connect(C("c1b"), admission(room.spec, "client", "t1"), hello("Alex"), NOW)
    assert out == [Send(C("c1b"), m.Error(code="device-in-use", message="this link is in use on another device")),
                   Close(C("c1b"), 4007, "device-in-use")]
    assert room.members["p2"].conn == "c1"  # type: ignore[index]
    room.disconnect(C("c1"), NOW + 1)  # even while the first device is reconnecting
    out = room.connect(C("c1c"), admission(room.spec, "client", "t1"), hello("Alex"), NOW + 2)
    assert out[-1] == Close(C("c1c"), 4007, "device-in-use")


def test_client_resume_within_grace_returns_to_the_room() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    room.disconnect(C("c1"), NOW + 1)
    resume = ResumeClaims(room_id="r1", pid="p2", token_id="t1", role="client", admitted=True, name="Alex")
    out = room.connect(C("c1b"), admission(room.spec, "client", "t1", resume), hello("Alex"), NOW + 60)
    assert sent(out, "c1b")[0].status == "admitted"  # type: ignore[union-attr]


def test_client_gone_past_grace_frees_the_seat_and_must_wait_again() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    room.disconnect(C("c1"), NOW + 1)
    quiet(room.tick(NOW + 122))
    assert "p2" not in room.members
    out = room.connect(C("c1b"), admission(room.spec, "client", "t1"), hello("Alex"), NOW + 130)
    assert sent(out, "c1b")[0].status == "waiting"  # type: ignore[union-attr]


def test_resume_after_a_restart_rebuilds_the_member_from_the_credential() -> None:
    rooms = Rooms(Timing(), FakeServices())
    s = spec()
    resume = ResumeClaims(room_id="r1", pid="p7", token_id="t1", role="client", admitted=True, name="Alex")
    rooms.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    out = rooms.connect(C("c1"), admission(s, "client", "t1", resume), m.Hello(v=1, ticket="t"), NOW).effects
    welcome = sent(out, "c1")[0]
    assert isinstance(welcome, m.Welcome) and welcome.pid == "p7" and welcome.status == "admitted"


def test_remove_updates_roster_and_leaves_the_link_usable() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    out = room.receive(C("ct"), m.Remove(pid="p2", message="We will talk on Thursday."), NOW)
    assert out[:3] == [Send(C("c1"), m.Removed(message="We will talk on Thursday.", blocked=False)),
                       SeatGeneration(room.room_id, "t1", 1, room.spec.ends_at + 900),
                       Close(C("c1"), 4011, "removed")]
    assert not any(isinstance(e, RevokeToken) for e in out) and room.revoked == set()
    roster = sent(out, "ct")[0]
    assert isinstance(roster, m.Roster) and [p.pid for p in roster.participants] == ["p1"]
    # back later with the same link: waiting, never admitted without the therapist
    again = room.connect(C("c9"), admission(room.spec, "client", "t1"), hello("Alex"), NOW + 60)
    welcome = sent(again, "c9")[0]
    assert isinstance(welcome, m.Welcome) and welcome.status == "waiting"


def test_remove_with_block_revokes_and_updates_roster() -> None:
    room = therapist_and_client()
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    out = room.receive(C("ct"), m.Remove(pid="p2", block=True), NOW)
    assert out[:4] == [Send(C("c1"), m.Removed(message=None, blocked=True)),
                       SeatGeneration(room.room_id, "t1", 1, room.spec.ends_at + 900),
                       Close(C("c1"), 4011, "removed"), RevokeToken(room.room_id, "t1", room.spec.ends_at + 900)]
    again = room.connect(C("c9"), admission(room.spec, "client", "t1"), hello("Alex"), NOW)
    assert again[-1] == Close(C("c9"), 4003, "token-revoked")


def test_end_by_therapist() -> None:
    room = therapist_and_client()
    out = room.receive(C("ct"), m.End(), NOW)
    assert sent(out, "c1") == [m.SessionEnded(reason="therapist")]
    assert any(isinstance(e, RoomEnded) for e in out)


def test_registry_refuses_tokens_of_an_ended_room() -> None:
    rooms = Rooms(Timing(), FakeServices())
    s = spec()
    rooms.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    rooms.receive(C("ct"), m.End(), NOW)
    out = rooms.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW + 1).effects
    assert out[-1] == Close(C("c1"), 4005, "room-ended")
    assert rooms.rooms == {} and rooms.conn_room == {}


def test_key_messages_go_therapist_to_clients_and_clients_to_therapist_only() -> None:
    room = new_room(spec("couple", seats=2))
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW)
    room.connect(C("c2"), admission(s, "client", "t2"), hello("B"), NOW)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    room.receive(C("ct"), m.Admit(pid="p3"), NOW)
    out = room.receive(C("ct"), m.Key(to=None, data="epoch"), NOW)
    assert out == [Send(C("c1"), m.PeerKey(from_="p1", data="epoch")), Send(C("c2"), m.PeerKey(from_="p1", data="epoch"))]
    assert room.receive(C("c1"), m.Key(to=None, data="ack"), NOW) == [Send(C("ct"), m.PeerKey(from_="p2", data="ack"))]
    assert types(room.receive(C("c1"), m.Key(to="p3", data="x"), NOW), "c2") == []


def test_resume_credentials_are_refreshed_every_half_grace_less_a_spread() -> None:
    from signaling.room import resign_offset

    room = therapist_and_client()
    due = NOW + 60 - resign_offset("p2", 120)  # between a quarter and half the grace (tests/unit/test_resign_spread.py)
    assert NOW + 30 < due <= NOW + 60
    assert sent(room.tick(due - 0.01), "c1") == []
    assert sent(room.tick(due), "c1") == [m.Resume(credential="R:p2:0")]


class TurnServices(FakeServices):
    def ice_servers(self, pid: str, now: float, ends_at: float) -> tuple[list[dict[str, object]], float | None]:
        return [{"urls": ["turn:127.0.0.1:3478"], "username": f"{int(now + 3600)}:{pid}", "credential": "x"}], now + 3600


def test_turn_credentials_only_after_admission_and_refreshed_before_expiry() -> None:
    from signaling.room import Room

    room = Room(spec("individual", seats=1, minutes=240), Timing(), TurnServices())
    room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW)
    waiting = room.connect(C("c1"), admission(room.spec, "client", "t1"), hello("A"), NOW)
    assert "ice-servers" not in types(waiting, "c1")
    admitted = room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    assert "ice-servers" in types(admitted, "c1")
    assert "ice-servers" not in types(quiet(room.tick(NOW + 2900)), "c1")
    refreshed = [msg for msg in sent(room.tick(NOW + 3000), "c1") if isinstance(msg, m.IceServers)]
    assert refreshed and refreshed[0].ice_servers[0]["username"] == f"{int(NOW + 3000 + 3600)}:p2"
    back = room.receive(C("ct"), m.SendToWaiting(pid="p2"), NOW + 3100)
    assert "ice-servers" not in types(back, "c1")
    assert "ice-servers" not in types(room.tick(NOW + 10_000), "c1")


def test_after_a_restart_a_resuming_client_waits_for_the_therapist_for_the_grace_only() -> None:
    room = new_room()
    resume = ResumeClaims(room_id="r1", pid="p7", token_id="t1", role="client", admitted=True, name="Alex")
    out = room.connect(C("c1"), admission(room.spec, "client", "t1", resume), m.Hello(v=1, ticket="t"), NOW)
    welcome = sent(out, "c1")[0]
    assert isinstance(welcome, m.Welcome) and (welcome.status, welcome.therapist) == ("admitted", "reconnecting")
    out = quiet(room.tick(NOW + 120))
    assert sent(out, "c1") == [m.Waiting(position=1, therapist="absent", reason="therapist-away"),
                               m.Therapist(status="absent")]


def test_the_clients_connection_test_result_reaches_the_therapist_as_sent() -> None:
    room = new_room()
    room.connect(C("ct"), admission(room.spec, "therapist", "tt"), hello(), NOW)
    effects = room.connect(C("c1"), admission(room.spec, "client", "t1"),
                           m.Hello(v=1, ticket="tk", name="Alex", check="relay"), NOW)
    [queue] = [e.message for e in effects if isinstance(e, Send) and isinstance(e.message, m.Queue)]
    assert [(q.name, q.check) for q in queue.waiting] == [("Alex", "relay")]
    try:
        m.decode_client(b'{"type":"hello","v":1,"ticket":"tk","name":"Alex","check":"great"}')
    except Exception as err:
        assert getattr(err, "code", None) == "invalid-message"
    else:
        raise AssertionError("an unknown check result was accepted")


def test_media_state_goes_to_the_other_admitted_participants_only() -> None:
    room = therapist_and_client()
    s = room.spec
    room.connect(C("c2"), admission(s, "client", "t2"), hello("Sam"), NOW)
    waiting = room.receive(C("c2"), m.MediaState(video="paused", quality="weak"), NOW)
    assert [type(e.message) for e in waiting if isinstance(e, Send)] == [m.Error]
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)
    effects = room.receive(C("c1"), m.MediaState(video="paused", quality="weak"), NOW)
    assert effects == [Send(C("ct"), m.PeerMediaState(from_="p2", video="paused", quality="weak"))]


def couple_in_session() -> object:
    room = new_room(spec("couple", seats=2))
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(s, "client", "t1"), hello("Alex"), NOW)
    room.connect(C("c2"), admission(s, "client", "t2"), hello("Sam"), NOW)
    room.receive(C("ct"), m.AdmitAll(), NOW)
    return room


def test_the_therapist_steps_out_the_room_locks_and_nobody_is_sent_away_before_the_grace() -> None:
    room = couple_in_session()
    assert [p.status for p in room.clients()] == ["admitted", "admitted"]  # admit-all in a couple room
    out = room.receive(C("ct"), m.Leave(), NOW + 10)
    assert Close(C("ct"), 1000, "left") in out
    for c in ("c1", "c2"):
        got = sent(out, c)
        assert m.Therapist(status="stepped-out") in got
        assert not any(isinstance(x, m.Waiting) for x in got)
    assert not any(isinstance(e, SeatGeneration) for e in out)
    assert room.locked and [p.status for p in room.clients()] == ["admitted", "admitted"]
    # just before the grace: still in the session
    assert not any(isinstance(x, m.Waiting) for x in sent(room.tick(NOW + 10 + Timing().grace - 1), "c1"))
    assert [p.status for p in room.clients()] == ["admitted", "admitted"]


def test_the_therapist_back_within_the_grace_finds_everyone_still_in_the_session() -> None:
    room = couple_in_session()
    room.receive(C("ct"), m.Leave(), NOW + 10)
    out = room.connect(C("ct2"), admission(room.spec, "therapist", "tt"), hello(), NOW + 60)
    assert m.Therapist(status="present") in sent(out, "c1")
    assert not room.locked and room.therapist_status() == "present"
    assert [p.status for p in room.clients()] == ["admitted", "admitted"]
    roster = [x for x in sent(out, "ct2") if isinstance(x, m.Roster)][-1]
    assert sorted(p.pid for p in roster.participants) == sorted([room.therapist.pid, "p2", "p3"])  # type: ignore[union-attr]


def test_after_the_grace_the_couple_waits_and_admit_all_brings_both_back() -> None:
    room = couple_in_session()
    room.receive(C("ct"), m.Leave(), NOW + 10)
    out = room.tick(NOW + 10 + Timing().grace)
    for c in ("c1", "c2"):
        assert m.Waiting(position=1 if c == "c1" else 2, therapist="absent", reason="therapist-away") in sent(out, c)
    assert [p.status for p in room.clients()] == ["waiting", "waiting"]
    room.connect(C("ct2"), admission(room.spec, "therapist", "tt"), hello(), NOW + 200)
    out = room.receive(C("ct2"), m.AdmitAll(), NOW + 201)
    assert types(out, "c1")[0] == "admitted" and types(out, "c2")[0] == "admitted"
    assert [p.status for p in room.clients()] == ["admitted", "admitted"]
