"""Issue 16 class 5: `deploy --host` connects and runs the agent's environment check before any
expensive step, so a device without llama-cpp-python fails in seconds (exit 6), not after
allocation, export and KLD."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from fleetlib import client_home

pytestmark = [pytest.mark.ssh, pytest.mark.slow]  # ~10 s a case: sshd + agent push

# the device's `python3` (sshd's default PATH) is the system python
SYSTEM_PYTHON = "/usr/bin/python3"


def _system_python_lacks_llama_cpp() -> bool:
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", "import llama_cpp"], capture_output=True)
    except OSError:
        return False
    return proc.returncode != 0


@pytest.mark.parametrize("fresh_profile", [True, False], ids=["fresh-profile", "unprofiled"])
def test_5_deploy_host_without_llama_cpp_fails_before_any_work(
    fresh_profile, invoke, device_factory, client_key, tmp_path, monkeypatch
):
    if not _system_python_lacks_llama_cpp():
        pytest.skip(f"{SYSTEM_PYTHON} has llama_cpp; no device python without it here")
    import ramp_edge.allocate.api as api
    import ramp_edge.models as models
    from ramp_edge.device import profiling

    device = device_factory("bare", "127.0.0.7")
    monkeypatch.setenv("HOME", str(client_home(tmp_path / "client-home", device, client_key)))

    def expensive(*args: object, **kwargs: object) -> None:
        raise AssertionError("an expensive step ran before the device's environment check")

    monkeypatch.setattr(models, "resolve", expensive)
    monkeypatch.setattr(api, "allocate", expensive)
    if fresh_profile:
        monkeypatch.setattr(profiling, "is_fresh", lambda *a, **k: True)
    start = time.monotonic()
    result = invoke(
        [
            "deploy",
            "--device",
            "laptop-x86",
            "--host",
            f"{device.user}@{device.host}:{device.port}",
        ]
    )
    assert result.exit_code == 6, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "llama-cpp-python" in lines[0] and "--bootstrap" in lines[0]
    assert "Traceback" not in result.output
    assert time.monotonic() - start < 60
    # the agent was pushed, nothing else: no artifact reached the device
    assert not list(Path(device.home, ".ramp-edge", "artifacts").glob("**/*.gguf"))
