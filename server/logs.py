"""Privacy-safe logging: an allowlist of fields, each an opaque id, a code or a number.

Never a display name, token, SDP, ICE candidate, URL or IP address: such fields are not on the list, and any
value that is not an opaque id, a short code or a number is dropped.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Final

ALLOWED_FIELDS: Final = frozenset({
    "room", "conn", "pid", "role", "code", "reason", "count", "ms", "status", "kind", "port", "worker", "rooms",
    "tls", "version",
})
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
log = logging.getLogger("alcove")


def _safe(value: object) -> object | None:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and _SAFE_VALUE.match(value):
        return value
    return None


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one event as a JSON line of allowlisted fields."""
    record: dict[str, object] = {"event": event}
    for key, value in fields.items():
        if key in ALLOWED_FIELDS and (safe := _safe(value)) is not None:
            record[key] = safe
    log.log(level, json.dumps(record, separators=(",", ":")))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("alcove")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiohttp's access log writes client IP addresses and URLs: keep it off.
    logging.getLogger("aiohttp.access").disabled = True
