"""Profiling through the agent: the quick probe, llama.cpp speeds, profiles from probe data."""

from __future__ import annotations

import pytest

from ramp_edge.device import profiling
from ramp_edge.device.budget import latency_model
from ramp_edge.device.profiles import load_profile


def test_quick_probe_merges_into_localhost():
    measured = profiling.quick_probe()
    assert measured.device == "localhost" and measured.type_speeds == ()
    assert measured.source == "agent over local localhost"
    merged = profiling.ensure_measured(load_profile("localhost"))
    assert merged.measured is not None and merged.ram_usable_bytes > 1 << 30
    assert latency_model(merged).source == "probe"
    pi5 = load_profile("pi5")
    assert profiling.ensure_measured(pi5) is pi5  # static profiles are not probed


@pytest.mark.llama
@pytest.mark.slow
def test_profile_host_through_local_agent():
    """The same agent path as over SSH, as a local subprocess: probe facts, bandwidth, speeds."""
    from ramp_edge.fleet.local import LocalConnection

    with LocalConnection() as conn:
        measured = profiling.profile_host(
            conn, "localhost", types=("Q4_0",), options=profiling.FAST_OPTIONS, n_threads=1
        )
    (speed,) = measured.type_speeds
    assert speed.n_threads == 1 and speed.tg_tokens_per_s > 0
    assert speed.qtype == "Q4_0" and dict(speed.bytes_by_type) == {"Q4_0": 75_644_928}
    assert measured.source == "agent over local localhost"
    assert measured.bandwidth_copy_bytes_per_s and measured.llama_system_info.startswith("CPU")
    facts = measured.facts
    assert facts["llama_cpp"]["cpu_only"] is not None and "Q4_K" in facts["llama_cpp"]["ggml_types"]
    assert facts["python"]["version"] and facts["disk_free_bytes"] > 0
    assert "unified_memory" in facts["gpu"]
    lm = latency_model(load_profile("localhost", measured=measured))
    assert lm.source == "measured"
    assert lm.bandwidth_bytes_per_s("Q4_0") == pytest.approx(75_644_928 * speed.tg_tokens_per_s)


def test_profile_from_probe_applies_the_cgroup_cap():
    probe = {
        "hostname": "pi",
        "agent_version": "1.0.0",
        "os": {"machine": "aarch64"},
        "cpu": {
            "model": "Cortex-A76",
            "logical_cores": 4,
            "physical_cores": 4,
            "flags": ["fp", "asimd", "asimddp"],
        },
        "memory": {"total_bytes": 8 << 30, "available_bytes": 7 << 30},
        "cgroup_memory_limit_bytes": 2 << 30,
        "llama_cpp": {"version": "0.3.36", "system_info": "CPU : NEON = 1 |"},
        "gpu": {"unified_memory": False},
        "thermal": {"pi_throttled": "0x0"},
    }
    m = profiling.profile_from_probe("pi5", probe, bandwidth_bytes_per_s=9e9, source="test")
    assert m.ram_total_bytes == m.ram_available_bytes == 2 << 30
    assert m.arch == "aarch64" and {"neon", "dotprod"} <= set(m.cpu_features)
    assert m.facts["thermal"]["pi_throttled"] == "0x0"
    again = type(m).from_dict(m.to_dict())
    assert again == m


def test_type_speed_is_the_median_of_every_rounds_samples(stories_gguf):
    """A burst of load in one round drags one sample per type, not the type's speed."""

    def run(samples):
        return {
            "threads": 1,
            "tests": {
                "pp16": {"n_tokens": 16, "avg_ts": 500.0, "samples_ts": [500.0]},
                "tg8": {
                    "n_tokens": 8,
                    "avg_ts": sum(samples) / len(samples),
                    "samples_ts": samples,
                },
            },
        }

    calm, loaded = run([100.0, 102.0, 98.0]), run([99.0, 101.0, 40.0])
    speed = profiling._type_speed_from_bench(stories_gguf, "F32", "stories", [calm, loaded])
    assert speed.tg_tokens_per_s == pytest.approx(99.5)  # the mean would be 90
    assert len(speed.tg_samples_tokens_per_s) == 6
    single = profiling._type_speed_from_bench(stories_gguf, "F32", "stories", [loaded])
    assert single.tg_tokens_per_s == pytest.approx(99.0)
    assert profiling.DEFAULT_OPTIONS.rounds >= 2
