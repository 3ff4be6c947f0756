"""Fixtures of the SFU tests (the harness itself is in harness.py)."""

from .harness import loopback_only, sfu

__all__ = ["loopback_only", "sfu"]
