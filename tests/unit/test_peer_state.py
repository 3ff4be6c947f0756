"""The Python participant's mirror of the room (peer.state.RoomState), without a server or a loop."""

from __future__ import annotations

from peer.state import RoomState
from signaling import messages as m

ROOM = m.RoomInfo(id="r1", type="couple", opens_at="2027-01-04T09:45:00Z", starts_at="2027-01-04T10:00:00Z",
                  ends_at="2027-01-04T11:15:00Z", seats=2, topology="sfu")


def welcome(status: m.Status = "waiting") -> m.Welcome:
    return m.Welcome(v=1, pid="p2", role="client", status=status, room=ROOM, therapist="present", position=1,
                     resume="R")


def test_messages_update_the_mirror_by_type() -> None:
    state = RoomState()
    messages: list[m.ServerMessage] = [
        welcome(),
        m.Queue(waiting=[m.QueueEntry(pid="p3", name="B", since="2027-01-04T10:01:00Z", connected=True, intro=None)]),
        m.Roster(participants=[m.RosterEntry(pid="p1", role="therapist", name="T", connected=True),
                               m.RosterEntry(pid="p2", role="client", name="A", connected=True)]),
        m.IceServers(ice_servers=[{"urls": ["turn:127.0.0.1:3478"]}], expires_at=None),
        m.Therapist(status="away"),
        m.Time(ends_at="2027-01-04T11:20:00Z", extended_minutes=5, overrun_left_minutes=10),
        m.Error(code="not-allowed", message="no", ref="admit"),
        m.SessionEnded(reason="therapist"),
    ]
    for msg in messages:
        state.apply(msg)
    assert (state.pid, state.role, state.room, state.position) == ("p2", "client", ROOM, 1)
    assert state.sfu_room and state.peers() == ["p1"] and state.pid_of("B") == "p3"
    assert state.ice_known and state.ice_servers == [{"urls": ["turn:127.0.0.1:3478"]}]
    assert (state.therapist, state.ends_at, state.ended_reason) == ("away", "2027-01-04T11:20:00Z", "therapist")
    assert [e.code for e in state.errors] == ["not-allowed"] and state.log == messages
    assert state.status == "new"  # the participant decides the status, not the mirror


def test_status_changes_are_heard_and_leaving_the_room_forgets_the_roster() -> None:
    state, heard = RoomState(), []
    state.status_listeners.append(lambda previous, status: heard.append((previous, status)))
    state.set_status("admitted")
    assert state.admitted_at is not None
    state.apply(m.Roster(participants=[m.RosterEntry(pid="p1", role="therapist", name="T", connected=True)]))
    state.set_status("waiting")
    assert heard == [("new", "admitted"), ("admitted", "waiting")] and state.roster == {}
