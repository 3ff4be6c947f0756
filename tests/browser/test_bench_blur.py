"""`alcove bench blur`: the CLI runs the two-page call with the blur off and on in one invocation and prints the
CPU figures as JSON (the figures depend on the machine; their shape and consistency are checked here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import require_chromium, require_loopback_namespace

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.slow]


def test_bench_blur_prints_cpu_with_the_blur_off_and_on() -> None:
    require_chromium()
    require_loopback_namespace()
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "blur", "--seconds", "2", "--json"],
                          capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    result = json.loads(proc.stdout)
    assert result["off"]["blur_state"] == "off" and result["on"]["blur_state"] == "on", result
    for run in (result["off"], result["on"]):
        assert run["cpu_cores"] > 0
        assert run["cpu_cores"] == pytest.approx(run["client_cpu_cores"] + run["therapist_cpu_cores"], abs=0.01)
    on = result["on"]
    assert on["blurred_fps"] > 0 and on["frame_ms"] > 0 and on["draw_ms"] > 0, on
    # The masks come less often than the output frames, and never more than 6 a second.
    assert 0 < on["segment_fps"] <= 6.5 and on["segment_fps"] < on["blurred_fps"], on
    assert result["ratio"] == pytest.approx(result["on"]["cpu_cores"] / result["off"]["cpu_cores"], abs=0.01)
    assert result["target_ratio"] == 1.5 and result["within_target"] == (result["ratio"] <= 1.5)
