"""Ephemeral TURN credentials in the TURN REST scheme (coturn's ``use-auth-secret``).

The username is ``<expiry>:<opaque id>`` (expiry in Unix seconds) and the credential is
``base64(HMAC-SHA1(secret, username))``. coturn recomputes the HMAC with the same shared secret and refuses
(401) a username whose expiry has passed or whose credential does not match. Nothing is stored server-side.

Credentials go only to admitted participants, expire with the session plus a short margin (never more than
:data:`MAX_LIFETIME_S` after they were issued), and are issued again before an ICE restart.

aiortc's view of these servers (URL order, the relay-only enum) lives in :mod:`rtc.ice`.

This module has no side effects on import.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtc.urls import URL_RE, order_urls, url_rank

MAX_LIFETIME_S = 4 * 3600
"""A credential is never valid for more than 4 hours after it was issued."""

_OPAQUE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_turn_urls(value: str) -> tuple[str, ...]:
    """Parse ``ALCOVE_TURN_URLS`` (comma or whitespace separated) into validated, ordered URLs."""
    urls = [u for u in re.split(r"[,\s]+", value.strip()) if u]
    for url in urls:
        if URL_RE.match(url) is None:
            raise ValueError(f"not a stun:/turn:/turns: URL: {url!r}")
    return order_urls(urls)


@dataclass(frozen=True)
class TurnConfig:
    """TURN servers and the secret shared with coturn (``static-auth-secret``)."""

    urls: tuple[str, ...]
    secret: str
    ttl_margin_s: int = 300

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            raise TypeError("urls must be a sequence of URLs, not a string")
        if not self.urls:
            raise ValueError("at least one TURN URL is required")
        for url in self.urls:
            if URL_RE.match(url) is None:
                raise ValueError(f"not a stun:/turn:/turns: URL: {url!r}")
        if not any(url_rank(u) <= 2 for u in self.urls):
            raise ValueError("at least one turn: or turns: URL is required")
        if not self.secret:
            raise ValueError("the TURN secret must not be empty")
        if not 0 <= self.ttl_margin_s <= MAX_LIFETIME_S:
            raise ValueError("ttl_margin_s must be between 0 and 4 hours")
        object.__setattr__(self, "urls", order_urls(self.urls))

    def __repr__(self) -> str:
        return f"TurnConfig(urls={self.urls!r}, secret='********', ttl_margin_s={self.ttl_margin_s!r})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TurnConfig | None:
        """``ALCOVE_TURN_URLS`` + ``ALCOVE_TURN_SECRET``; None when TURN is not configured (no URLs)."""
        raw = environ.get("ALCOVE_TURN_URLS", "").strip()
        if not raw:
            return None
        secret = environ.get("ALCOVE_TURN_SECRET", "")
        if not secret:
            raise ValueError("ALCOVE_TURN_URLS is set but ALCOVE_TURN_SECRET is empty")
        return cls(urls=parse_turn_urls(raw), secret=secret)


def _sign(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def credential_expiry(config: TurnConfig, *, now: float, session_ends_at: float) -> int:
    """min(session end + margin, now + 4 h), in whole Unix seconds (floored: never later than the cap)."""
    expiry = math.floor(min(session_ends_at + config.ttl_margin_s, now + MAX_LIFETIME_S))
    if expiry <= now:
        raise ValueError("the session is over: no TURN credentials")
    return expiry


def issue_credentials(config: TurnConfig, *, opaque_id: str, now: float, session_ends_at: float) -> dict[str, Any]:
    """An RTCIceServer-shaped dict plus ``expires_at`` (Unix seconds).

    ``{"urls": [...], "username": "<expiry>:<opaque_id>", "credential": "<base64 HMAC-SHA1>",
    "expires_at": <int>}``. Use :func:`ice_server_entry` to drop ``expires_at`` before sending it as an
    ``ice_servers`` entry. ``opaque_id`` must be an opaque participant id (never a name, token or address):
    coturn logs usernames.
    """
    if _OPAQUE_ID_RE.match(opaque_id) is None:
        raise ValueError("opaque_id must be 1-64 characters of [A-Za-z0-9_-]")
    expiry = credential_expiry(config, now=now, session_ends_at=session_ends_at)
    username = f"{expiry}:{opaque_id}"
    return {
        "urls": list(config.urls),
        "username": username,
        "credential": _sign(config.secret, username),
        "expires_at": expiry,
    }


def issue_test_credentials(config: TurnConfig, *, opaque_id: str, now: float, lifetime_s: int) -> dict[str, Any]:
    """Credentials for the pre-join connectivity test (``server.echo``): valid ``lifetime_s`` seconds, no margin.

    Given to a client that has not been admitted, so they must not outlive the test: see docs/security.md.
    """
    if not 1 <= lifetime_s <= 300:
        raise ValueError("a test credential lives between 1 second and 5 minutes")
    short = TurnConfig(urls=config.urls, secret=config.secret, ttl_margin_s=0)
    return issue_credentials(short, opaque_id=opaque_id, now=now, session_ends_at=now + lifetime_s)


def ice_server_entry(credentials: Mapping[str, Any]) -> dict[str, Any]:
    """Only the RTCIceServer keys (``urls``, ``username``, ``credential``) of :func:`issue_credentials`."""
    return {k: credentials[k] for k in ("urls", "username", "credential") if k in credentials}


def verify_credentials(config: TurnConfig | str, *, username: str, credential: str, now: float) -> bool:
    """What coturn checks: the HMAC matches and the expiry in the username is still in the future."""
    secret = config.secret if isinstance(config, TurnConfig) else config
    expiry_text, sep, _ = username.partition(":")
    if not sep or not expiry_text.isdigit():
        return False
    if int(expiry_text) <= now:
        return False
    return hmac.compare_digest(_sign(secret, username), credential)
