"""The registry answers the edge's questions (who joined, is the session over, whose socket, the census)."""

from __future__ import annotations

from signaling.effects import Close
from signaling.policy import Timing
from signaling.rooms import Joined, Rooms

from .core_fixtures import T0, C, FakeServices, admission, hello, spec

NOW = T0 + 60


def test_connect_says_who_joined_and_how() -> None:
    rooms, s = Rooms(Timing(), FakeServices()), spec()
    therapist = rooms.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    client = rooms.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW)
    assert therapist.joined == Joined(s.room_id, "p1", "therapist", "admitted")  # type: ignore[arg-type]
    assert client.joined == Joined(s.room_id, "p2", "client", "waiting")  # type: ignore[arg-type]
    assert rooms.conn_of(s.room_id, "p2") == "c1" and rooms.conn_of(s.room_id, "p9") is None


def test_a_refused_hello_joins_nobody() -> None:
    rooms, s = Rooms(Timing(), FakeServices()), spec()
    rooms.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW)
    again = rooms.connect(C("c2"), admission(s, "client", "t1"), hello("A"), NOW)  # same link, other device
    assert again.joined is None and again.effects[-1] == Close(C("c2"), 4007, "device-in-use")
    early = rooms.connect(C("c3"), admission(s, "client", "t3"), hello("B"), T0 - 3600)
    assert early.joined is None


def test_one_answer_to_is_this_session_over() -> None:
    rooms, s, other = Rooms(Timing(), FakeServices()), spec(), spec(room_id="r2")
    assert not rooms.is_over(s, NOW) and rooms.is_over(s, s.ends_at)
    rooms.end("r2", "admin", NOW)  # ended before anyone joined
    assert rooms.is_over(other, NOW)
    rooms.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    assert not rooms.is_over(s, NOW) and rooms.is_over(s, s.ends_at)  # a live room past its end
    rooms.end(s.room_id, "therapist", NOW)
    assert rooms.is_over(s, NOW)
    refused = rooms.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW)
    assert refused.joined is None and refused.effects[-1] == Close(C("c1"), 4005, "room-ended")


def test_census_counts_rooms_and_connected_participants() -> None:
    rooms, s = Rooms(Timing(), FakeServices()), spec()
    rooms.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    rooms.connect(C("c1"), admission(s, "client", "t1"), hello("A"), NOW)
    census = rooms.census(NOW)
    assert census.rooms == {"scheduled": 0, "open": 1, "in-session": 0, "ended": 0}
    assert census.participants == {"therapist": 1, "client": 0} and census.waiting == 1
    assert rooms.live_count() == 1
