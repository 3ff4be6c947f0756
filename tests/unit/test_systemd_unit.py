"""deploy/alcove.service against the package: the command, the user, the paths and the settings it names."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

import pytest

from server.config import Config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "alcove.service"
OPERATIONS = ROOT / "docs" / "operations.md"


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: str, key: str) -> str:
    [value] = unit()[section][key]
    return value


def unit_env() -> dict[str, str]:
    return dict(item.split("=", 1) for value in unit()["Service"].get("Environment", [])
                for item in shlex.split(value))


def test_the_command_is_the_packaged_console_script_serving_as_the_image_does() -> None:
    argv = shlex.split(one("Service", "ExecStart"))
    script = Path(argv[0])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert script.is_absolute() and script.name in scripts
    assert script.parent == Path("/opt/alcove/bin")  # the virtual environment docs/operations.md creates
    # the image's CMD runs the same subcommand of the same script
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd and json.loads(cmd[1])[:2] == [script.name, argv[1]] == ["alcove", "serve"]
    # the arguments parse with the installed entry point's own parser
    [ep] = [e for e in entry_points(group="console_scripts", name=script.name)]
    assert ep.value == scripts[script.name]
    module = sys.modules.get(ep.module) or __import__(ep.module, fromlist=["_"])
    args = module.build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.func.__name__ == "cmd_serve"


def test_a_dedicated_user_hardening_and_a_restart_policy() -> None:
    service = unit()["Service"]
    assert one("Service", "User") == one("Service", "Group") == "alcove"
    assert one("Service", "ProtectSystem") == "strict"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert one("Service", key) == "yes", key
    assert one("Service", "Restart") in ("on-failure", "always")
    # a restart (and a restart after a crash) leaves the SFU workers to the next process (docs/sfu.md 4.1)
    assert one("Service", "KillMode") == "process"
    assert "DynamicUser" not in service and "ReadWritePaths" not in service  # the state dir is the only one
    assert set(one("Service", "CapabilityBoundingSet").split()) <= {"CAP_NET_BIND_SERVICE"}
    assert one("Install", "WantedBy") == "multi-user.target"


def test_the_state_directory_is_the_data_dir_and_the_settings_are_known() -> None:
    state = Path("/var/lib") / one("Service", "StateDirectory")
    env = unit_env()
    assert Path(env["ALCOVE_DATA_DIR"]) == state == Path(one("Service", "WorkingDirectory"))
    assert Config.from_env(env).data_dir == state
    assert one("Service", "StateDirectoryMode") == "0700"
    documented = set(re.findall(r"^\| `(ALCOVE_[A-Z_]+)` \|", OPERATIONS.read_text(), re.M))
    assert set(env) <= documented
    env_file = one("Service", "EnvironmentFile")
    assert env_file == "/etc/alcove/alcove.env" and env_file in OPERATIONS.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify wants the program to exist: point it at this environment's console script.
    script = Path(sys.executable).parent / "alcove"
    assert script.exists() and find_spec("server") is not None
    copy = tmp_path / "alcove.service"
    copy.write_text(UNIT.read_text().replace("/opt/alcove/bin/alcove", str(script)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
