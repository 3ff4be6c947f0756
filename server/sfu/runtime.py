"""Where the SFU workers' control sockets live, and whether a previous signaling process left some (light: no aiortc)."""

from __future__ import annotations

from pathlib import Path

SOCKET_NAME = "w{}.sock"
"""A worker's control socket in the runtime directory (``w0.sock``, ``w1.sock``, …)."""


def adoptable(runtime_dir: Path | None) -> bool:
    """Whether ``runtime_dir`` holds worker sockets a previous signaling process left (their workers may live)."""
    return runtime_dir is not None and runtime_dir.is_dir() and any(runtime_dir.glob(SOCKET_NAME.format("*")))
