"""Privacy-safe logging: an allowlist of fields, each an opaque id, a code or a number.

Never a display name, token, SDP, ICE candidate, URL, header or IP address: such fields are not on the list, and
any value that is not an opaque id, a short code or a number is dropped.

Every logger goes through the same allowlist (:class:`AllowlistFormatter`): Alcove's own events, and whatever
aiohttp (``aiohttp.server``, ``aiohttp.web``), asyncio, aiortc or aioice print. A record that is not an Alcove
event keeps only its logger, its level, the exception's type and the traceback's code locations (file, line,
function); its message and the exception's text, which can quote a request, an address or a candidate, are
dropped.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from pathlib import PurePath
from typing import Final, TextIO

ALLOWED_FIELDS: Final = frozenset({
    "room", "conn", "pid", "role", "code", "reason", "count", "ms", "status", "kind", "port", "worker", "rooms",
    "tls", "version",
})
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z_<][A-Za-z0-9_.<>]{0,80}$")
_EVENT: Final = "alcove_event"
MAX_FRAMES: Final = 30
log = logging.getLogger("alcove")

#: Loggers of the libraries that run inside the server (they reach the root handler).
LIBRARY_LOGGERS: Final = ("aiohttp.server", "aiohttp.web", "aiohttp.websocket", "aiohttp.client", "asyncio",
                          "aiortc", "aioice", "av", "py.warnings")


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
    log.log(level, json.dumps(record, separators=(",", ":")), extra={_EVENT: True})


def _where(filename: str, lineno: int | None, function: str) -> str:
    """``package/module.py:line:function``: the last two path parts only (no directory of the host)."""
    parts = PurePath(filename).parts[-2:]
    name = function if _SAFE_NAME.match(function) else "?"
    return f"{'/'.join(parts)}:{lineno or 0}:{name}"


class AllowlistFormatter(logging.Formatter):
    """Formats Alcove's events as they are, and anything else as code locations only."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _EVENT, False):
            body = record.getMessage()  # built by log_event from allowlisted fields
        else:
            out: dict[str, object] = {"event": "log", "logger": record.name if _SAFE_NAME.match(record.name) else "?",
                                      "where": _where(record.pathname, record.lineno, record.funcName)}
            body = json.dumps(out, separators=(",", ":"))
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            frames = [_where(f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)]
            detail = {"exception": type(exc).__name__ if _SAFE_NAME.match(type(exc).__name__) else "?",
                      "frames": frames[-MAX_FRAMES:]}
            body = body[:-1] + "," + json.dumps(detail, separators=(",", ":"))[1:]
        return f"{self.formatTime(record)} {record.levelname} {body}"

    def formatException(self, ei: object) -> str:  # never the exception text
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


def configure(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Route every logger through the allowlist formatter, to stderr. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(AllowlistFormatter())
    root = logging.getLogger("alcove")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    everything = logging.getLogger()
    everything.handlers[:] = [handler]
    everything.setLevel(logging.WARNING)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
    logging.captureWarnings(True)
    # aiohttp's access log writes client IP addresses and URLs: keep it off.
    logging.getLogger("aiohttp.access").disabled = True
    return handler
