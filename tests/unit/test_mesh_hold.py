"""The Python participant's mesh after its own reconnect (peer/mesh.py ``Mesh.hold``), as the browser's: a peer the
restarted server does not list yet keeps its link; one the server listed since the reconnect and then dropped (sent
back, removed, left) is closed at once; after the hold the roster rules."""

from __future__ import annotations

from types import SimpleNamespace

from peer.mesh import MediaOptions, Mesh
from peer.state import RoomState


def mesh(*pids: str) -> tuple[Mesh, list[str]]:
    state = RoomState()
    state.pid = "p_t"
    closed: list[str] = []
    mesh = Mesh(state, SimpleNamespace(), SimpleNamespace(), MediaOptions(media=False), lambda: None)  # type: ignore[arg-type]
    mesh.links = {pid: SimpleNamespace(pc=SimpleNamespace(connectionState="connected")) for pid in pids}  # type: ignore[misc]
    mesh.close_link = lambda pid: (closed.append(pid), mesh.links.pop(pid, None))  # type: ignore[method-assign, assignment, func-returns-value]
    return mesh, closed


def roster(m: Mesh, *pids: str) -> None:
    m.state.roster = {pid: SimpleNamespace(pid=pid, connected=True) for pid in ("p_t", *pids)}  # type: ignore[misc]
    m.sync()


def test_a_peer_not_listed_yet_is_held_one_dropped_after_being_listed_is_closed() -> None:
    m, closed = mesh("p_a", "p_b")
    m.hold()
    roster(m)  # the fresh server knows only us
    assert closed == []
    roster(m, "p_a", "p_b")
    roster(m, "p_b")  # a sent back on the live server, within the hold
    assert closed == ["p_a"]
    m._hold_until = 0.0  # the hold is over: the roster rules
    roster(m)
    assert closed == ["p_a", "p_b"]
