"""Debian's Chromium for tests and benchmarks: one place for its path and flags (never a downloaded browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROME_ARGS: Final = (
    "--use-fake-device-for-media-stream",  # a synthetic camera and microphone
    "--use-fake-ui-for-media-stream",  # grant camera/microphone without a prompt
    "--allow-loopback-in-peer-connection",  # gather 127.0.0.1 (loopback-only namespaces)
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-first-run",
    "--disable-background-networking",  # no connections to Google's services
    "--disable-component-update",
    "--disable-sync",
)

# Screen sharing without a picker: getDisplayMedia picks the capture source whose title contains "Alcove" (the
# fake desktop source with the fake devices above) and accepts a tab capture at once.
SHARE_ARGS: Final = (
    "--auto-select-desktop-capture-source=Alcove",
    "--auto-accept-this-tab-capture",
)


async def launch(playwright: Any, *extra_args: str) -> Any:
    """Launch headless Chromium through Playwright with Alcove's test flags."""
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                            args=[*CHROME_ARGS, *extra_args])
