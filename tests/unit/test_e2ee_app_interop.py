"""App messages across languages (docs/security.md §10): peer/e2ee.py <-> web/static/js/lib/e2ee.js, both kinds.

JS therapist <-> Python clients and Python therapist <-> JS clients, through tests/js/e2ee_cli.mjs.
"""

from __future__ import annotations

import os

import pytest

from peer.e2ee import (
    AppMessage,
    ClientKeys,
    SecurityCheckFailed,
    TherapistKeys,
    make_link_fragment,
    parse_link_fragment,
)

from .test_e2ee_interop import ROOM, JsError, Node, js  # noqa: F401  (js: the fixture)

pytestmark = pytest.mark.e2ee

TEXT = "Bună ziua \u2014 \U0001f600 <a href=x>"


def test_js_therapist_and_python_clients_exchange_both_kinds(js: Node) -> None:  # noqa: F811
    s_link = os.urandom(32)
    t = js("therapist.create", obj="t", room=ROOM, pid="p_t", s_link=s_link.hex(), first_epoch=11)
    tk = bytes.fromhex(t["tk"])
    cs = {pid: ClientKeys(ROOM, parse_link_fragment(make_link_fragment("tok", s_link, tk))) for pid in ("p_a", "p_b")}
    for pid, c in cs.items():
        js("therapist.check_intro", obj="t", pid=pid, intro=c.make_intro())
        c.check_grant(js("therapist.make_grant", obj="t", pid=pid), pid)
        js("therapist.check_reveal", obj="t", pid=pid, data=c.make_reveal())
    ep = js("therapist.make_epoch", obj="t", pids=["p_a", "p_b"])
    for pid, c in cs.items():
        js("therapist.check_ack", obj="t", pid=pid, data=c.accept_epoch(ep["message"]))
    sw = js("therapist.make_switch", obj="t")
    a, b = cs["p_a"], cs["p_b"]
    assert a.accept_switch(sw) and b.accept_switch(sw)
    to_all = js("app.make", obj="t", body={"k": "chat", "text": TEXT})
    assert a.open_app("p_t", to_all) == AppMessage("p_t", {"k": "chat", "text": TEXT}, False)
    assert b.open_app("p_t", to_all).body["text"] == TEXT
    private = js("app.make", obj="t", body={"k": "chat", "text": "a only"}, to="p_a")
    assert a.open_app("p_t", private) == AppMessage("p_t", {"k": "chat", "text": "a only"}, True)
    with pytest.raises(SecurityCheckFailed):
        b.open_app("p_t", private)
    back = a.make_app({"k": "chat", "text": TEXT}, to="p_t")
    assert js("app.open", obj="t", **{"from": "p_a"}, data=back) == {"from": "p_a", "body": {"k": "chat", "text": TEXT},
                                                                      "private": True}
    everyone = b.make_app({"k": "state", "mic": True, "cam": False})
    assert js("app.open", obj="t", **{"from": "p_b"}, data=everyone)["body"] == {"k": "state", "mic": True, "cam": False}
    assert a.open_app("p_b", everyone or "").from_pid == "p_b"
    with pytest.raises(JsError, match="SecurityCheckFailed"):
        js("app.open", obj="t", **{"from": "p_b"}, data=everyone)  # a replay


def test_python_therapist_and_js_clients_exchange_both_kinds(js: Node) -> None:  # noqa: F811
    t = TherapistKeys(ROOM, "p_t", s_link=os.urandom(32), first_epoch=5)
    frag = make_link_fragment("tok", t.s_link, t.tk)
    for pid in ("p_a", "p_b"):
        js("client.create", obj=pid, room=ROOM, fragment=frag)
        t.check_intro(pid, js("client.make_intro", obj=pid))
        js("client.check_grant", obj=pid, grant=t.make_grant(pid), pid=pid)
        t.check_reveal(pid, js("client.make_reveal", obj=pid))
    ep = t.make_epoch(["p_a", "p_b"])
    for pid in ("p_a", "p_b"):
        t.check_ack(pid, js("client.accept_epoch", obj=pid, data=ep.message))
    sw = t.make_switch()
    for pid in ("p_a", "p_b"):
        assert js("client.accept_switch", obj=pid, data=sw) is True
    to_all = t.make_app({"k": "chat", "text": TEXT})
    assert js("app.open", obj="p_a", **{"from": "p_t"}, data=to_all)["body"]["text"] == TEXT
    private = t.make_app({"k": "chat", "text": "b only"}, to="p_b")
    assert js("app.open", obj="p_b", **{"from": "p_t"}, data=private)["private"] is True
    with pytest.raises(JsError, match="SecurityCheckFailed"):
        js("app.open", obj="p_a", **{"from": "p_t"}, data=private)
    reply = js("app.make", obj="p_b", body={"k": "chat", "text": TEXT}, to="p_t")
    assert t.open_app("p_b", reply) == AppMessage("p_b", {"k": "chat", "text": TEXT}, True)
    group = js("app.make", obj="p_a", body={"k": "hand", "up": True})
    assert t.open_app("p_a", group).body == {"k": "hand", "up": True}
    assert js("app.open", obj="p_b", **{"from": "p_a"}, data=group)["from"] == "p_a"
    with pytest.raises(JsError, match="TypeError"):
        js("app.make", obj="p_a", body={"k": "chat"}, to="p_b")  # never client to client privately
