"""Device profiles: every TOML loads, aliases resolve, malformed files name the bad field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ramp_edge.device import profiles as devices
from ramp_edge.device.profiles import (
    DeviceProfile,
    MeasuredProfile,
    TypeSpeed,
    load_profile,
    profiles_dir,
)
from ramp_edge.errors import ConfigError

REQUIRED = {
    "raspberry-pi-4-4gb",
    "raspberry-pi-4-8gb",
    "raspberry-pi-5-8gb",
    "jetson-orin-nano-8gb",
    "jetson-agx-orin-64gb",
    "laptop-x86",
    "apple-m4-16gb",
    "localhost",
}
FILES = sorted(profiles_dir().glob("*.toml"))


def test_required_profiles_exist():
    assert REQUIRED <= {p.stem for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_profile_loads(path: Path):
    profile = devices.load_profile_file(path)
    assert profile.id == path.stem
    assert profile.schema_version == devices.SCHEMA_VERSION
    assert profile.arch in devices.ARCHES
    assert 0 < profile.ram_usable_bytes <= profile.ram_total_bytes
    assert profile.bandwidth_effective_bytes_per_s > 0
    if profile.bandwidth_peak_bytes_per_s is not None:
        assert profile.bandwidth_effective_bytes_per_s < profile.bandwidth_peak_bytes_per_s
    if not profile.auto:
        assert profile.references, "published profiles cite reference throughput"
        assert all(r.source for r in profile.references)
        # the effective bandwidth must be backed by one of its own references (within 25%)
        implied = [r.effective_bandwidth_bytes_per_s for r in profile.references]
        implied = [b for b in implied if b]
        assert any(
            abs(b - profile.bandwidth_effective_bytes_per_s)
            <= 0.25 * profile.bandwidth_effective_bytes_per_s
            for b in implied
        ), (profile.id, implied)
    assert DeviceProfile.from_dict(profile.to_dict()) == profile


def test_aliases_and_ids():
    assert load_profile("jetson-orin").id == "jetson-agx-orin-64gb"
    assert load_profile("PI5").id == "raspberry-pi-5-8gb"
    assert [p.id for p in devices.list_profiles()] == sorted(p.stem for p in FILES)


def test_unknown_device_lists_known_ids():
    with pytest.raises(ConfigError) as err:
        load_profile("jetson-nan")
    message = str(err.value)
    assert message.startswith("unknown device 'jetson-nan'")
    assert "known: apple-m4-16gb, jetson-agx-orin-64gb" in message
    assert "jetson-orin" in message and err.value.exit_code == 3


def test_published_numbers_match_anchors():
    pi5 = load_profile("raspberry-pi-5-8gb")
    assert "dotprod" in pi5.cpu_features and "i8mm" not in pi5.cpu_features
    assert "dotprod" not in load_profile("raspberry-pi-4-4gb").cpu_features
    tg = {(r.model, r.test): r.tokens_per_s for r in pi5.references}
    assert tg[("llama3.2:3b", "tg")] == 4.61
    assert pi5.speed_factor("iq4_xs") == 1.16
    m4 = {(r.model, r.test): r.tokens_per_s for r in load_profile("m4").references}
    assert m4[("Llama-3.1-8B", "tg128")] == 20.87 and m4[("Llama-3.1-8B", "pp512")] == 224.81
    assert load_profile("raspberry-pi-4-4gb").token_overhead_s == pytest.approx(0.0104)


# --- malformed files ------------------------------------------------------------------------


@pytest.fixture
def pdir(tmp_path) -> Path:
    shutil.copy(profiles_dir() / "raspberry-pi-5-8gb.toml", tmp_path)
    return tmp_path


def _edit(pdir: Path, old: str, new: str) -> Path:
    path = pdir / "raspberry-pi-5-8gb.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("cores = 4", 'cores = "four"', "field 'cores' must be an integer >= 1, got 'four'"),
        ("cores = 4", "cores = 0", "field 'cores' must be an integer >= 1, got 0"),
        ('arch = "aarch64"', 'arch = "riscv"', "field 'arch' must be one of aarch64, x86_64"),
        ("ram_usable_gib = 7.2", "ram_usable_gib = 9.0", "'memory.ram_usable_gib' (9.0) exceeds"),
        (
            "ram_usable_gib = 7.2",
            "ram_usable_gib = -1",
            "field 'memory.ram_usable_gib' must be a positive, finite number",
        ),
        ("bandwidth_effective_gb_s = 9.3", "", "missing field 'memory.bandwidth_effective_gb_s'"),
        ('id = "raspberry-pi-5-8gb"', 'id = "pi-five"', "field 'id' must equal the file name"),
        ("schema_version = 1", "schema_version = 7", "schema_version 7 is newer"),
        (
            "tokens_per_s = 4.61",
            "tokens_per_s = 0",
            "field 'reference[0].tokens_per_s' must be a positive, finite number",
        ),
        ('accelerator = "none"', 'accelerator = "none"\ncolour = "red"', "unknown field 'colour'"),
        (
            "IQ4_XS = 1.16",
            'IQ4_XS = "fast"',
            "field 'speed_factors.IQ4_XS' must be a positive, finite number",
        ),
        (
            'cpu_features = ["neon"',
            'cpu_features = [1, "neon"',
            "field 'cpu_features' must be a list of strings",
        ),
        ("[memory]", "[memory", "invalid TOML"),
    ],
)
def test_malformed_profile_names_file_and_field(pdir, old, new, needle):
    path = _edit(pdir, old, new)
    with pytest.raises(ConfigError) as err:
        devices.load_profile_file(path)
    assert str(err.value).startswith("raspberry-pi-5-8gb.toml: "), str(err.value)
    assert needle in str(err.value)


def test_duplicate_alias_rejected(pdir):
    text = (pdir / "raspberry-pi-5-8gb.toml").read_text().replace("raspberry-pi-5-8gb", "other-pi")
    (pdir / "other-pi.toml").write_text(text)
    with pytest.raises(ConfigError, match="alias 'pi5' is already used"):
        devices.list_profiles(pdir)


# --- measured overlay -----------------------------------------------------------------------


def measured(device: str = "localhost", **kw) -> MeasuredProfile:
    base = dict(
        device=device,
        host="box",
        created_utc="2026-01-01T00:00:00Z",
        agent_version="0.1.0+probe.1",
        arch="x86_64",
        cpu="Test CPU",
        cores=8,
        logical_cpus=16,
        cpu_features=("avx2", "fma"),
        ram_total_bytes=32 << 30,
        ram_available_bytes=20 << 30,
        bandwidth_copy_bytes_per_s=40e9,
        type_speeds=(TypeSpeed("Q4_0", "m", 100, (("Q4_0", 80),), 8, 16, 8, 100.0, 50.0, (50.0,)),),
    )
    base.update(kw)
    return MeasuredProfile(**base)  # type: ignore[arg-type]


def test_measured_values_merge_over_static():
    static = load_profile("localhost")
    merged = load_profile("local", measured=measured())
    assert static.auto and merged.measured is not None
    assert (merged.cores, merged.threads, merged.cpu) == (8, 8, "Test CPU")
    assert merged.ram_usable_bytes == 20 << 30 and merged.ram_total_bytes == 32 << 30
    assert merged.cpu_features == ("avx2", "fma")
    assert DeviceProfile.from_dict(merged.to_dict()) == merged
    assert MeasuredProfile.from_dict(merged.measured.to_dict()) == merged.measured


def test_static_threads_capped_by_measured_cores():
    pi5 = load_profile("pi5", measured=measured("raspberry-pi-5-8gb", arch="aarch64", cores=2))
    assert pi5.threads == 2 and pi5.bandwidth_effective_bytes_per_s == 9.3e9
