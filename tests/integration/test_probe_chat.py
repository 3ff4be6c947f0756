"""``alcove probe --scenario chat``: encrypted app messages arrive, and the server's relay never held the plaintext."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peer import e2ee
from tools.probe import run_probe

pytestmark = [pytest.mark.media, pytest.mark.integration, pytest.mark.usefixtures("media_namespace")]


async def test_probe_chat(alcove: Any) -> None:
    result = await run_probe(alcove.url, "chat", admin_key=alcove.admin_key)
    assert result["ok"], result
    assert result["scenario"] == "chat" and result["error"] is None
    figures = result["figures"]
    assert figures["messages_sent"] == 4 and figures["messages_received"] == 6
    assert figures["markers_in_relay"] == 0 and figures["relayed_app_messages"] == 10  # 4 sent to the server, 6 delivered
    assert figures["refusals"] == 0 and 0 < figures["slowest_delivery_ms"] < 10_000


async def test_probe_chat_fails_when_the_plaintext_crosses_the_server(alcove: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender that leaks the text next to the sealed message (receivers still accept it): the probe says so."""
    make = e2ee._AppChannel.make_app

    def leaky(self: Any, body: Any, to: str | None = None) -> str | None:
        data = make(self, body, to)
        return None if data is None else json.dumps({**json.loads(data), "leak": body.get("text")})

    monkeypatch.setattr(e2ee._AppChannel, "make_app", leaky)
    result = await run_probe(alcove.url, "chat", admin_key=alcove.admin_key)
    assert not result["ok"]
    assert result["figures"]["markers_in_relay"] > 0 and "plaintext" in result["error"]
