"""The periodic re-signing of resume credentials is spread over ticks: participants who joined together (after a
restart or a takeover) are not all signed again in one tick (issue 12: one 77 ms tick at 1,500 participants)."""

from __future__ import annotations

from collections import Counter

from signaling import messages as m
from signaling.effects import Send
from signaling.policy import Timing
from signaling.rooms import Rooms

from .core_fixtures import T0, FakeServices, admission, hello, spec


def test_participants_who_joined_together_are_signed_again_over_many_ticks() -> None:
    timing = Timing()
    rooms = Rooms(timing, FakeServices())
    n = 200
    for i in range(n):
        s = spec(room_id=f"r{i}")
        connected = rooms.connect(f"c{i}", admission(s, "therapist", f"t{i}"), hello("Dr"), T0)  # type: ignore[arg-type]
        assert connected.joined is not None
    per_tick: Counter[float] = Counter()
    first: dict[str, float] = {}
    now = T0
    while now < T0 + timing.grace:
        now += 0.5  # the server's tick
        for e in rooms.tick(now):
            if isinstance(e, Send) and isinstance(e.message, m.Resume):
                per_tick[now] += 1
                first.setdefault(e.conn, now - T0)
    assert len(first) == n  # everyone got a fresh credential, well within its lifetime (twice the grace)
    assert all(timing.grace / 4 <= at <= timing.grace / 2 + 0.5 for at in first.values())
    assert max(per_tick.values()) <= n // 10, per_tick.most_common(3)
