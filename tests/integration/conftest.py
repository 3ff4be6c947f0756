"""Fixtures for the participant and probe integration tests (real server on loopback, aiortc peers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from peer.participant import Participant
from tests.conftest import require_loopback_namespace


@pytest.fixture
def media_namespace() -> None:
    """Media tests run only in a loopback-only network namespace (``unshare -n``)."""
    require_loopback_namespace()


JoinFn = Callable[..., Awaitable[Participant]]


@pytest.fixture
async def join(alcove: Any) -> AsyncIterator[JoinFn]:
    """``await join(link, name=...)``: a Participant on the fixture server, closed at the end of the test."""
    joined: list[Participant] = []

    async def _join(link: str, **kwargs: Any) -> Participant:
        p = await Participant.join(alcove.url, link, **kwargs)
        joined.append(p)
        return p

    yield _join
    for p in joined:
        await p.close()
