"""The host probe: CPU flags, host facts, bandwidth, the stdlib GGUF reader, llama.cpp speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ramp_edge.device import profiling
from ramp_edge.device.budget import latency_model
from ramp_edge.device.profiles import load_profile
from ramp_edge.errors import ArtifactError, ConfigError

X86 = """processor\t: 0
model name\t: AMD EPYC 9654
flags\t\t: fpu sse3 ssse3 fma avx f16c avx2 avx512f avx512bw avx512_vnni avx_vnni bmi2
"""
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc asimddp
CPU implementer\t: 0x41
"""
PI4 = "Features\t: fp asimd evtstrm crc32 cpuid\n"


def test_cpu_features_x86():
    feats = profiling.parse_cpu_features(X86)
    assert {"avx2", "avx512", "avx512_vnni", "fma", "f16c", "avx_vnni"} <= set(feats)
    assert feats == tuple(sorted(feats))


def test_cpu_features_arm():
    assert {"neon", "dotprod", "fp16", "crypto"} <= set(profiling.parse_cpu_features(PI5))
    assert "i8mm" not in profiling.parse_cpu_features(PI5)
    assert profiling.parse_cpu_features(PI4) == ("crc32", "neon")


def test_host_facts():
    facts = profiling.host_facts()
    assert facts["arch"] in ("x86_64", "aarch64")
    assert 1 <= facts["cores"] <= facts["logical_cpus"]
    assert 0 < facts["ram_available_bytes"] <= facts["ram_total_bytes"]


def test_copy_bandwidth_is_plausible():
    bw = profiling.measure_copy_bandwidth(8 << 20, repeats=2)
    assert 0.2e9 < bw < 2e12


def test_quick_probe_merges_into_localhost():
    measured = profiling.quick_probe()
    assert measured.device == "localhost" and measured.type_speeds == ()
    assert measured.source == "agent over local localhost"
    merged = profiling.ensure_measured(load_profile("localhost"))
    assert merged.measured is not None and merged.ram_usable_bytes > 1 << 30
    assert latency_model(merged).source == "probe"
    pi5 = load_profile("pi5")
    assert profiling.ensure_measured(pi5) is pi5  # static profiles are not probed


def _write_gguf(path: Path, tied: bool) -> None:
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    writer = GGUFWriter(path, "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_uint32("llama.block_count", 1)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((100, 64)).astype(np.float32)
    writer.add_tensor(
        "token_embd.weight",
        quantize(emb, GGMLQuantizationType.Q8_0),
        raw_dtype=GGMLQuantizationType.Q8_0,
    )
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", rng.standard_normal((32, 64)).astype(np.float16))
    if not tied:
        out = rng.standard_normal((100, 64)).astype(np.float32)
        writer.add_tensor(
            "output.weight",
            quantize(out, GGMLQuantizationType.Q4_0),
            raw_dtype=GGMLQuantizationType.Q4_0,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tied", [True, False])
def test_stdlib_gguf_reader_matches_gguf_py(tmp_path, tied):
    from gguf import GGUFReader

    path = tmp_path / "t.gguf"
    _write_gguf(path, tied)
    ours = profiling.read_gguf_tensors(path)
    theirs = GGUFReader(path).tensors
    assert [(t.name, t.shape, t.ggml_type, t.n_bytes) for t in ours] == [
        (t.name, tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in theirs
    ]
    read = profiling.bytes_read_per_token(ours)
    if tied:  # the embedding is the output matrix: read in full
        assert read == {"F16": 32 * 64 * 2, "Q8_0": 100 * 2 * 34}
    else:  # the embedding is a row lookup; output.weight is read instead
        assert read == {"F16": 32 * 64 * 2, "Q4_0": 100 * 2 * 18}


def test_gguf_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(ArtifactError, match="bad magic"):
        profiling.read_gguf_tensors(bad)
    good = tmp_path / "good.gguf"
    _write_gguf(good, tied=True)
    (tmp_path / "cut.gguf").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ArtifactError, match="truncated"):
        profiling.read_gguf_tensors(tmp_path / "cut.gguf")


def _header(*fields: tuple[str, int]) -> bytes:
    import struct

    return b"GGUF" + b"".join(struct.pack(fmt, value) for fmt, value in fields)


@pytest.mark.parametrize(
    "garbage",
    [
        # one metadata key whose length is past any offset (was ValueError from seek)
        _header(("<I", 3), ("<Q", 0), ("<Q", 1), ("<Q", 2**63 + 5)),
        # one key of length 4 TiB (was OSError: Invalid argument / a silent seek past the end)
        _header(("<I", 3), ("<Q", 0), ("<Q", 1), ("<Q", 2**42)),
        # one tensor whose name is 1 TiB long (was MemoryError)
        _header(("<I", 3), ("<Q", 1), ("<Q", 0), ("<Q", 2**40)),
        # 2**60 metadata keys in a 40-byte file
        _header(("<I", 3), ("<Q", 0), ("<Q", 2**60), ("<Q", 0)),
        # an array of 2**62 uint64: its byte size overflows the seek offset
        _header(
            ("<I", 3),
            ("<Q", 0),
            ("<Q", 1),
            ("<Q", 1),
            ("<B", 65),
            ("<I", 9),
            ("<I", 10),
            ("<Q", 2**62),
        ),
    ],
)
def test_gguf_reader_turns_garbage_lengths_into_artifact_errors(tmp_path, garbage):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(garbage)
    with pytest.raises(ArtifactError):
        profiling.read_gguf_tensors(bad)


def test_resolve_gpu_layers_on_a_garbage_gguf_is_exit_5(tmp_path):
    from ramp_edge.pipeline import resolve_gpu_layers

    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(_header(("<I", 3), ("<Q", 0), ("<Q", 1), ("<Q", 2**42)))
    with pytest.raises(ArtifactError) as info:
        resolve_gpu_layers("auto", {"llama_cpp": {"supports_gpu_offload": True}}, bad)
    assert info.value.exit_code == 5


def test_quantize_pure_rejects_bad_types(tmp_path):
    with pytest.raises(ConfigError, match="unknown quant type"):
        profiling.quantize_pure(tmp_path / "a", tmp_path / "b", "Q9_9")
    with pytest.raises(ConfigError, match="importance matrix"):
        profiling.quantize_pure(tmp_path / "a", tmp_path / "b", "IQ2_XS")


def test_probe_core_stays_agent_safe():
    """The probe imports no torch, transformers, gguf, rich or click."""
    code = (
        "import sys, ramp_edge.device.profiling as p; p.host_facts(); "
        "heavy = {'torch','transformers','gguf','rich','click','paramiko'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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
