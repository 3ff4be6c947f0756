"""Group manners and the safety check for the Python participant, over end-to-end encrypted app messages.

The same kinds and rules as the browser (web/static/js/ui/manners.js, ui/safety-check.js): a client answers the
safety check privately to the therapist (``safety``) and raises or lowers its hand to everyone (``hand``); the
therapist mutes one member or asks it to unmute (``mute``, ``unmute-ask``, private) and spotlights one speaker
(``spotlight``, to everyone). ``mute``/``unmute-ask``/``spotlight`` count only when the *authenticated* sender is the
therapist of the signed roster (never because the server says so), and only in family and group rooms. Nothing of
it is written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .e2ee import ClientKeys
from .e2ee_glue import E2eeGlue
from .state import RoomState

GROUP_TYPES = ("family", "group")


def safety_body(where: str, contact_name: str, contact_phone: str, *, call_back: str | None = None,
                wait_minutes: int | None = None) -> dict[str, Any]:
    """The ``safety`` app message the browser's form sends: call back on a number, or wait N minutes."""
    if (call_back is None) == (wait_minutes is None):
        raise ValueError("the plan is either call_back=<number> or wait_minutes=<1..60>")
    plan: dict[str, Any] = {"kind": "call-back", "phone": call_back} if call_back is not None else {
        "kind": "wait", "minutes": wait_minutes}
    return {"k": "safety", "where": where, "contact": {"name": contact_name, "phone": contact_phone}, "plan": plan}


def valid_safety(body: dict[str, Any]) -> bool:
    """A well-formed ``safety`` body (the same limits as the browser's console)."""
    def text(v: Any, limit: int) -> bool:
        return isinstance(v, str) and 0 < len(v.strip()) <= limit
    contact = body.get("contact")
    plan = body.get("plan")
    if not (text(body.get("where"), 300) and isinstance(contact, dict) and isinstance(plan, dict)):
        return False
    if not (text(contact.get("name"), 80) and text(contact.get("phone"), 32)):
        return False
    if plan.get("kind") == "call-back":
        return text(plan.get("phone"), 32)
    minutes = plan.get("minutes")
    return plan.get("kind") == "wait" and isinstance(minutes, int) and not isinstance(minutes, bool) \
        and 1 <= minutes <= 60


class Manners:
    """Follows the app messages a participant received and obeys them (its own microphone for ``mute``)."""

    def __init__(self, state: RoomState, glue: E2eeGlue, set_muted: Callable[[bool], None]) -> None:
        self.state = state
        self.glue = glue
        self._set_muted = set_muted
        self.hands: set[str] = set()
        """Members whose hand is raised (from their own ``hand`` messages)."""
        self.spotlight: str | None = None
        self.muted = False
        """True after the therapist muted this participant (its audio track sends silence) until it unmutes."""
        self.unmute_asks = 0
        """How many times the therapist asked this participant to unmute."""
        self.safety_answers: dict[str, dict[str, Any]] = {}
        """Therapist: the clients' safety answers (this session's memory only)."""
        self._seen = 0

    @property
    def group_room(self) -> bool:
        return self.state.room is not None and self.state.room.type in GROUP_TYPES

    def therapist_pid(self) -> str | None:
        """The therapist as the keys prove it (the signed roster); our own pid on the therapist's side."""
        if self.state.role == "therapist":
            return self.state.pid
        keys = self.glue.keys
        return keys.therapist_pid if isinstance(keys, ClientKeys) else None

    def on_app(self) -> None:
        """Handles the app messages received since the last call (in arrival order)."""
        messages = self.glue.app_messages
        while self._seen < len(messages):
            from_pid, body, private = messages[self._seen]
            self._seen += 1
            self._handle(from_pid, body, private)

    def _handle(self, from_pid: str, body: dict[str, Any], private: bool) -> None:
        kind = body.get("k")
        by_therapist = from_pid == self.therapist_pid()
        i_am_therapist = self.state.role == "therapist"
        sender = self.state.roster.get(from_pid)
        from_client = sender is not None and sender.role == "client"
        if kind == "safety" and i_am_therapist and private and from_client and valid_safety(body):
            self.safety_answers[from_pid] = body
        elif kind == "hand" and self.group_room and not private and from_client and isinstance(body.get("up"), bool):
            if body["up"]:
                self.hands.add(from_pid)
            else:
                self.hands.discard(from_pid)
        elif kind == "mute" and self.group_room and by_therapist and private and not i_am_therapist:
            self.set_muted(True)
        elif kind == "unmute-ask" and self.group_room and by_therapist and private and not i_am_therapist:
            self.unmute_asks += 1
        elif kind == "spotlight" and self.group_room and by_therapist and not private:
            pid = body.get("pid")
            self.spotlight = pid if isinstance(pid, str) and pid else None
        # anything else (unknown kinds, a mute from a member, ...) is ignored

    def set_muted(self, muted: bool) -> None:
        self.muted = muted
        self._set_muted(muted)
