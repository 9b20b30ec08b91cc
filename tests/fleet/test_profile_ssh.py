"""`ramp-edge profile --host` through the agent over a loopback sshd; budget uses the result."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fleetlib import client_home, device_python

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.llama]


def ssh_home(tmp_path: Path, monkeypatch, device, client_key: str) -> None:
    monkeypatch.setenv("HOME", str(client_home(tmp_path / "client-home", device, client_key)))


def test_profile_host_over_ssh_then_budget(
    invoke, device_factory, client_key, tmp_path, monkeypatch
):
    device = device_factory("pi", "127.0.0.6")
    ssh_home(tmp_path, monkeypatch, device, client_key)
    device_python(device)
    target = f"{device.user}@{device.host}:{device.port}"
    start = time.monotonic()
    result = invoke(
        ["profile", "--host", target, "--fast", "--types", "Q4_0,Q8_0", "--threads", "1", "--json"]
    )
    seconds = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert seconds < 180
    measured = json.loads(result.stdout)["measured"]
    assert measured["source"] == "agent over ssh localhost" or measured["source"].startswith(
        "agent over ssh"
    )
    assert [s["qtype"] for s in measured["type_speeds"]] == ["Q4_0", "Q8_0"]
    facts = measured["facts"]
    for key in ("python", "llama_cpp", "gpu", "disk_free_bytes", "thermal"):
        assert key in facts
    assert facts["llama_cpp"]["backends"][0] == "CPU" and "Q6_K" in facts["llama_cpp"]["ggml_types"]
    assert measured["ram_total_bytes"] > 0 and measured["bandwidth_copy_bytes_per_s"] > 0
    # the probe models were pushed once into the device's home
    probes = list((device.home / ".ramp-edge" / "artifacts" / "probe").glob("*.gguf"))
    assert len(probes) == 2
    # budget --device localhost reads the stored measurement (latency model "measured")
    result = invoke(["budget", "--device", "localhost", "--model", "smollm2-135m", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bandwidth_source"] == "measured"
    result = invoke(["devices"])
    assert result.exit_code == 0 and "measured" in result.stdout
