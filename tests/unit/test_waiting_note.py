"""A word to the waiting room: the therapist's canned or free note reaches waiting clients only, never members."""

from __future__ import annotations

import json

import pytest

from signaling import messages as m
from signaling.errors import SignalingError

from .core_fixtures import T0, C, admission, hello, new_room, sent, spec

NOW = T0 + 60


def group_room():  # type: ignore[no-untyped-def]
    room = new_room(spec("group", seats=4))
    s = room.spec
    room.connect(C("ct"), admission(s, "therapist", "tt"), hello(), NOW)
    room.connect(C("c1"), admission(s, "client", "t1"), hello("Alex"), NOW)
    room.connect(C("c2"), admission(s, "client", "t2"), hello("Bo"), NOW)
    room.connect(C("c3"), admission(s, "client", "t3"), hello("Cy"), NOW)
    room.receive(C("ct"), m.Admit(pid="p2"), NOW)  # Alex is in the session; Bo and Cy wait
    return room


def notes(effects, conn):  # type: ignore[no-untyped-def]
    return [msg for msg in sent(effects, conn) if isinstance(msg, m.WaitingNote)]


def test_a_note_to_everyone_waiting_reaches_the_waiting_only_and_greets_later_arrivals() -> None:
    room = group_room()
    effects = room.receive(C("ct"), m.Note(preset="late-5"), NOW + 1)
    assert notes(effects, "c2") == notes(effects, "c3") == [m.WaitingNote(preset="late-5")]
    assert notes(effects, "c1") == [] and notes(effects, "ct") == []
    later = room.connect(C("c4"), admission(room.spec, "client", "t4"), hello("Di"), NOW + 2)
    assert notes(later, "c4") == [m.WaitingNote(preset="late-5")]
    # the next admission makes it old news: a later arrival is not told "running late"
    room.receive(C("ct"), m.Admit(pid="p3"), NOW + 3)
    again = room.connect(C("c5"), admission(room.spec, "client", "t5"), hello("Ed"), NOW + 4)
    assert notes(again, "c5") == []


def test_a_free_note_to_one_waiting_client_is_collapsed_and_reaches_that_client_only() -> None:
    room = group_room()
    effects = room.receive(C("ct"), m.Note(to="p3", text="  Two   more minutes,\nplease. "), NOW + 1)
    assert notes(effects, "c2") == [m.WaitingNote(text="Two more minutes, please.")]
    assert notes(effects, "c3") == [] and notes(effects, "c1") == []
    later = room.connect(C("c4"), admission(room.spec, "client", "t4"), hello("Di"), NOW + 2)
    assert notes(later, "c4") == []  # a private word is not kept for others


@pytest.mark.parametrize("bad", [
    m.Note(),                                   # neither
    m.Note(preset="soon", text="and words"),    # both
    m.Note(text="    "),                        # blank
    m.Note(to="p2", preset="soon"),             # Alex is admitted, not waiting
    m.Note(to="p99", preset="soon"),            # nobody
])
def test_a_note_that_is_not_one_thing_for_a_waiting_client_is_refused_and_changes_nothing(bad: m.Note) -> None:
    room = group_room()
    effects = room.receive(C("ct"), bad, NOW + 1)
    assert len(effects) == 1 and isinstance(sent(effects, "ct")[0], m.Error)
    assert room.note is None


def test_only_the_therapist_can_send_a_note_and_the_wire_form_is_bounded() -> None:
    room = group_room()
    effects = room.receive(C("c1"), m.Note(preset="soon"), NOW + 1)
    assert [e.code for e in sent(effects, "c1") if isinstance(e, m.Error)] == ["not-allowed"]
    assert notes(effects, "c2") == []
    for raw in ({"type": "note", "text": "x" * (m.NOTE_MAX_CHARS + 1)}, {"type": "note", "preset": "gone-fishing"},
                {"type": "note", "preset": "soon", "extra": 1}):
        with pytest.raises(SignalingError) as err:
            m.decode_client(json.dumps(raw))
        assert err.value.code == "invalid-message"
    assert m.decode_client(json.dumps({"type": "note", "to": None, "preset": "late-10"})) == m.Note(preset="late-10")
