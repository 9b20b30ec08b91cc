"""`ramp-edge profile`: --help, host-only and real llama.cpp measurements (--host over a loopback
sshd: tests/fleet/test_profile_ssh.py)."""

from __future__ import annotations

import json

import pytest

from ramp_edge.store import Store


def test_help(invoke):
    result = invoke(["profile", "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout and "--host" in result.stdout


def test_bad_host_port_is_a_config_error(invoke):
    result = invoke(["profile", "--device", "pi5", "--host", "pi@127.0.0.9:notaport"])
    assert result.exit_code == 3 and "port" in result.stderr


def test_wrong_arch_refused(invoke):
    import platform

    other = "raspberry-pi-5-8gb" if platform.machine() in ("x86_64", "AMD64") else "laptop-x86"
    result = invoke(["profile", "--device", other, "--no-llama"])
    assert result.exit_code == 3 and "profile it as another device" in result.stderr


def test_host_only_measurement_is_stored(invoke):
    result = invoke(["profile", "--no-llama", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["measured"]["device"] == "localhost" and doc["measured"]["type_speeds"] == []
    assert doc["latency_model"]["source"] == "probe"
    with Store() as s:
        assert s.latest_measured_profile("localhost").host == doc["measured"]["host"]
    result = invoke(["profile", "--no-llama", "--no-save"])
    assert result.exit_code == 0 and "not stored" in result.stdout
    with Store() as s:
        assert len(s.measured_profiles("localhost")) == 1


@pytest.mark.llama
@pytest.mark.slow
def test_fast_llama_profile_then_budget(invoke, smollm2):
    result = invoke(["profile", "--fast", "--types", "Q4_0", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (speed,) = doc["measured"]["type_speeds"]
    assert speed["qtype"] == "Q4_0" and speed["tg_tokens_per_s"] > 0
    assert doc["latency_model"]["source"] == "measured"
    result = invoke(
        ["budget", "--device", "localhost", "--model", "smollm2-135m", "--min-tps", "0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bandwidth_source"] == "measured"
