"""docs/protocol.md, the schema (signaling/messages.py) and protocol.js's list of types stay in line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import get_args

import msgspec
import pytest

from signaling import messages as m
from signaling.errors import CLOSE_CODES, SignalingError

from ..conftest import require

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text()


def sections(heading: str) -> dict[str, str]:
    """`### type` → its JSON example, within one `## heading` part of the document."""
    part = DOC.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    found = {}
    for name, body in re.findall(r"^### ([a-z-]+)\n(.*?)(?=^### |\Z)", part, flags=re.S | re.M):
        example = re.search(r"```json\n(.*?)\n```", body, flags=re.S)
        assert example, f"section {name} has no JSON example"
        found[name] = example.group(1)
    return found


def tags(union: object) -> set[str]:
    return {str(cls.__struct_config__.tag) for cls in get_args(union)}


def test_every_client_message_has_a_section_with_an_example_that_decodes() -> None:
    docs = sections("Client → server")
    assert set(docs) == set(m.CLIENT_TYPES) == tags(m.ClientMessage)
    for name, example in docs.items():
        decoded = m.decode_client(example)
        assert decoded.__struct_config__.tag == name


def test_every_server_message_has_a_section_with_an_example_that_decodes() -> None:
    docs = sections("Server → client")
    assert set(docs) == set(m.SERVER_TYPES) == tags(m.ServerMessage)
    for name, example in docs.items():
        decoded = m.decode_server(example)
        assert decoded.__struct_config__.tag == name
        assert json.loads(m.encode(decoded)) == json.loads(example), name


def test_the_error_table_lists_every_code_and_its_close_code() -> None:
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (.*?) \|$", DOC, flags=re.M))
    assert set(rows) == set(CLOSE_CODES)
    for code, close in CLOSE_CODES.items():
        if close is not None:
            assert f"close {close}" in rows[code], code


def test_protocol_js_knows_the_same_types() -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    out = subprocess.run(
        [node, "--input-type=module", "-e",
         "import {MESSAGE_TYPES} from './web/static/js/lib/protocol.js'; console.log(JSON.stringify(MESSAGE_TYPES))"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30)
    js = json.loads(out.stdout)
    assert js["client"] == list(m.CLIENT_TYPES)
    assert js["server"] == list(m.SERVER_TYPES)


@pytest.mark.parametrize("raw, code", [
    (b"not json", "bad-json"),
    (b"[1,2]", "bad-json"),
    (b'{"type": "teleport"}', "unknown-type"),
    (b'{"no": "type"}', "unknown-type"),
    (b'{"type": "admit"}', "invalid-message"),
    (b'{"type": "admit", "pid": "p1", "extra": 1}', "invalid-message"),
    (b'{"type": "extend", "minutes": 7}', "invalid-message"),
    (b'{"type": "admit", "pid": "bad pid!"}', "invalid-message"),
    (b'{"type": "offer", "to": "p1", "sdp": ""}', "invalid-message"),
    (b'{"type": "key", "to": null, "data": "' + b"x" * 40_000 + b'"}', "invalid-message"),
    (b'{"type": "candidate", "to": "p1", "candidate": "' + b"x" * 70_000 + b'"}', "too-large"),
])
def test_bad_input_gets_a_typed_error(raw: bytes, code: str) -> None:
    with pytest.raises(SignalingError) as err:
        m.decode_client(raw)
    assert err.value.code == code


def test_schema_rejects_unknown_fields_everywhere() -> None:
    for name in m.CLIENT_TYPES:
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(json.dumps({"type": name, "zzz": 1}).encode(), type=m.ClientMessage)


def test_the_close_code_table_lists_every_close_code_the_server_sends() -> None:
    """Every literal close code in the edge and the core, and every error's close code, has a row."""
    rows = set(int(code) for code in re.findall(r"^\| (\d{4}) \|", DOC.split("## Close codes", 1)[1], flags=re.M))
    sent = {code for code in CLOSE_CODES.values() if code is not None}
    for path in [*(ROOT / "server").rglob("*.py"), *(ROOT / "signaling").rglob("*.py")]:
        text = path.read_text()
        sent |= {int(c) for c in re.findall(r"close\([^()]*?\b(1\d{3}|4\d{3})\b", text, flags=re.I)}
        sent |= {int(c) for c in re.findall(r"close_code or (\d{4})", text)}
        sent |= {int(c) for c in re.findall(r"\bcode=(1\d{3}|4\d{3})\b", text)}
    assert {1000, 1001, 4000, 4009, 4012} <= sent  # the scan finds them
    assert sent - {1006} <= rows, sorted(sent - rows)
