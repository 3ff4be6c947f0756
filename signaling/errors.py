"""Typed signaling errors with stable, kebab-case codes (never change a shipped code)."""

from __future__ import annotations

from typing import Final

#: code -> websocket close code; ``None`` means the error is answered and the socket stays open.
CLOSE_CODES: Final[dict[str, int | None]] = {
    "bad-json": None,
    "too-large": 1009,
    "unknown-type": None,
    "invalid-message": None,
    "unsupported-version": 4002,
    "hello-expected": 4001,
    "ticket-invalid": 4003,
    "token-invalid": 4003,
    "token-revoked": 4003,
    "room-not-open": 4004,
    "room-ended": 4005,
    "room-full": 4006,
    "device-in-use": 4007,
    "name-invalid": None,
    "not-allowed": None,
    "unknown-peer": None,
    "extend-limit": None,
    "rate-limited": None,
    "slow-consumer": 4009,
    "declined": 4010,
    "removed": 4011,
    "replaced": 4012,
    "media-unreachable": None,
    "server-error": 1011,
    "unavailable": 1001,  # several instances: the shared state (Redis) is out of reach; retry
}

ERROR_CODES: Final[frozenset[str]] = frozenset(CLOSE_CODES)


class SignalingError(Exception):
    """A refused input. ``code`` is stable; ``message`` is for humans (never holds a name or token)."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        if code not in CLOSE_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message, ref)
        self.code = code
        self.message = message
        self.ref = ref

    @property
    def close_code(self) -> int | None:
        return CLOSE_CODES[self.code]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
