"""Nothing persists (issue 15, item 5) for the safety check and group manners: a session over an `alcove serve`
process in which a client answers the safety check with planted strings and members raise hands and are muted;
then the server's logs (DEBUG), its data directory, /metrics and every file written under the run's directories are
searched for the planted strings: zero hits. (To be folded into the common scan test with chat and the waiting-room
word.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.participant import Participant
from tests.e2ee.test_aiortc_e2ee import admit, e2ee_links, switched

from .test_cli import ALCOVE, free_port, stop

pytestmark = [pytest.mark.integration, pytest.mark.e2ee]

PLANTED = ("Planted-Where-5b9e Str. Florilor 3", "Planted-Contact-0d4c", "+40 799 111 222", "0799 333 444")


async def test_safety_answers_and_manners_leave_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    run = tmp_path / "cwd"
    run.mkdir()
    env = {**os.environ, "ALCOVE_DATA_DIR": str(tmp_path / "data"), "ALCOVE_LOG_LEVEL": "DEBUG",
           "ALCOVE_EMERGENCY_NUMBERS": "112=Urgențe;0800 801 200=Linia de criză"}
    env.pop("ALCOVE_ADMIN_KEY", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *ALCOVE, "serve", "--no-tls", "--port", str(port), "--certs-dir", str(tmp_path / "certs"), cwd=run,
            env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    joined: list[Participant] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            key = (tmp_path / "data" / "admin-key").read_text().strip()
            async with http.post(f"{url}/api/rooms", json={"type": "group", "clients": 2, "topology": "mesh",
                                                           "safety_check": "required"},
                                 headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 201
                room = await r.json()
            ik = ec.generate_private_key(ec.SECP256R1())
            t_link, c_links = e2ee_links(room, ik)
            t = await Participant.join(url, t_link, name="Dr. T", therapist_ik=ik, media=False)
            joined.append(t)
            cs = []
            for i, link in enumerate(c_links):
                c = await Participant.join(url, link, name=f"Member{i} Surname", media=False)
                joined.append(c)
                cs.append(c)
                await admit(t, c)
            await switched(t, *cs)
            assert cs[0].answer_safety(PLANTED[0], PLANTED[1], PLANTED[2], call_back=PLANTED[3])
            await t.wait_until(lambda: cs[0].pid in t.manners.safety_answers, 10, "the answers")
            assert cs[1].raise_hand()
            await t.wait_until(lambda: cs[1].pid in t.manners.hands, 10, "a hand")
            assert t.mute_member(cs[1].pid)
            await cs[1].wait_until(lambda: cs[1].manners.muted, 10, "muted")
            async with http.get(f"{url}/metrics") as r:
                metrics = await r.text()
            await t.end()
            await cs[0].wait_until(lambda: cs[0].status == "ended", 10, "ended")
    finally:
        for p in joined:
            await p.close()
        await stop(proc)
    found = []
    texts = {"/metrics": metrics.encode()}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert texts.get("server.log"), "the server logged nothing at all"
    for where, data in texts.items():
        for planted in PLANTED:
            if planted.encode() in data:
                found.append((where, planted))
    assert found == []
