"""Facts about this machine read in-process, without the agent: CPU and its features, cores, RAM,
and a threaded copy bandwidth.

`parse_cpu_features` also normalises the flags the agent reports (`profiling.profile_from_probe`);
the rest serves benchmarks and tests that look at the host they run on. Device profiles are
measured through the agent (`profiling.profile_host`).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path

from ramp_edge.device.profiles import normalize_arch
from ramp_edge.errors import RampEdgeError

# Copy-bandwidth probe defaults (per array, two are allocated; best of this many copies).
BANDWIDTH_BYTES = 128 << 20
BANDWIDTH_REPEATS = 5

# /proc/cpuinfo flag -> ramp-edge feature name (the names llama.cpp's system info uses, lower case)
_X86_FLAGS = {
    "sse3": "sse3",
    "pni": "sse3",
    "ssse3": "ssse3",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx512_vbmi": "avx512_vbmi",
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx",
    "amx_int8": "amx_int8",
    "bmi2": "bmi2",
}
_ARM_FLAGS = {
    "asimd": "neon",
    "neon": "neon",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
    "sve2": "sve2",
    "asimdhp": "fp16",
    "fphp": "fp16",
    "bf16": "bf16",
    "aes": "crypto",
    "crc32": "crc32",
    "sme": "sme",
}
# macOS sysctl hw.optional.* -> feature name
_DARWIN_FLAGS = {
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_SME": "sme",
}


def parse_cpu_features(cpuinfo: str) -> tuple[str, ...]:
    """Normalized features from /proc/cpuinfo text (x86 `flags`, ARM `Features`)."""
    raw: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            raw.update(value.split())
    found = {_X86_FLAGS[f] for f in raw if f in _X86_FLAGS}
    found |= {_ARM_FLAGS[f] for f in raw if f in _ARM_FLAGS}
    return tuple(sorted(found))


def _darwin_sysctl(name: str) -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def cpu_features() -> tuple[str, ...]:
    """This host's CPU features (neon, dotprod, i8mm, avx2, avx512, ...)."""
    if platform.system() == "Darwin":
        return tuple(
            sorted(feat for key, feat in _DARWIN_FLAGS.items() if _darwin_sysctl(key) == "1")
        )
    try:
        return parse_cpu_features(
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        )
    except OSError:
        return ()


def cpu_model() -> str:
    """A human-readable CPU name."""
    if platform.system() == "Darwin":
        return _darwin_sysctl("machdep.cpu.brand_string") or platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores usable by this process (llama.cpp's default thread count)."""
    import psutil

    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    physical = psutil.cpu_count(logical=False) or logical or 1
    return max(1, min(physical, logical or physical))


def host_facts() -> dict[str, object]:
    """Cheap facts about this host: no benchmarks, returns in milliseconds."""
    import psutil

    vm = psutil.virtual_memory()
    return {
        "host": platform.node(),
        "arch": normalize_arch(platform.machine()),
        "cpu": cpu_model(),
        "cores": physical_cores(),
        "logical_cpus": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "cpu_features": cpu_features(),
        "ram_total_bytes": int(vm.total),
        "ram_available_bytes": int(vm.available),
    }


def measure_copy_bandwidth(
    size_bytes: int = BANDWIDTH_BYTES,
    repeats: int = BANDWIDTH_REPEATS,
    threads: int | None = None,
) -> float:
    """Memory bandwidth in bytes/s from a threaded numpy copy (best of `repeats`).

    Counts read + write bytes, as STREAM's copy does. The buffer is capped at 1/8 of available
    RAM so the probe is safe on a 4 GB board. numpy releases the GIL while copying, so the
    threads run in parallel, like llama.cpp's decode threads.
    """
    import numpy as np
    import psutil

    size = int(min(size_bytes, psutil.virtual_memory().available // 8))
    threads = threads or physical_cores()
    size -= size % (threads * 64)
    if size <= 0:
        raise RampEdgeError("not enough free memory to measure bandwidth")
    src = np.ones(size, dtype=np.uint8)
    dst = np.zeros_like(src)
    step = size // threads

    def work(i: int) -> None:
        np.copyto(dst[i * step : (i + 1) * step], src[i * step : (i + 1) * step])

    best = 0.0
    for _ in range(max(1, repeats)):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        best = max(best, 2 * size / elapsed)
    return best
