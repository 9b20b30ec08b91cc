"""`ramp-edge devices`: --help, table and JSON, measured values after a profile is stored."""

from __future__ import annotations

import json

from ramp_edge.device.profiles import MeasuredProfile
from ramp_edge.store import Store


def test_help(invoke):
    result = invoke(["devices", "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


def test_table_lists_every_profile(invoke):
    result = invoke(["devices"])
    assert result.exit_code == 0, result.output
    for needle in ("raspberry-pi-5-8gb", "jetson-agx-orin-64gb", "localhost", "apple-m4-16gb"):
        assert needle in result.stdout


def test_json_published_and_measured(invoke):
    with Store() as s:
        s.save_measured_profile(
            MeasuredProfile(
                device="localhost",
                host="box",
                created_utc="2026-01-01T00:00:00Z",
                agent_version="x",
                arch="x86_64",
                cpu="c",
                cores=4,
                logical_cpus=4,
                cpu_features=(),
                ram_total_bytes=8 << 30,
                ram_available_bytes=6 << 30,
                bandwidth_copy_bytes_per_s=20e9,
            )
        )
    result = invoke(["devices", "--json"])
    assert result.exit_code == 0, result.output
    doc = {d["id"]: d for d in json.loads(result.stdout)}
    assert len(doc) >= 8
    orin = doc["jetson-agx-orin-64gb"]
    assert "jetson-orin" in orin["profile"]["aliases"] and orin["profile"]["measured"] is None
    assert orin["latency_model"]["source"] == "published"
    local = doc["localhost"]
    assert local["profile"]["measured"]["host"] == "box" and local["profile"]["cores"] == 4
    assert local["latency_model"]["source"] == "probe"


def test_measured_numbers_say_what_by_whom_and_when(invoke):
    """Issue 15: `devices` shows which numbers are measured (source and time)."""
    with Store() as s:
        s.save_measured_profile(
            MeasuredProfile(
                device="laptop-x86",
                host="lap",
                created_utc="2026-02-03T04:05:06Z",
                agent_version="x",
                arch="x86_64",
                cpu="c",
                cores=4,
                logical_cpus=4,
                cpu_features=(),
                ram_total_bytes=8 << 30,
                ram_available_bytes=6 << 30,
                bandwidth_copy_bytes_per_s=20e9,
                source="agent over ssh pi@127.0.0.2:2222",
            )
        )
    result = invoke(["devices", "--json"])
    doc = {d["id"]: d for d in json.loads(result.stdout)}
    assert doc["raspberry-pi-5-8gb"]["measured"] is None
    measured = doc["laptop-x86"]["measured"]
    assert measured["source"] == "agent over ssh pi@127.0.0.2:2222"
    assert measured["created_utc"] == "2026-02-03T04:05:06Z"
    assert "bandwidth" in measured["numbers"] and "RAM" in measured["numbers"]
    result = invoke(["devices"])
    assert result.exit_code == 0 and "published" in result.stdout  # 80 columns: folded
