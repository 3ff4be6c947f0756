"""The safety check at the start of a session: what a room asks of its clients, and the practice's numbers.

Only the *settings* live on the server (signed into the room token, sent to the client page as a hint); the
client's answers travel end to end encrypted to the therapist (an app message of kind ``safety``) and never
reach the server in the clear (docs/security.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from .errors import SignalingError

SafetyCheck = Literal["required", "optional", "off"]
DisconnectPlan = Literal["", "call-back", "wait"]

CHECKS: tuple[SafetyCheck, ...] = ("required", "optional", "off")
PLANS: tuple[DisconnectPlan, ...] = ("call-back", "wait")
DEFAULT_CHECK: SafetyCheck = "optional"
MAX_WAIT_MINUTES = 60
MAX_NUMBERS = 6
MAX_LABEL = 60

_NUMBER = re.compile(r"^\+?[0-9][0-9 ]{1,18}[0-9]$")


@dataclass(frozen=True)
class SafetySettings:
    """Per room: whether the check is asked (and whether it can be skipped), and the prefilled disconnect plan."""

    check: SafetyCheck = DEFAULT_CHECK
    plan: DisconnectPlan = ""  # "": the client chooses
    wait_minutes: int = 0  # with plan "wait": the minutes the therapist waits (prefill)

    def claims(self) -> dict[str, Any]:
        """The compact form signed into room tokens."""
        return {"c": self.check, "p": self.plan, "w": self.wait_minutes}

    @classmethod
    def from_claims(cls, raw: Any) -> SafetySettings:
        """From a verified token's claims; an older token without them gets the defaults. Raises ValueError."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError("safety claims")
        return cls.parse(raw.get("c", DEFAULT_CHECK), raw.get("p", ""), raw.get("w", 0))

    @classmethod
    def parse(cls, check: Any, plan: Any, wait_minutes: Any) -> SafetySettings:
        """Validates the settings (room creation and token claims alike); raises ValueError with a reason."""
        if check not in CHECKS:
            raise ValueError("safety_check is required, optional or off")
        if plan not in ("", *PLANS):
            raise ValueError("disconnect_plan is call-back or wait")
        if isinstance(wait_minutes, bool) or not isinstance(wait_minutes, int):
            raise ValueError("disconnect_wait_minutes is a whole number of minutes")
        if plan == "wait" and not 1 <= wait_minutes <= MAX_WAIT_MINUTES:
            raise ValueError(f"disconnect_wait_minutes is between 1 and {MAX_WAIT_MINUTES} with the plan wait")
        if plan != "wait" and wait_minutes:
            raise ValueError("disconnect_wait_minutes goes with disconnect_plan wait")
        return cls(cast("SafetyCheck", check), cast("DisconnectPlan", plan), wait_minutes)

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> SafetySettings:
        """From the optional room-creation fields; a bad value is a typed ``invalid-message``."""
        try:
            return cls.parse(body.get("safety_check", DEFAULT_CHECK), body.get("disconnect_plan") or "",
                             body.get("disconnect_wait_minutes", 0))
        except ValueError as err:
            raise SignalingError("invalid-message", str(err)) from None

    def public(self) -> dict[str, Any]:
        """What the API and the client page see."""
        return {"check": self.check, "plan": self.plan or None,
                "wait_minutes": self.wait_minutes if self.plan == "wait" else None}


@dataclass(frozen=True)
class EmergencyNumber:
    """A number the safety form shows the client (e.g. 112), with the practice's label for it."""

    number: str
    label: str = ""

    def public(self) -> dict[str, str]:
        return {"number": self.number, "label": self.label}


DEFAULT_NUMBERS: tuple[EmergencyNumber, ...] = (EmergencyNumber("112"),)


def parse_numbers(text: str) -> tuple[EmergencyNumber, ...]:
    """``ALCOVE_EMERGENCY_NUMBERS``: ``number=label`` entries separated by ``;`` (the label is optional), e.g.
    ``112=Emergency;0800 801 200=Crisis line``. Empty: the default (112). Raises ValueError with the reason."""
    entries = [e.strip() for e in text.split(";") if e.strip()]
    if not entries:
        return DEFAULT_NUMBERS
    if len(entries) > MAX_NUMBERS:
        raise ValueError(f"ALCOVE_EMERGENCY_NUMBERS: at most {MAX_NUMBERS} numbers")
    out = []
    for entry in entries:
        number, _, label = entry.partition("=")
        number, label = number.strip(), " ".join(label.split())
        if not _NUMBER.match(number):
            raise ValueError(f"ALCOVE_EMERGENCY_NUMBERS: {number!r} is not a phone number (digits, spaces, a leading +)")
        if len(label) > MAX_LABEL or any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
            raise ValueError(f"ALCOVE_EMERGENCY_NUMBERS: the label of {number} is too long or has control characters")
        out.append(EmergencyNumber(number, label))
    return tuple(out)
