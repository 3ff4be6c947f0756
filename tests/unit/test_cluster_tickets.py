"""The cluster's sealed tickets and admission records, without Redis: nothing personal is readable in what Redis
would store, and only the ticket opens it."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.cluster.cluster import admission_from_json, admission_to_json, ticket_key
from signaling.room import ResumeClaims

from .core_fixtures import admission, spec


def test_an_admission_survives_the_trip_through_json() -> None:
    adm = admission(spec(), "client", "t1", ResumeClaims("r1", "p2", "t1", "client", True, "Alex", 3))
    assert admission_from_json(json.loads(json.dumps(admission_to_json(adm)))) == adm


def test_the_ticket_key_and_seal_come_from_the_ticket_alone() -> None:
    key, seal = ticket_key("w_abc")
    assert ticket_key("w_abc") == (key, seal) and ticket_key("w_abd")[0] != key
    assert key.startswith("alc:tk:") and "w_abc" not in key and len(seal) == 16
    body = json.dumps(admission_to_json(admission(spec(), "therapist", "t1"))).encode()  # host "Dr. Pop"
    nonce = os.urandom(12)
    blob = nonce + AESGCM(seal).encrypt(nonce, body, key.encode())
    # the name and the room id ("r1", quoted as the JSON has it: two bytes alone turn up in random bytes once in a
    # few hundred runs) are in the clear body and not in the sealed blob
    assert b"Dr. Pop" in body and b'"r1"' in body
    assert b"Dr. Pop" not in blob and b'"r1"' not in blob
    with pytest.raises(InvalidTag):
        AESGCM(ticket_key("w_other")[1]).decrypt(blob[:12], blob[12:], key.encode())
