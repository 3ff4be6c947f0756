"""What the edge needs of the cluster without importing Redis (the single-process server never does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from signaling.errors import SignalingError

if TYPE_CHECKING:
    import asyncio

    from signaling.effects import ConnId
    from signaling.room import Admission

OP_TIMEOUT: Final = 1.5
"""A Redis call that takes longer fails with a retryable error: nothing waits on Redis for longer."""
ANSWER_TIMEOUT: Final = 2.0
"""A relayed hello that the owner does not answer within this is refused (retryable): the owner may be dead."""
RETRY_AFTER: Final = 2


class ClusterUnavailable(SignalingError):
    """Redis is out of reach (or slow): retryable, nothing was changed."""

    def __init__(self) -> None:
        super().__init__("unavailable", "the service is briefly unavailable; try again in a moment")
        self.retry_after = RETRY_AFTER


class Relay(Protocol):
    answered: asyncio.Event


class ClusterLike(Protocol):
    """What the hub, the websocket edge and the API use of :class:`server.cluster.cluster.Cluster`."""

    me: str

    def shared(self, kind: str, ident: str, value: int, until: float) -> None: ...
    def to_edge(self, edge: str, conn: ConnId, data: bytes) -> None: ...
    def close_on_edge(self, edge: str, conn: ConnId, code: int, reason: str) -> None: ...
    def relay_hello(self, conn: ConnId, owner: str, admission: Admission, hello: str) -> Relay: ...
    def relay_message(self, conn: ConnId, data: str) -> None: ...
    def relay_bye(self, conn: ConnId) -> None: ...
    async def settle(self) -> None: ...
    async def refresh(self, token_id: str, room_id: str) -> None: ...
    async def issue_ticket(self, admission: Admission, now: float) -> str: ...
    async def redeem_ticket(self, ticket: str, now: float) -> Admission: ...
    async def owner_for(self, room_id: str) -> str: ...
    async def end_room(self, room_id: str) -> None: ...
    def census(self) -> dict[str, object]: ...
