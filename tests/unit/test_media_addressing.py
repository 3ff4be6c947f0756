"""SFU addressing settings: ALCOVE_MEDIA_ANNOUNCED_ADDRESS, ALCOVE_MEDIA_PORTS, loopback by itself, reachability."""

from __future__ import annotations

import pytest

from server.config import Config
from server.sfu.addressing import (
    MediaAddressing,
    announce,
    has_candidates,
    parse_announced_address,
    parse_ports,
    serves_loopback_only,
)

ANSWER = "\r\n".join([
    "v=0",
    "o=- 1 1 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "m=video 40001 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 10.0.0.5",
    "a=candidate:abc 1 udp 2130706431 10.0.0.5 40001 typ host",
    "a=candidate:def 1 udp 1694498815 203.0.113.9 50000 typ srflx raddr 10.0.0.5 rport 40001",
    "a=candidate:ghi 1 udp 16777215 198.51.100.3 51000 typ relay raddr 10.0.0.5 rport 40001",
    "a=candidate:jkl 1 udp 2130706431 127.0.0.1 40002 typ host",
    "a=candidate:mno 1 udp 2130706431 2001:db8::5 40003 typ host",
    "",
])


def test_ports_parse_a_range_and_refuse_anything_else() -> None:
    assert parse_ports("40000-40999") == (40000, 40999)
    assert parse_ports(" 50000 - 50000 ") == (50000, 50000)
    for bad in ("40000", "40999-40000", "80-90", "40000-70000", "a-b", "40000:40999", ""):
        with pytest.raises(ValueError, match="ALCOVE_MEDIA_PORTS"):
            parse_ports(bad)


def test_announced_address_is_an_ip_address() -> None:
    assert parse_announced_address(" 203.0.113.9 ") == "203.0.113.9"
    assert parse_announced_address("2001:db8::1") == "2001:db8::1"
    for bad in ("video.example.org", "0.0.0.0", "224.0.0.1", "203.0.113.9:40000"):
        with pytest.raises(ValueError, match="ALCOVE_MEDIA_ANNOUNCED_ADDRESS"):
            parse_announced_address(bad)


def test_config_reads_the_media_settings_and_refuses_bad_ones_with_a_typed_error() -> None:
    config = Config.from_env({"ALCOVE_MEDIA_ANNOUNCED_ADDRESS": "203.0.113.9", "ALCOVE_MEDIA_PORTS": "40000-40099",
                              "ALCOVE_HOST": "0.0.0.0"})
    assert config.media_addressing() == MediaAddressing(loopback=False, announced="203.0.113.9",
                                                        ports=(40000, 40099))
    with pytest.raises(ValueError, match="ALCOVE_MEDIA_PORTS"):
        Config.from_env({"ALCOVE_MEDIA_PORTS": "40000"})


def test_loopback_candidates_come_by_themselves_only_when_no_client_can_be_elsewhere() -> None:
    assert serves_loopback_only("127.0.0.1", None)
    assert serves_loopback_only("::1", "https://localhost:8443")
    assert not serves_loopback_only("127.0.0.1", "https://video.example.org")  # behind a reverse proxy
    assert not serves_loopback_only("0.0.0.0", None)
    assert Config().media_addressing().loopback  # the default `alcove serve`
    assert not Config(host="127.0.0.1", public_url="https://video.example.org").media_addressing().loopback
    assert Config(host="0.0.0.0", media_loopback=True).media_addressing().loopback


def test_reachability() -> None:
    nothing = MediaAddressing()
    assert nothing.unreachable_reason([], relay=False) == "no-address"
    assert nothing.unreachable_reason(["127.0.0.1"], relay=False) == "no-address"
    assert nothing.unreachable_reason(["10.0.0.5"], relay=False) is None
    assert nothing.unreachable_reason([], relay=True) is None
    assert MediaAddressing(loopback=True).unreachable_reason([], relay=False) is None
    assert MediaAddressing(announced="203.0.113.9").unreachable_reason([], relay=False) is None


def test_announce_rewrites_host_candidates_and_the_connection_line_only() -> None:
    out = announce(ANSWER, "203.0.113.9").split("\r\n")
    assert "a=candidate:abc 1 udp 2130706431 203.0.113.9 40001 typ host" in out
    assert "a=candidate:jkl 1 udp 2130706431 203.0.113.9 40002 typ host" in out
    assert "c=IN IP4 203.0.113.9" in out
    assert "a=candidate:def 1 udp 1694498815 203.0.113.9 50000 typ srflx raddr 10.0.0.5 rport 40001" in out
    assert "a=candidate:ghi 1 udp 16777215 198.51.100.3 51000 typ relay raddr 10.0.0.5 rport 40001" in out
    assert "o=- 1 1 IN IP4 0.0.0.0" in out
    assert "a=candidate:mno 1 udp 2130706431 2001:db8::5 40003 typ host" in out  # the other family keeps its own
    v6 = announce(ANSWER, "2001:db8::1").split("\r\n")
    assert "a=candidate:mno 1 udp 2130706431 2001:db8::1 40003 typ host" in v6
    assert "a=candidate:abc 1 udp 2130706431 10.0.0.5 40001 typ host" in v6 and "c=IN IP4 10.0.0.5" in v6
    assert has_candidates(ANSWER) and not has_candidates("v=0\r\nc=IN IP4 0.0.0.0\r\n")
