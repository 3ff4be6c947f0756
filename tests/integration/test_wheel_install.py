"""The release as an operator gets it: the wheel the Dockerfile builds, installed outside the checkout.

The wheel is built from exactly the files the Dockerfile's build stage copies, installed (``--no-deps
--no-index``: the tests have no network) into a fresh virtual environment outside the repository, whose
dependencies come from this test run's environment through a ``.pth`` path line (a path line does not run the
editable install's import hook, so the checkout stays out of reach). Then the image's ``CMD`` starts from there,
every page and every static file the installed package carries is fetched, the image's ``HEALTHCHECK`` command
runs against it, and ``alcove probe --scenario basic`` passes against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.media]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PAGES = ("/", "/j/", "/admin")
# The background blur's model and runtime (npm @mediapipe/selfie_segmentation, copied by web/vendor.sh).
VENDOR = "vendor/selfie_segmentation/"
VENDOR_MODEL = "selfie_segmentation.tflite"
NPM_PACKAGE = ROOT / "web" / "node_modules" / "@mediapipe" / "selfie_segmentation"
# Front-end tooling (pyproject's exclude-package-data): never in the wheel.
TOOLING = re.compile(r"(^|/)(node_modules/|package(-lock)?\.json$|[^/]*\.config\.[^/]*$|[tj]sconfig[^/]*\.json$|\.)")


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def _json_instruction(stage: list[str], name: str) -> list[str]:
    [line] = [x for x in stage if x.split()[0] == name]
    return list(json.loads(line[line.index("["):]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*cmd: str | Path, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{shlex.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as the Dockerfile's build stage builds it, from what that stage copies."""
    _web, build, _runtime = _stages()
    src = tmp_path_factory.mktemp("src")
    for line in build:
        if line.startswith("COPY --from=web "):
            # The web stage's output (the blur model and runtime), made here by the same web/vendor.sh.
            source, dest = line.split()[2:]
            made = ROOT / "web" / Path(source).relative_to("/src/web")
            assert (made / "selfie_segmentation" / VENDOR_MODEL).is_file(), f"{made} is missing: run `make vendor`"
            shutil.copytree(made, src / dest, dirs_exist_ok=True)
        elif line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for name in sources:
                path = ROOT / name.rstrip("/")
                if path.is_dir():
                    shutil.copytree(path, src / path.name,
                                    ignore=shutil.ignore_patterns("__pycache__", "node_modules", "*.egg-info"))
                else:
                    shutil.copy2(path, src / path.name)
    assert any("pip wheel --no-deps" in x for x in build if x.startswith("RUN "))
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: setuptools comes from the test extras, since nothing can be downloaded here.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", dist, src, timeout=300)
    [whl] = dist.glob("alcove-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment outside the checkout with the wheel installed; returns its ``bin``."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, timeout=300)
    # Only now (so pip never sees this run's editable alcove): the dependencies, as plain path lines.
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_alcove_test_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    return venv / "bin"


def _installed_static(python: Path, cwd: Path) -> dict[str, Path]:
    """Every file under the installed package's ``static/``, enumerated through importlib.resources."""
    code = (
        "import json; from importlib.resources import files\n"
        "from server.pages import WEB_PACKAGE\n"
        "out = {}\n"
        "def walk(t, rel):\n"
        "    for c in t.iterdir():\n"
        "        walk(c, rel + c.name + '/') if c.is_dir() else out.__setitem__(rel + c.name, str(c))\n"
        "walk(files(WEB_PACKAGE) / 'static', '')\n"
        "print(json.dumps(out))\n"
    )
    return {k: Path(v) for k, v in json.loads(_run(python, "-c", code, cwd=cwd).stdout).items()}


def test_the_wheel_carries_the_browser_client_and_no_front_end_tooling(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if TOOLING.search(n.partition("web/")[2] or "x")]
    for folder in ("static", "templates"):
        tracked = _run("git", "-C", ROOT, "ls-files", f"web/{folder}").stdout.split()
        shipped = [t for t in tracked if not TOOLING.search(t.removeprefix("web/"))]
        assert shipped, folder
        assert set(shipped) <= set(names), sorted(set(shipped) - set(names))
    assert "alcove-0.1.0.dist-info/entry_points.txt" in names


def _get(url: str) -> tuple[int, bytes, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, b"", ""


def test_the_image_command_serves_every_page_and_static_file_from_the_installed_wheel(
        fresh: Path, tmp_path: Path) -> None:
    *_, runtime = _stages()
    cmd = _json_instruction(runtime, "CMD")
    assert cmd[:2] == ["alcove", "serve"]
    port = _free_port()
    cmd[cmd.index("--port") + 1] = str(port)
    workdir = tmp_path / "run"  # the image's WORKDIR and data dir; nothing is written next to the code
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALCOVE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(ALCOVE_DATA_DIR=str(workdir / "data"), PYTHONVERBOSE="1",  # -v: every import with its file
               PATH=f"{fresh}{os.pathsep}{env.get('PATH', '')}")
    stderr = (tmp_path / "stderr").open("w")
    server = subprocess.Popen([str(fresh / cmd[0]), *cmd[1:]], cwd=workdir, env=env,
                              stdout=subprocess.PIPE, stderr=stderr, text=True)
    base = f"https://127.0.0.1:{port}"
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 60
        while "serving" not in server.stdout.readline():
            assert server.poll() is None and time.monotonic() < deadline, "alcove serve did not start"

        static = _installed_static(fresh / "python", workdir)
        assert static and all(f.is_relative_to(fresh.parent) for f in static.values())
        referenced: set[str] = set()
        for page in PAGES:
            status, body, ctype = _get(base + page)
            assert status == 200 and ctype.startswith("text/html"), page
            referenced |= set(re.findall(r'(?:src|href)="/static/([^"?#]+)', body.decode()))
        assert referenced and referenced <= set(static), sorted(referenced - set(static))
        for rel, path in sorted(static.items()):
            status, body, _ = _get(f"{base}/static/{rel}")
            assert status == 200 and body == path.read_bytes(), rel

        # The blur model and its WebAssembly runtime ship in the wheel and come from this server, byte for byte
        # the pinned npm package's (the browser fetches nothing from anyone else).
        for name in (VENDOR_MODEL, "selfie_segmentation.js", "selfie_segmentation_solution_simd_wasm_bin.wasm"):
            assert VENDOR + name in static, name
            status, body, ctype = _get(f"{base}/static/{VENDOR}{name}")
            assert status == 200 and body == (NPM_PACKAGE / name).read_bytes(), name
            if name.endswith(".wasm"):
                assert ctype == "application/wasm", ctype

        # The image's HEALTHCHECK, run as the image runs it.
        health = _json_instruction(runtime, "HEALTHCHECK")
        _run(fresh / health[0], *[a.replace(":8443/", f":{port}/") for a in health[1:]], env=env, timeout=30)

        key = (workdir / "data" / "admin-key").read_text().strip()
        probe = _run(fresh / "alcove", "probe", "--server", base, "--scenario", "basic", "--duration", "3s",
                     "--json", cwd=workdir, env={**env, "PYTHONVERBOSE": "0", "ALCOVE_ADMIN_KEY": key},
                     timeout=120)
        result = json.loads(probe.stdout)
        assert result["ok"] is True and result["scenario"] == "basic", result
    finally:
        server.terminate()
        server.wait(20)
        stderr.close()

    # Every module of the project that the server imported came from the fresh environment, none from the checkout.
    imported = re.findall(r"^# code object from '?([^'\s]+)", (tmp_path / "stderr").read_text(), re.M)
    ours = [Path(p) for p in imported if re.search(r"/(server|signaling|peer|web)/", p)]
    assert any(p.is_relative_to(fresh.parent) and "/server/" in str(p) for p in ours), imported[:20]
    deps = [Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")]
    leaked = [p for p in ours if p.is_relative_to(ROOT) and not any(p.is_relative_to(d) for d in deps)]
    assert not leaked, leaked
