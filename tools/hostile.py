"""A hostile signaling server, for tests and the probe: it lies about membership and withholds keys.

:class:`HostileProxy` is a reverse proxy in front of a real Alcove server (built on :class:`tools.mitm.MitmProxy`,
without the fingerprint swap). It plays the compromised server of docs/security.md §1 for the key protocol:

* **forge rosters and queues** -- :attr:`extra_roster` / :attr:`extra_queue` entries are added to every
  ``roster`` / ``queue`` it delivers, :attr:`hidden` pids are taken out of every roster (and
  :meth:`resend` pushes the forged views at once);
* **forge intros** -- a forged queue entry carries any intro (e.g. a ghost's, or a new key for a known pid);
* **replay credentials** -- every ``welcome.resume`` and ``admitted.grant`` it saw is kept
  (:attr:`credentials`, :attr:`grants`) for the test to replay, and :meth:`inject` delivers any message as if the
  server sent it;
* **forge the SFU's mapping** -- :attr:`swap` swaps two publishers in every ``tracks`` message;
* **withhold** -- :meth:`withhold` drops ``key`` messages of some kinds (``"epoch"``, ``"switch"``) on their way to
  a pid; every withheld message is counted in :attr:`withheld`.

Every ``key`` message it delivers is kept in :attr:`keys_seen` (the epochs a ghost may try to open), every ``app``
message in :attr:`apps_seen` (to replay, tamper with or deliver to someone else with :meth:`inject`).

    async with HostileProxy(alcove.url) as server:
        t = await Participant.join(server.url, therapist_link, ...)
        server.extra_roster.append({"pid": "p_ghost", "role": "client", "name": "Ghost", "connected": True})
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from peer.e2ee import message_kind
from tools.mitm import MitmProxy

__all__ = ["HostileProxy"]


class HostileProxy(MitmProxy):
    """A relay that forges rosters, queues and intros, keeps credentials and withholds key messages."""

    def __init__(self, upstream: str, **kw: Any) -> None:
        super().__init__(upstream, rewrite=False, answer_back=False, **kw)
        self.extra_roster: list[dict[str, Any]] = []
        """Roster entries added to every roster delivered (to everyone)."""
        self.extra_queue: list[dict[str, Any]] = []
        """Queue entries (with forged intros) added to every queue delivered."""
        self.hidden: set[str] = set()
        """Pids taken out of every roster delivered (and out of queues, unless forged there)."""
        self.swap: tuple[str, str] | None = None
        """Two pids swapped in every SFU ``tracks`` mapping delivered (the SFU shows A's media as B's)."""
        self.only: set[str] = set()
        """When not empty, rosters and queues are forged only on their way to these pids."""
        self._withhold: dict[str, set[str]] = {}
        self.withheld: list[tuple[str, str]] = []
        """(to pid, key kind) of every key message withheld."""
        self.keys_seen: list[tuple[str, str]] = []
        """(to pid, data) of every key message delivered."""
        self.credentials: dict[str, str] = {}
        """pid -> the newest resume credential the server gave it (to replay)."""
        self.grants: dict[str, str] = {}
        """pid -> the newest grant delivered to it (to replay to someone else)."""
        self.apps_seen: list[tuple[str, dict[str, Any]]] = []
        """(to pid, message) of every ``app`` message delivered."""
        self._last: dict[str, dict[str, dict[str, Any]]] = {}

    def withhold(self, pid: str, *kinds: str) -> None:
        """From now on, drop ``key`` messages of ``kinds`` (``epoch``, ``switch``; none = all) on their way to pid."""
        self._withhold[pid] = set(kinds) or {"*"}

    def release(self, pid: str) -> None:
        self._withhold.pop(pid, None)

    def _forge(self, msg: dict[str, Any]) -> dict[str, Any]:
        kind = msg.get("type")
        if kind == "roster" and isinstance(msg.get("participants"), list):
            people = [p for p in msg["participants"] if p.get("pid") not in self.hidden]
            have = {p.get("pid") for p in people}
            people += [dict(e) for e in self.extra_roster if e.get("pid") not in have]
            return {**msg, "participants": people}
        if kind == "queue" and isinstance(msg.get("waiting"), list):
            forged = {e.get("pid") for e in self.extra_queue}
            waiting = [w for w in msg["waiting"] if w.get("pid") not in self.hidden and w.get("pid") not in forged]
            waiting += [dict(e) for e in self.extra_queue]
            return {**msg, "waiting": waiting}
        return msg

    def _from_server(self, text: str, me: dict[str, str]) -> str | None:
        msg = self._read(text, me)
        if msg is None:
            return text
        kind = msg.get("type")
        if kind == "welcome":
            if isinstance(msg.get("resume"), str):
                self.credentials[me["pid"]] = msg["resume"]
            return text
        pid = me.get("pid", "")
        if kind == "admitted" and isinstance(msg.get("grant"), str):
            self.grants[pid] = msg["grant"]
        if kind in ("roster", "queue"):
            self._last.setdefault(pid, {})[str(kind)] = msg
            return json.dumps(self._forge(msg)) if not self.only or pid in self.only else text
        if kind == "tracks" and self.swap and isinstance(msg.get("mids"), dict) and (not self.only or pid in self.only):
            x, y = self.swap
            swapped = {mid: {**ref, "pid": y if ref.get("pid") == x else x if ref.get("pid") == y else ref.get("pid")}
                       for mid, ref in msg["mids"].items() if isinstance(ref, dict)}
            return json.dumps({**msg, "mids": swapped})
        if kind == "key" and isinstance(msg.get("data"), str):
            what = message_kind(msg["data"]) or "?"
            rule = self._withhold.get(pid, set())
            if "*" in rule or what in rule:
                self.withheld.append((pid, what))
                return None
            self.keys_seen.append((pid, msg["data"]))
        if kind == "app":
            self.apps_seen.append((pid, msg))
        return text

    async def inject(self, pid: str, msg: dict[str, Any]) -> bool:
        """Deliver ``msg`` to ``pid`` as if the server sent it; False if that pid is not connected here."""
        ws = self._sockets.get(pid)
        if ws is None:
            return False
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps(msg))
            return True
        return False

    async def resend(self, pid: str) -> None:
        """Deliver the last roster and queue ``pid`` got again, with the current forgeries."""
        for kind in ("roster", "queue"):
            last = self._last.get(pid, {}).get(kind)
            if last is None and kind == "queue" and self.extra_queue:
                last = {"type": "queue", "waiting": []}
            if last is not None:
                await self.inject(pid, self._forge(last) if not self.only or pid in self.only else last)
