"""Where the SFU workers' control sockets live and how long they wait to be adopted (docs/sfu.md 4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Config
from server.sfu import adoptable


def test_one_runtime_directory_per_instance_under_the_data_dir() -> None:
    config = Config.from_env({"ALCOVE_DATA_DIR": "/var/lib/alcove", "ALCOVE_PORT": "8443"})
    assert config.media_runtime_dir() == Path("/var/lib/alcove/run/sfu-8443")
    assert config.media_adopt_seconds == 30
    other = Config.from_env({"ALCOVE_RUNTIME_DIR": "/srv/alcove-run", "ALCOVE_PORT": "9000",
                             "ALCOVE_MEDIA_ADOPT_SECONDS": "12"})
    assert other.media_runtime_dir() == Path("/srv/alcove-run/sfu-9000")
    assert other.media_adopt_seconds == 12
    assert Config.from_env({}).media_runtime_dir() is None  # no data dir: no keys survive a restart either


@pytest.mark.parametrize("value", ["0", "601", "-5"])
def test_an_adoption_bound_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="ALCOVE_MEDIA_ADOPT_SECONDS"):
        Config.from_env({"ALCOVE_MEDIA_ADOPT_SECONDS": value})


def test_adoptable_only_with_worker_sockets(tmp_path: Path) -> None:
    assert not adoptable(None)
    assert not adoptable(tmp_path / "missing")
    assert not adoptable(tmp_path)
    (tmp_path / "w0-1a2b3c4d.sock").touch()
    assert adoptable(tmp_path)


def test_a_deep_data_directory_gets_a_short_stable_runtime_directory(tmp_path: Path) -> None:
    """A unix socket's path holds 108 bytes: a deep data directory (pytest's own temporary paths are) must not
    leave the SFU without its control sockets; the stand-in is the same for the same directory and port."""
    deep = "/var/lib/" + "/".join(["a-rather-long-directory-name"] * 4)
    config = Config.from_env({"ALCOVE_DATA_DIR": deep, "ALCOVE_PORT": "8443"})
    short = config.media_runtime_dir()
    assert short is not None and len(str(short / "w15-0123abcd.sock")) <= 100
    assert short == Config.from_env({"ALCOVE_DATA_DIR": deep, "ALCOVE_PORT": "8443"}).media_runtime_dir()
    assert short != Config.from_env({"ALCOVE_DATA_DIR": deep, "ALCOVE_PORT": "9443"}).media_runtime_dir()
