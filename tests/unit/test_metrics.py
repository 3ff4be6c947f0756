"""/metrics exposition: parses, fixed label sets, nothing identifying in labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import MAX_ERROR_CODES, Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = m.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_parses_and_counts() -> None:
    m = Metrics()
    m.set_rooms({"open": 2, "in-session": 1})
    m.set_participants("client", 3)
    m.set_participants("therapist", 1)
    m.set_waiting_clients(4)
    m.admission()
    m.decline()
    m.session_ended("time")
    m.error("rate-limited")
    m.error("rate-limited")
    m.turn_credentials(2)
    m.ws_connection()
    m.observe_relay_latency(0.0004)
    _body, content_type = m.render()
    assert content_type.startswith("text/plain")
    s = _samples(m)
    assert s[("alcove_rooms", (("state", "open"),))] == 2
    assert s[("alcove_rooms", (("state", "scheduled"),))] == 0
    assert s[("alcove_participants", (("role", "client"),))] == 3
    assert s[("alcove_waiting_clients", ())] == 4
    assert s[("alcove_admissions_total", ())] == 1
    assert s[("alcove_declines_total", ())] == 1
    assert s[("alcove_sessions_ended_total", (("reason", "time"),))] == 1
    assert s[("alcove_sessions_ended_total", (("reason", "admin"),))] == 0
    assert s[("alcove_errors_total", (("code", "rate-limited"),))] == 2
    assert s[("alcove_turn_credentials_issued_total", ())] == 2
    assert s[("alcove_ws_connections_total", ())] == 1
    assert s[("alcove_relay_latency_seconds_bucket", (("le", "0.0005"),))] == 1
    assert s[("alcove_relay_latency_seconds_bucket", (("le", "0.00025"),))] == 0
    assert s[("alcove_relay_latency_seconds_count", ())] == 1


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.admission()
    assert _samples(b)[("alcove_admissions_total", ())] == 0


@pytest.mark.parametrize(
    "code", ["Bad-Json", "10.0.0.1", "alex@example.org", "x", "tk_3q2abc", "room link", "a" * 42, "", "-x"]
)
def test_error_codes_must_be_kebab_case(code: str) -> None:
    with pytest.raises(ValueError):
        Metrics().error(code)


def test_error_code_cardinality_is_capped() -> None:
    m = Metrics()
    for i in range(MAX_ERROR_CODES):
        m.error(f"code-{i}")
    with pytest.raises(ValueError):
        m.error("one-too-many")
    m.error("code-0")  # known codes still count


@pytest.mark.parametrize(
    ("call", "value"),
    [("set_participants", "observer"), ("session_ended", "crash"), ("set_rooms", "paused")],
)
def test_fixed_label_sets_refuse_other_values(call: str, value: str) -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        if call == "set_rooms":
            m.set_rooms({value: 1})
        elif call == "set_participants":
            m.set_participants(value, 1)
        else:
            m.session_ended(value)


def test_no_label_can_hold_an_address_name_or_token() -> None:
    m = Metrics()
    for code in ("bad-json", "room-full", "ticket-invalid"):
        m.error(code)
    m.throttle("ticket")
    allowed = {"state", "role", "reason", "code", "le", "kind"}
    for (_, labels) in _samples(m):
        for name, value in labels:
            assert name in allowed
            assert ":" not in value and "@" not in value and " " not in value


def test_throttle_kinds_are_a_fixed_set() -> None:
    m = Metrics()
    m.throttle("admin-auth")
    with pytest.raises(ValueError):
        m.throttle("127.0.0.1")
    assert b'alcove_throttled_total{kind="admin-auth"} 1.0' in m.render()[0]


def test_relay_latency_buckets_hold_their_bound_and_sum_every_observation() -> None:
    m = Metrics()
    for seconds in (0.0005, 0.0005001, -0.2, 2.0):  # on a bound, just above it, a clock step back, past the last
        m.observe_relay_latency(seconds)
    s = _samples(m)
    bucket = {le: s[("alcove_relay_latency_seconds_bucket", (("le", le),))] for le in ("0.0001", "0.0005", "0.001",
                                                                                        "1.0", "+Inf")}
    assert bucket == {"0.0001": 1, "0.0005": 2, "0.001": 3, "1.0": 3, "+Inf": 4}
    assert s[("alcove_relay_latency_seconds_count", ())] == 4
    assert abs(s[("alcove_relay_latency_seconds_sum", ())] - 2.0010001) < 1e-9
