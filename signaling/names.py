"""Display names: what a person types, cleaned of control and bidi characters."""

from __future__ import annotations

import unicodedata

from .errors import SignalingError

MAX_NAME = 64


def clean_name(raw: str) -> str:
    """Remove control (Cc), format (Cf: bidi overrides, zero-width) and separator oddities, collapse spaces.

    Raises ``SignalingError('name-invalid')`` when 0 or more than 64 characters remain.
    """
    kept = []
    for ch in raw:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            if ch in "\t\n\r":
                kept.append(" ")
            continue
        if cat in ("Zl", "Zp", "Zs"):
            kept.append(" ")
            continue
        kept.append(ch)
    name = " ".join("".join(kept).split())
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= MAX_NAME:
        raise SignalingError("name-invalid", f"a name has 1 to {MAX_NAME} characters")
    return name


def first_name(name: str) -> str:
    """Group manners: what other members see of a client's name in family and group rooms (its first word)."""
    return name.split(" ", 1)[0] if name else name
