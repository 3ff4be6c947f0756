"""TURN REST-API credentials: format, expiry cap, URL order, masking."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from rtc.ice import aiortc_configuration, aiortc_ice_servers
from server.turn import (
    MAX_LIFETIME_S,
    TurnConfig,
    ice_server_entry,
    issue_credentials,
    parse_turn_urls,
    verify_credentials,
)

SECRET = "s3cr3t-shared-with-coturn"
URLS = ("turns:turn.example.org:443?transport=tcp", "turn:turn.example.org:3478?transport=udp")
NOW = 1_764_165_600.0  # 2025-11-26T14:00:00Z


def config(**kw: object) -> TurnConfig:
    return TurnConfig(urls=kw.pop("urls", URLS), secret=kw.pop("secret", SECRET), **kw)  # type: ignore[arg-type]


def test_credentials_follow_the_turn_rest_scheme() -> None:
    creds = issue_credentials(config(), opaque_id="u_71b2", now=NOW, session_ends_at=NOW + 3000)
    expiry = int(NOW + 3000 + 300)
    assert creds["username"] == f"{expiry}:u_71b2"
    expected = base64.b64encode(hmac.new(SECRET.encode(), creds["username"].encode(), hashlib.sha1).digest())
    assert creds["credential"] == expected.decode()
    assert creds["expires_at"] == expiry
    assert set(ice_server_entry(creds)) == {"urls", "username", "credential"}


def test_udp_turn_url_comes_first() -> None:
    creds = issue_credentials(config(), opaque_id="u_1", now=NOW, session_ends_at=NOW + 60)
    assert creds["urls"][0] == "turn:turn.example.org:3478?transport=udp"
    assert parse_turn_urls("turns:h:443?transport=tcp, turn:h:3478?transport=tcp turn:h:3478") == (
        "turn:h:3478", "turn:h:3478?transport=tcp", "turns:h:443?transport=tcp",
    )


def test_expiry_is_the_session_end_plus_margin() -> None:
    creds = issue_credentials(config(ttl_margin_s=120), opaque_id="u_1", now=NOW, session_ends_at=NOW + 600)
    assert creds["expires_at"] == int(NOW + 720)


def test_expiry_is_capped_at_four_hours() -> None:
    creds = issue_credentials(config(), opaque_id="u_1", now=NOW, session_ends_at=NOW + 10 * 3600)
    assert creds["expires_at"] == int(NOW + MAX_LIFETIME_S)
    assert MAX_LIFETIME_S == 4 * 3600


def test_no_credentials_once_the_session_and_margin_are_over() -> None:
    with pytest.raises(ValueError):
        issue_credentials(config(), opaque_id="u_1", now=NOW, session_ends_at=NOW - 301)


@pytest.mark.parametrize("bad", ["", "Alex Smith", "a:b", "x" * 65, "p_ü"])
def test_opaque_id_must_be_opaque(bad: str) -> None:
    with pytest.raises(ValueError):
        issue_credentials(config(), opaque_id=bad, now=NOW, session_ends_at=NOW + 60)


def test_verify_accepts_valid_and_refuses_expired_forged_or_malformed() -> None:
    creds = issue_credentials(config(), opaque_id="u_1", now=NOW, session_ends_at=NOW + 600)
    user, cred = creds["username"], creds["credential"]
    assert verify_credentials(config(), username=user, credential=cred, now=NOW + 1)
    assert verify_credentials(SECRET, username=user, credential=cred, now=NOW + 1)
    assert not verify_credentials(config(), username=user, credential=cred, now=creds["expires_at"])
    assert not verify_credentials(config(secret="other"), username=user, credential=cred, now=NOW + 1)
    assert not verify_credentials(config(), username=user.replace("u_1", "u_2"), credential=cred, now=NOW)
    assert not verify_credentials(config(), username="u_1", credential=cred, now=NOW)


def test_secret_is_masked_in_repr_and_str() -> None:
    cfg = config()
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert "********" in repr(cfg)
    assert "turn.example.org" in repr(cfg)


@pytest.mark.parametrize(
    "kw",
    [{"secret": ""}, {"urls": ()}, {"urls": ("http://x",)}, {"urls": ("stun:x:3478",)}, {"ttl_margin_s": -1},
     {"urls": "turn:x:3478"}],
)
def test_config_refuses_invalid_values(kw: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        config(**kw)


def test_from_env() -> None:
    assert TurnConfig.from_env({}) is None
    cfg = TurnConfig.from_env({"ALCOVE_TURN_URLS": "turns:t:443?transport=tcp,turn:t:3478",
                               "ALCOVE_TURN_SECRET": "x"})
    assert cfg is not None and cfg.urls == ("turn:t:3478", "turns:t:443?transport=tcp")
    with pytest.raises(ValueError):
        TurnConfig.from_env({"ALCOVE_TURN_URLS": "turn:t:3478"})


def test_aiortc_conversion_puts_udp_first_and_uses_the_relay_enum() -> None:
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    creds = issue_credentials(config(), opaque_id="u_1", now=NOW, session_ends_at=NOW + 60)
    entry = {**ice_server_entry(creds), "urls": list(reversed(creds["urls"]))}
    (server,) = aiortc_ice_servers([entry])
    assert server.urls[0] == "turn:turn.example.org:3478?transport=udp"
    assert (server.username, server.credential) == (creds["username"], creds["credential"])
    conf = aiortc_configuration([entry], relay_only=True)
    assert conf.iceTransportPolicy is RTCIceTransportPolicy.RELAY
    assert aiortc_configuration([], relay_only=False).iceTransportPolicy is RTCIceTransportPolicy.ALL
