"""Facts about this machine: CPU flags, host facts, copy bandwidth."""

from __future__ import annotations

import subprocess
import sys

from ramp_edge.device import host

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
    feats = host.parse_cpu_features(X86)
    assert {"avx2", "avx512", "avx512_vnni", "fma", "f16c", "avx_vnni"} <= set(feats)
    assert feats == tuple(sorted(feats))


def test_cpu_features_arm():
    assert {"neon", "dotprod", "fp16", "crypto"} <= set(host.parse_cpu_features(PI5))
    assert "i8mm" not in host.parse_cpu_features(PI5)
    assert host.parse_cpu_features(PI4) == ("crc32", "neon")


def test_host_facts():
    facts = host.host_facts()
    assert facts["arch"] in ("x86_64", "aarch64")
    assert 1 <= facts["cores"] <= facts["logical_cpus"]
    assert 0 < facts["ram_available_bytes"] <= facts["ram_total_bytes"]


def test_copy_bandwidth_is_plausible():
    bw = host.measure_copy_bandwidth(8 << 20, repeats=2)
    assert 0.2e9 < bw < 2e12


def test_host_facts_import_nothing_heavy():
    """Host facts import no torch, transformers, gguf, rich, click or paramiko."""
    code = (
        "import sys, ramp_edge.device.host as h; h.host_facts(); "
        "heavy = {'torch','transformers','gguf','rich','click','paramiko'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
