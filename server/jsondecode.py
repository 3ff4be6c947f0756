"""The one strict, bounded JSON decoder for every input: websocket messages and JSON HTTP bodies.

Limits (documented in docs/protocol.md and docs/admin-api.md):

- size: at most ``MAX_BYTES`` (64 KiB, inclusive);
- nesting: at most ``MAX_DEPTH`` arrays/objects deep, checked before any parser recurses;
- integers: within ±(2**53 − 1), the range a browser reads exactly.

Anything outside them is a typed ``bad-json`` (``too-large`` for an oversized websocket message), never an
unhandled exception.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from signaling import messages as m
from signaling.errors import SignalingError

MAX_BYTES: Final = m.MAX_MESSAGE_BYTES
MAX_DEPTH: Final = 16
MAX_INT: Final = 2**53 - 1

_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET: Final = re.compile(rb"[\[\]{}]")
_decoder: Final = msgspec.json.Decoder()


def check_depth(raw: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than ``max_depth`` (cheap: most messages have fewer brackets than the limit)."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise SignalingError("bad-json", f"JSON is nested at most {max_depth} deep")
        else:
            depth -= 1


def _check_ints(value: Any, depth: int = 0) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise SignalingError("bad-json", "an integer is out of range")
    elif isinstance(value, dict):
        for item in value.values():
            _check_ints(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_ints(item, depth + 1)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data


def decode_body(data: bytes | str) -> dict[str, Any]:
    """A JSON HTTP body: one object within the limits, or ``bad-json``."""
    raw = _as_bytes(data)
    if len(raw) > MAX_BYTES:
        raise SignalingError("bad-json", f"the body has at most {MAX_BYTES} bytes")
    check_depth(raw)
    try:
        body = _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise SignalingError("bad-json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SignalingError("bad-json", "the body is a JSON object")
    _check_ints(body)
    return body


def decode_client(data: bytes | str) -> m.ClientMessage:
    """One websocket message: the bounds, then the protocol's strict schema (``signaling.messages``)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_BYTES:
        raise SignalingError("too-large", f"a message has at most {MAX_BYTES} bytes")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # else it cannot be too deep (``check_depth``)
        check_depth(raw)
    try:
        return m.decode_client(raw)
    except RecursionError:  # pragma: no cover - check_depth stops it first
        raise SignalingError("bad-json", "the message is not valid JSON") from None
