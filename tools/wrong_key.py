"""A participant with the wrong keys: every epoch key it installs is corrupted.

It can neither decrypt nor be decrypted; its peers must decode nothing from it and carry on with the others.
The probe's ``wrong-key`` scenario and the E2EE tests pass :func:`wrong_keystate` as the participant's
``keystate_factory``.
"""

from __future__ import annotations

from typing import Any

from peer.e2ee import KeyState


def wrong_keystate() -> KeyState:
    """A :class:`peer.e2ee.KeyState` whose ``install`` flips every bit pattern of the epoch base key."""
    ks = KeyState()
    install = ks.install

    def corrupted(epoch: int, base_key: bytes, roster: Any, send_idx: int | None,
                  expires_at: float | None = None) -> None:
        install(epoch, bytes(b ^ 0x5A for b in base_key), roster, send_idx, expires_at)

    ks.install = corrupted  # type: ignore[method-assign]
    return ks


def keystate_factory(wrong: bool) -> dict[str, Any]:
    """``Participant.join`` options: the wrong keys when ``wrong``, the default otherwise."""
    return {"keystate_factory": wrong_keystate} if wrong else {}
