"""The fuzzing budget (issue 10, item 8): per run, at least 50,000 generated messages through the one bounded
decoder and at least 2,000 random multi-client sequences through the room machine.

Marked ``fuzz``: the two tests are independent (run them apart with ``-m fuzz`` or in parallel processes) and
together take well under two minutes on two cores.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from server import jsondecode
from signaling import messages as m
from signaling.errors import ERROR_CODES, SignalingError

from .test_room_invariants import RoomMachine

pytestmark = pytest.mark.fuzz

DECODER_MESSAGES = 50_000
ROOM_SEQUENCES = 2_000

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                       st.text(max_size=20), st.sampled_from(m.CLIENT_TYPES))
json_values = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
_fields = st.sampled_from(["v", "ticket", "name", "resume", "intro", "pid", "grant", "message", "minutes", "to",
                           "sdp", "sig", "candidate", "sdp_mid", "sdp_mline_index", "data", "type", "extra"])
protocolish = st.builds(lambda kind, extra: {"type": kind, **extra}, st.sampled_from([*m.CLIENT_TYPES, "nope"]),
                        st.dictionaries(_fields, json_values, max_size=5))


def _deep(depth: int, opener: str) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"a":' if opener == "{" else ""
    return (opener + inner) * depth + "1" + closer * depth if opener == "[" else ('{"a":' * depth + "1" + "}" * depth)


light = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    protocolish.map(lambda v: json.dumps(v)),
    st.binary(max_size=64),
    st.text(max_size=64),
    st.builds(_deep, st.integers(1, 40), st.sampled_from("[{")),
    st.integers(min_value=2**53 - 8, max_value=10**400).map(lambda n: f'{{"type":"extend","minutes":{n}}}'),
    st.integers(min_value=2**53 - 8, max_value=10**400).map(lambda n: f'{{"token":"x","n":{n}}}'),
)
heavy = st.one_of(  # big inputs, one in a batch at most
    st.builds(_deep, st.integers(40, 20_000), st.sampled_from("[{")),
    st.integers(64 * 1024 - 40, 64 * 1024 + 40).map(lambda n: '{"type":"leave"}' + " " * (n - 16)),
)
BATCH = 25
batches = st.builds(lambda a, b: a + b, st.lists(light, min_size=BATCH, max_size=BATCH),
                    st.lists(heavy, max_size=1))


def _check_one(raw: str | bytes) -> None:
    try:
        msg = jsondecode.decode_client(raw)
    except SignalingError as err:
        assert err.code in ERROR_CODES
    else:
        assert str(type(msg).__struct_config__.tag) in m.CLIENT_TYPES
    try:
        body: Any = jsondecode.decode_body(raw)
    except SignalingError as err:
        assert err.code == "bad-json", err
    else:
        assert isinstance(body, dict)


SEEN = [0]


@settings(max_examples=DECODER_MESSAGES // BATCH, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(batches)
def _decode_batch(raws: list[str | bytes]) -> None:
    for raw in raws:
        _check_one(raw)
    SEEN[0] += len(raws)


def test_the_bounded_decoder_never_raises_anything_but_a_typed_error() -> None:
    SEEN[0] = 0
    _decode_batch()
    assert SEEN[0] >= DECODER_MESSAGES, SEEN[0]


class CountedRoomMachine(RoomMachine):
    runs = 0

    def __init__(self) -> None:
        super().__init__()
        CountedRoomMachine.runs += 1


def test_random_multi_client_sequences_keep_the_room_invariants() -> None:
    CountedRoomMachine.runs = 0
    run_state_machine_as_test(CountedRoomMachine, settings=settings(
        max_examples=ROOM_SEQUENCES, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
    assert CountedRoomMachine.runs >= ROOM_SEQUENCES, CountedRoomMachine.runs
