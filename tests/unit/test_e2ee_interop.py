"""Cross-language E2EE key protocol: peer/e2ee.py <-> web/static/js/lib/e2ee.js (driven through tests/js/e2ee_cli.mjs).

JS therapist <-> Python client and Python therapist <-> JS client: grant, reveal, SAS, epoch, ack, switch,
signed SDP, and media frames protected on one side and opened on the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.e2ee import (
    EMOJI,
    EPOCH_LIFETIME_MS,
    ClientKeys,
    SecurityCheckFailed,
    TherapistKeys,
    k_auth,
    make_link_fragment,
    parse_link_fragment,
    sas,
)

pytestmark = pytest.mark.e2ee

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "tests" / "js" / "e2ee_cli.mjs"
ROOM = "r_interop-\u00e9"  # non-ASCII room id: UTF-8 everywhere
FP1 = "sha-256 " + ":".join(["AB"] * 32)
FP2 = "sha-256 " + ":".join(["CD"] * 32)
SDP = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:{FP1}\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    f"a=fingerprint:{FP1}\r\n"
)
VP8_KEY = bytes.fromhex("5004009d012a8002e001") + bytes(range(200))
AUDIO = b"\xfc" + bytes(range(60))


class JsError(Exception):
    pass


class Node:
    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(CLI)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=REPO,
        )
        self._id = 0

    def __call__(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._id += 1
        self.proc.stdin.write(json.dumps({"id": self._id, "cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("node exited: " + (self.proc.stderr.read() if self.proc.stderr else ""))
        res = json.loads(line)
        assert res["id"] == self._id
        if "error" in res:
            raise JsError(f"{res['error']}: {res['message']}")
        return res["ok"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()


@pytest.fixture
def js() -> Iterator[Node]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI for the E2EE interop tests")
        pytest.skip("node not installed")
    n = Node(node)
    try:
        yield n
    finally:
        n.close()


def test_emoji_lists_identical(js: Node) -> None:
    assert js("emoji") == [e for e, _ in EMOJI]


def test_sas_and_k_auth_identical(js: Node) -> None:
    for _ in range(20):
        ik_p, ik_t = b"\x04" + os.urandom(64), b"\x04" + os.urandom(64)
        n_c, n_t = os.urandom(16), os.urandom(16)
        py = sas(ik_p, ik_t, n_c, n_t, ROOM)
        out = js("sas", ik_p=ik_p.hex(), ik_t=ik_t.hex(), n_c=n_c.hex(), n_t=n_t.hex(), room=ROOM)
        assert out["indices"] == list(py.indices)
        assert out["decimal"] == list(py.decimal)
        assert out["emoji"] == [e for e, _ in py.emoji]
    s = os.urandom(32)
    assert js("k_auth", s=s.hex(), room=ROOM) == k_auth(s, ROOM).hex()


def test_js_therapist_python_client(js: Node) -> None:
    s_link = os.urandom(32)
    t = js("therapist.create", obj="t", room=ROOM, pid="p_t", s_link=s_link.hex(), first_epoch=7)
    tk = bytes.fromhex(t["tk"])
    clients = {
        pid: ClientKeys(ROOM, parse_link_fragment(make_link_fragment("tok", s_link, tk)))
        for pid in ("p_a", "p_b")
    }
    for pid, c in clients.items():
        assert js("therapist.check_intro", obj="t", pid=pid, intro=c.make_intro())["mac_ok"] is True
        c.check_grant(js("therapist.make_grant", obj="t", pid=pid), pid)
        sas_t = js("therapist.check_reveal", obj="t", pid=pid, data=c.make_reveal())
        assert sas_t["indices"] == list(c.sas().indices) and sas_t["decimal"] == list(c.sas().decimal)
    ep = js("therapist.make_epoch", obj="t", pids=["p_a", "p_b"])
    assert ep["epoch"] == 7
    acks = [clients[pid].accept_epoch(ep["message"]) for pid in ("p_a", "p_b")]
    assert js("therapist.check_ack", obj="t", pid="p_a", data=acks[0]) is False
    assert js("therapist.check_ack", obj="t", pid="p_b", data=acks[1]) is True
    sw = js("therapist.make_switch", obj="t")
    assert all(c.accept_switch(sw) for c in clients.values())
    a, b = clients["p_a"], clients["p_b"]
    # Media: JS therapist -> Python clients, Python client -> JS therapist.
    for kind, frame in (("video", VP8_KEY), ("audio", AUDIO)):
        prot = bytes.fromhex(js("encrypt", obj="t", kind=kind, frame=frame.hex()))
        assert a.keystate.decrypt(kind, prot, 0) == frame  # type: ignore[arg-type]
        assert b.keystate.decrypt_from(kind, prot, "p_t") == frame  # type: ignore[arg-type]
        back = a.keystate.encrypt(kind, frame)  # type: ignore[arg-type]
        assert back is not None
        idx = a.roster["p_a"][1]
        assert js("decrypt", obj="t", kind=kind, data=back.hex(), from_idx=idx) == frame.hex()
        assert js("decrypt", obj="t", kind=kind, data=back.hex(), from_idx=0) is None
    # Signed SDP both ways.
    a.verify_sdp("p_t", "offer", SDP, js("sign_sdp", obj="t", to="p_a", type="offer", sdp=SDP))
    js("verify_sdp", obj="t", **{"from": "p_a"}, type="answer", sdp=SDP, sig=a.sign_sdp("p_t", "answer", SDP))
    with pytest.raises(JsError, match="SecurityCheckFailed"):
        js("verify_sdp", obj="t", **{"from": "p_a"}, type="answer", sdp=SDP.replace(FP1, FP2),
           sig=a.sign_sdp("p_t", "answer", SDP))  # fmt: skip
    with pytest.raises(SecurityCheckFailed):
        a.verify_sdp(
            "p_t", "offer", SDP.replace(FP1, FP2), js("sign_sdp", obj="t", to="p_a", type="offer", sdp=SDP)
        )
    # Removal: a new epoch without p_b; p_b cannot unwrap it, a can.
    ep2 = js("therapist.make_epoch", obj="t", pids=["p_a"])
    with pytest.raises(SecurityCheckFailed):
        b.accept_epoch(ep2["message"])
    assert js("therapist.check_ack", obj="t", pid="p_a", data=a.accept_epoch(ep2["message"])) is True
    assert a.accept_epoch(ep["message"]) is None  # replay of the older epoch is ignored
    sw2 = js("therapist.make_switch", obj="t")
    assert a.accept_switch(sw2) and not b.accept_switch(sw2)
    prot = bytes.fromhex(js("encrypt", obj="t", kind="video", frame=VP8_KEY.hex()))
    assert a.keystate.decrypt("video", prot, 0) == VP8_KEY
    assert b.keystate.decrypt("video", prot, 0) is None


def test_python_therapist_js_client(js: Node) -> None:
    t = TherapistKeys(ROOM, "p_t", s_link=os.urandom(32), first_epoch=3)
    frag = make_link_fragment("tok", t.s_link, t.tk)
    for pid in ("p_a", "p_b"):
        js("client.create", obj=pid, room=ROOM, fragment=frag)
        assert t.check_intro(pid, js("client.make_intro", obj=pid)).mac_ok is True
        js("client.check_grant", obj=pid, grant=t.make_grant(pid), pid=pid)
        sas_t = t.check_reveal(pid, js("client.make_reveal", obj=pid))
        sas_c = js("client.sas", obj=pid)
        assert sas_c["indices"] == list(sas_t.indices) and sas_c["decimal"] == list(sas_t.decimal)
    ep = t.make_epoch(["p_a", "p_b"])
    assert not t.check_ack("p_a", js("client.accept_epoch", obj="p_a", data=ep.message))
    assert t.check_ack("p_b", js("client.accept_epoch", obj="p_b", data=ep.message))
    sw = t.make_switch()
    assert js("client.accept_switch", obj="p_a", data=sw) is True
    assert js("client.accept_switch", obj="p_b", data=sw) is True
    for kind, frame in (("video", VP8_KEY), ("audio", AUDIO)):
        prot = t.keystate.encrypt(kind, frame)  # type: ignore[arg-type]
        assert prot is not None
        assert js("decrypt", obj="p_a", kind=kind, data=prot.hex(), from_idx=0) == frame.hex()
        back = bytes.fromhex(js("encrypt", obj="p_b", kind=kind, frame=frame.hex()))
        assert t.keystate.decrypt_from(kind, back, "p_b") == frame  # type: ignore[arg-type]
        # JS client -> JS client with the Python-issued epoch.
        assert js("decrypt", obj="p_a", kind=kind, data=back.hex(), from_idx=ep.roster["p_b"]) == frame.hex()
    # Signed SDP both ways (and client -> client via the roster).
    js("verify_sdp", obj="p_a", **{"from": "p_t"}, type="offer", sdp=SDP, sig=t.sign_sdp("p_a", "offer", SDP))
    t.verify_sdp("p_a", "answer", SDP, js("sign_sdp", obj="p_a", to="p_t", type="answer", sdp=SDP))
    js("verify_sdp", obj="p_b", **{"from": "p_a"}, type="offer", sdp=SDP,
       sig=js("sign_sdp", obj="p_a", to="p_b", type="offer", sdp=SDP))  # fmt: skip
    with pytest.raises(SecurityCheckFailed):
        t.verify_sdp("p_a", "answer", SDP.replace(FP1, FP2),
                     js("sign_sdp", obj="p_a", to="p_t", type="answer", sdp=SDP))  # fmt: skip
    with pytest.raises(JsError, match="SecurityCheckFailed"):
        js("verify_sdp", obj="p_a", **{"from": "p_t"}, type="offer", sdp=SDP.replace(FP1, FP2),
           sig=t.sign_sdp("p_a", "offer", SDP))  # fmt: skip
    # A forged grant (another IK) is refused by the JS client because of tk.
    mitm = TherapistKeys(ROOM, "p_t")
    js("client.create", obj="p_c", room=ROOM, fragment=frag)
    mitm.check_intro("p_c", js("client.make_intro", obj="p_c"))
    with pytest.raises(JsError, match="SecurityCheckFailed"):
        js("client.check_grant", obj="p_c", grant=mitm.make_grant("p_c"), pid="p_c")
    # Removal of p_b: it cannot unwrap the next epoch.
    t.forget("p_b")
    ep2 = t.make_epoch(["p_a"])
    with pytest.raises(JsError, match="SecurityCheckFailed"):
        js("client.accept_epoch", obj="p_b", data=ep2.message)
    assert t.check_ack("p_a", js("client.accept_epoch", obj="p_a", data=ep2.message))
    assert js("client.accept_epoch", obj="p_a", data=ep.message) is None  # replay ignored


def test_mitm_mixed_languages_gives_different_sas(js: Node) -> None:
    """Python therapist, JS client, a Python middleman substituting keys on both sides."""
    t = TherapistKeys(ROOM, "p_t")
    js("client.create", obj="c", room=ROOM, fragment="#t=tok", pid="p_c")
    m_client = ClientKeys(ROOM, pid="p_c")
    m_therapist = TherapistKeys(ROOM, "p_t")
    t.check_intro("p_c", m_client.make_intro())
    m_therapist.check_intro("p_c", js("client.make_intro", obj="c"))
    m_client.check_grant(t.make_grant("p_c"), "p_c")
    js("client.check_grant", obj="c", grant=m_therapist.make_grant("p_c"), pid="p_c")
    m_therapist.check_reveal("p_c", js("client.make_reveal", obj="c"))
    therapist_sees = t.check_reveal("p_c", m_client.make_reveal())
    client_sees = js("client.sas", obj="c")
    assert client_sees["indices"] != list(therapist_sees.indices)
    assert client_sees["decimal"] != list(therapist_sees.decimal)


def test_v2_grants_names_expiry_and_hpke_keys_across_languages(js: Node) -> None:
    """JS therapist, Python clients: a forged roster gets no key, a takeover is a new person, the signed names
    and expiry read the same, and each ack's HPKE key is what the next epoch is wrapped to."""
    js("therapist.create", obj="tv", room=ROOM, pid="p_t", first_epoch=100)
    a = ClientKeys(ROOM, pid="p_a")
    js("therapist.check_intro", obj="tv", pid="p_a", intro=a.make_intro())
    a.check_grant(js("therapist.make_grant", obj="tv", pid="p_a"), "p_a")
    js("therapist.check_reveal", obj="tv", pid="p_a", data=a.make_reveal())
    ghost = ClientKeys(ROOM, pid="p_ghost")
    js("therapist.check_intro", obj="tv", pid="p_ghost", intro=ghost.make_intro())
    assert js("therapist.keyable", obj="tv", pid="p_ghost") is False
    with pytest.raises(JsError, match="not granted"):
        js("therapist.make_epoch", obj="tv", pids=["p_a", "p_ghost"])
    now = 1_700_000_000_000
    ep = js("therapist.make_epoch", obj="tv", pids=["p_a"], names={"p_t": "Dr. T", "p_a": "Ann"}, now_ms=now)
    assert ep["expires_at"] == now + EPOCH_LIFETIME_MS
    with pytest.raises(SecurityCheckFailed, match="expired"):
        a.accept_epoch(ep["message"], now_ms=now + EPOCH_LIFETIME_MS)
    intro_key = a.hpke_keys[0][0]
    ack = a.accept_epoch(ep["message"], now_ms=now)
    assert ack is not None and a.names == {"p_t": "Dr. T", "p_a": "Ann"}
    js("therapist.check_ack", obj="tv", pid="p_a", data=ack)
    js("therapist.make_switch", obj="tv")
    ep2 = js("therapist.make_epoch", obj="tv", pids=["p_a"])
    assert a.accept_epoch(ep2["message"]) is not None
    assert intro_key not in [raw for raw, _ in a.hpke_keys]
    # Takeover: p_a leaves the server's roster and comes back with another key: a new person.
    js("therapist.forget", obj="tv", pid="p_a")
    with pytest.raises(JsError, match="NewPerson"):
        js("therapist.check_intro", obj="tv", pid="p_a", intro=ClientKeys(ROOM, pid="p_a").make_intro())
    with pytest.raises(JsError, match="not granted"):
        js("therapist.make_epoch", obj="tv", pids=["p_a"])
    # Python therapist, JS client: the JS client's ack key is what the next epoch is wrapped to.
    t = TherapistKeys(ROOM, "p_t", first_epoch=5)
    js("client.create", obj="cv", room=ROOM, fragment="#t=tok", pid="p_c")
    t.check_intro("p_c", js("client.make_intro", obj="cv"))
    js("client.check_grant", obj="cv", grant=t.make_grant("p_c"), pid="p_c")
    t.check_reveal("p_c", js("client.make_reveal", obj="cv"))
    first = t.make_epoch(["p_c"], {"p_t": "Dr. T", "p_c": "Cy"})
    t.check_ack("p_c", js("client.accept_epoch", obj="cv", data=first.message))
    assert js("client.names", obj="cv") == {"p_t": "Dr. T", "p_c": "Cy"}
    newest = js("client.hpke_keys", obj="cv")[-1]
    assert t.members["p_c"].dk.hex() == newest
    t.make_switch()
    assert js("client.accept_epoch", obj="cv", data=t.make_epoch(["p_c"]).message) is not None
    assert len(js("client.hpke_keys", obj="cv")) == 2  # the intro's key is erased, one new for the next ack
