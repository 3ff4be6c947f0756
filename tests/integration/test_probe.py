"""Smoke tests of ``tools.probe.run_probe`` against the fixture server (real aiortc media on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tools.probe import run_probe

pytestmark = [pytest.mark.media, pytest.mark.integration, pytest.mark.usefixtures("media_namespace")]


@pytest.mark.parametrize("scenario", ["basic", "decline", "resume"])
async def test_probe_scenarios(alcove: Any, scenario: str) -> None:
    result = await run_probe(alcove.url, scenario, duration=2.0, admin_key=alcove.admin_key)
    assert result["ok"], result
    assert result["scenario"] == scenario and result["error"] is None
    figures = result["figures"]
    if scenario != "decline":
        assert 0 < figures["admit_to_first_frame_ms"] < 10_000
        for who in ("therapist", "client1"):
            assert figures["frames"][who]["video"] > 10 and figures["frames"][who]["audio"] > 10
    else:
        assert figures["refused_with"] == "token-revoked"


async def test_probe_basic_two_clients(alcove: Any) -> None:
    result = await run_probe(alcove.url, "basic", duration=1.0, clients=2, admin_key=alcove.admin_key)
    assert result["ok"], result
    assert set(result["figures"]["frames"]) == {"therapist", "client1", "client2"}


async def test_probe_end(alcove: Any) -> None:
    """The fixture's clock follows real time here, so the server's tick ends the 3 s room on its own."""

    async def follow_real_time() -> None:
        while True:
            await asyncio.sleep(0.25)
            await alcove.advance(0.25)

    clock = asyncio.create_task(follow_real_time())
    try:
        result = await run_probe(alcove.url, "end", duration=3.0, admin_key=alcove.admin_key)
    finally:
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock
    assert result["ok"], result
    assert result["figures"]["refused_with"] == ["room-ended"]
    assert result["figures"]["frames"]["therapist"]["video"] > 10


async def test_probe_reports_failure(alcove: Any) -> None:
    result = await run_probe(alcove.url, "basic", duration=1.0, admin_key="wrong-key")
    assert result["ok"] is False and "401" in result["error"]
    assert (await run_probe(alcove.url, "nope", admin_key=alcove.admin_key))["ok"] is False


async def test_probe_wrong_key(alcove: Any) -> None:
    result = await run_probe(alcove.url, "wrong-key", duration=1.0, clients=2, admin_key=alcove.admin_key)
    assert result["ok"], result
    by_peer = result["figures"]["frames_by_peer"]
    assert by_peer["client2"] == {"therapist": 0, "client1": 0}
    assert by_peer["therapist"]["client1"] > 10 and by_peer["client1"]["therapist"] > 10
    assert by_peer["therapist"]["client2"] == 0 and by_peer["client1"]["client2"] == 0
    assert result["figures"]["decrypt_failures"]["client2"] > 0


async def test_probe_mitm(alcove: Any) -> None:
    result = await run_probe(alcove.url, "mitm", duration=2.0, admin_key=alcove.admin_key)
    assert result["ok"], result
    figures = result["figures"]
    assert figures["rewritten_sdp"] >= 1 and figures["forged_answers"] >= 1
    assert figures["security_failures"]["therapist"] and figures["security_failures"]["client1"]


async def test_probe_sendback(alcove: Any) -> None:
    result = await run_probe(alcove.url, "sendback", duration=1.0, admin_key=alcove.admin_key)
    assert result["ok"], result
    figures = result["figures"]
    assert figures["replayed_status"] == "waiting"
    assert not {"roster", "ice-servers", "admitted"} & set(figures["replay_received"])


async def test_probe_echo(alcove: Any) -> None:
    """The pre-join test's echo peer answers a link's token alone and returns the caller's media."""
    result = await run_probe(alcove.url, "echo", admin_key=alcove.admin_key)
    assert result["ok"], result
    figures = result["figures"]
    assert figures["frames_returned"]["video"] >= 11 and figures["frames_returned"]["audio"] >= 10
    assert figures["candidate_pairs"] and figures["limit_s"] == 10


async def test_probe_ghost(alcove: Any) -> None:
    result = await run_probe(alcove.url, "ghost", duration=1.0, admin_key=alcove.admin_key)
    assert result["ok"], result
    figures = result["figures"]
    assert figures["epochs_seen"] >= 1
    assert figures["epochs_opened_by_ghost"] == 0 and figures["frames_decrypted_by_ghost"] == 0
    assert "unkeyed" in figures["therapist_refusals"]
    assert figures["frames"]["client1"]["video"] > 10
