"""The operator's documentation keeps up with the code: every ALCOVE_* setting, the deployment sections, certs/."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
NOT_CODE = {"tests", "docs", "web", "deploy", "certs", "build", "dist", "node_modules"}

# How code reads or hands on an environment variable: os.environ[...], environ.get(...), env.get(...),
# os.getenv(...), a key of an environment dict given to a child process, or a value of a name table.
_ENV_USE = re.compile(r"""(?:\b(?:environ|env|getenv)\b[^\n]{0,24}?|[{,:]\s*)["'](ALCOVE_[A-Z0-9_]+)["']""")


def code_variables() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_CODE or rel.parts[0].startswith("."):
            continue
        for name in _ENV_USE.findall(path.read_text()):
            found.setdefault(name, set()).add(str(rel))
    return found


def table_variables() -> set[str]:
    configure = OPERATIONS.read_text().split("## Configure", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(ALCOVE_[A-Z0-9_]+)` \|", configure, re.M))


def test_the_scan_finds_the_variables_it_must() -> None:
    found = code_variables()
    assert {"ALCOVE_HOST", "ALCOVE_MEDIA_PORTS", "ALCOVE_MEDIA_ANNOUNCED_ADDRESS", "ALCOVE_ADMIN_KEY"} <= set(found)
    assert "ALCOVE_SUITE" not in found  # a constant's name in __all__, not a setting


def test_every_variable_in_the_code_is_in_the_configure_table_and_the_reverse() -> None:
    code, table = code_variables(), table_variables()
    missing = {name: sorted(files) for name, files in code.items() if name not in table}
    assert not missing, f"used in the code but not in docs/operations.md's Configure table: {missing}"
    assert not table - set(code), f"in the Configure table but used nowhere in the code: {sorted(table - set(code))}"


def test_deployment_files_name_only_documented_variables() -> None:
    table = table_variables()
    for name in ("docker-compose.yml", "deploy/alcove.env.example", "deploy/alcove.service", "Dockerfile"):
        used = set(re.findall(r"\b(ALCOVE_[A-Z0-9_]+)", (ROOT / name).read_text()))
        assert used <= table, (name, sorted(used - table))


def test_operations_has_the_fresh_vm_and_nat_sections() -> None:
    headings = re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.M)
    assert any(h.lower().startswith("fresh debian vm") for h in headings), headings
    assert "Behind 1:1 NAT" in headings
    text = OPERATIONS.read_text()
    for step in ("deploy/alcove.service", "ufw allow", "ALCOVE_MEDIA_ANNOUNCED_ADDRESS", "ALCOVE_MEDIA_PORTS",
                 "--scenario group", "room create", "turnserver.conf", "Caddyfile"):
        assert step in text, step


def test_certs_folder_is_in_the_repository_and_what_it_holds_stays_ignored() -> None:
    readme = ROOT / "certs" / "README.md"
    assert readme.is_file() and "alcove certs dev" in readme.read_text()
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "certs"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked == ["certs/README.md"]
    for generated in ("dev-cert.pem", "dev-key.pem", "fullchain.pem", "privkey.pem", "turn-key.pem", "x.key",
                      "x.crt"):
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", f"certs/{generated}"])
        assert ignored.returncode == 0, generated
    # make run (in the repository) serves with the development certificate from certs/: the serve default
    recipe = subprocess.run(["make", "-n", "-C", str(ROOT), "run"], capture_output=True, text=True).stdout
    assert re.search(r"/alcove serve --demo$", recipe, re.M), recipe
    [ep] = entry_points(group="console_scripts", name="alcove")
    parser = __import__(ep.module, fromlist=["_"]).build_parser()
    assert parser.parse_args(["serve"]).certs_dir == "certs"
