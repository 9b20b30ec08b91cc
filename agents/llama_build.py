"""Portable llama-cpp-python build flags for the CPU this runs on (host setup and device bootstrap).

ggml's default build is `-march=native` (GGML_NATIVE=ON). On Intel Xeons with AMX that build
enables ggml's AMX extra buffer type, and the first llama_decode segfaults. So we turn NATIVE
off and switch on, one by one, the ISA extensions this CPU reports, leaving AMX off always.
The flag set also names the wheel cache folder, so a wheel built for one CPU is never
installed on a CPU that lacks its instructions.

Stdlib only, Python >= 3.8: it is shipped to devices with the agent.

    python3 llama_build.py            # prints the CMAKE_ARGS value
    python3 llama_build.py --key      # prints a short cache key for this flag set
    python3 llama_build.py --json     # both, plus the detected CPU features
"""

import hashlib
import json
import platform
import sys

# ggml CMake option -> the /proc/cpuinfo flags that must all be present (x86).
X86_OPTIONS = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512bw", "avx512dq", "avx512vl")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)
# Never on: upstream's AMX path crashes on first decode.
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
# What every build gets: no curl (no hub downloads), no multimodal duplicate target.
COMMON = ("-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF")


def cpu_flags(cpuinfo_text=None):
    """The CPU feature words of the first processor in /proc/cpuinfo (empty set if unreadable)."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo_text = f.read()
        except OSError:
            return set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cmake_args(flags=None, machine=None):
    """The -D options for a portable build on a CPU with these feature words."""
    flags = cpu_flags() if flags is None else set(flags)
    machine = (machine or platform.machine()).lower()
    args = list(COMMON)
    if machine in ("x86_64", "amd64", "i686", "i386"):
        for option, needed in X86_OPTIONS:
            on = all(flag in flags for flag in needed)
            args.append("-D{}={}".format(option, "ON" if on else "OFF"))
        args.extend(f"-D{option}=OFF" for option in ALWAYS_OFF)
    elif machine in ("aarch64", "arm64"):
        # Pick the Armv8 level from what the CPU reports (dotprod: Pi 5 / Jetson Orin; fp16).
        arch = "armv8-a"
        if "asimddp" in flags:
            arch = "armv8.2-a+dotprod" + ("+fp16" if "fphp" in flags else "")
        if "i8mm" in flags:
            arch += "+i8mm"
        args.append(f"-DGGML_CPU_ARM_ARCH={arch}")
    return args


def cache_key(args):
    """A short, stable name for one flag set (folder name of the wheel cache)."""
    digest = hashlib.sha256(" ".join(args).encode()).hexdigest()[:12]
    return "{}-{}".format(platform.machine().lower() or "cpu", digest)


def main(argv):
    args = cmake_args()
    if "--key" in argv:
        print(cache_key(args))
    elif "--json" in argv:
        print(
            json.dumps(
                {
                    "cmake_args": args,
                    "key": cache_key(args),
                    "machine": platform.machine(),
                    "cpu_flags": sorted(cpu_flags()),
                }
            )
        )
    else:
        print(" ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
