"""No Redis, no change: without ALCOVE_REDIS_URL the server runs alone, in memory, and never loads the Redis client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, sys
from pathlib import Path
from aiohttp import web
from server.app import create_app
from server.config import Config
from server.state import HUB

async def main():
    config = Config.from_env({"ALCOVE_DATA_DIR": sys.argv[1]})
    app = create_app(config.with_(tls=False))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        hub = app[HUB]
        print(hub.cluster is None, "redis" in sys.modules, "server.cluster.cluster" in sys.modules)
    finally:
        await runner.cleanup()

asyncio.run(main())
"""


def test_without_a_redis_url_the_server_is_one_process_in_memory(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["True", "False", "False"], out.stdout + out.stderr
