"""Measure a device into a `MeasuredProfile` through its agent, over SSH or on this machine.

One path for every host (`profile_host`): the agent (agents/ramp_agent.py) probes RAM, cgroup
cap, CPU and ISA flags, Python and llama.cpp versions, backends and loadable ggml types, GPU or
unified memory, free disk and thermal state; measures copy bandwidth; and times probe models
(made here by `probe_models`, pushed once) with its llama-bench-style `bench`: pp = n_prompt
tokens in one batch, tg = n_gen single-token decodes, mean over repetitions. This module also
keeps the host-side helpers the budget needs: GGUF tensor tables and bytes read per token.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import logging
import os
import platform
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramp_edge import __version__
from ramp_edge.device.profiles import (
    LOCALHOST,
    DeviceProfile,
    MeasuredProfile,
    TypeSpeed,
    normalize_arch,
)
from ramp_edge.errors import ArtifactError, ConfigError, DependencyError, RampEdgeError
from ramp_edge.quant.catalogue import BY_ID, CATALOGUE

if TYPE_CHECKING:
    from ramp_edge.fleet.transport import Transport

logger = logging.getLogger(__name__)

# Bump when what the probe measures or how changes; stored with every measurement.
PROBE_VERSION = 1
AGENT_VERSION = f"{__version__}+probe.{PROBE_VERSION}"

# Types measured by default: the 32-block types, which fit every tensor of SmolLM2-135M (rows
# of 576) and are the ones llama.cpp repacks on CPU (Q4_0, Q8_0) or not (Q4_1, Q5_0).
DEFAULT_TYPES: tuple[str, ...] = ("Q8_0", "Q5_0", "Q4_1", "Q4_0")
# A stored measurement younger than this (with llama.cpp speeds) spares `deploy --host` a profile.
FRESH_DAYS = 7.0

ProgressFn = Callable[[float, float, str], None]


def _no_progress(done: float, total: float, desc: str = "") -> None:
    return None


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """How long to measure. `FAST` is for tests (under a few seconds on SmolLM2-135M)."""

    n_prompt: int = 128
    n_gen: int = 64
    repetitions: int = 3
    bandwidth_bytes: int = 128 << 20  # per array; two arrays are allocated
    bandwidth_repeats: int = 5


DEFAULT_OPTIONS = ProbeOptions()
FAST_OPTIONS = ProbeOptions(
    n_prompt=16, n_gen=8, repetitions=1, bandwidth_bytes=16 << 20, bandwidth_repeats=2
)


# ---------------------------------------------------------------------------------------------
# Host facts

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


def llama_system_info() -> str:
    """llama.cpp's build features line ("CPU : AVX2 = 1 | ..."), or "" without it."""
    try:
        import llama_cpp
    except ImportError:
        return ""
    info = llama_cpp.llama_print_system_info()
    return (info.decode() if isinstance(info, bytes) else str(info)).strip()


def llama_cpp_version() -> str:
    try:
        import llama_cpp
    except ImportError:
        return ""
    return str(getattr(llama_cpp, "__version__", ""))


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
    size_bytes: int = DEFAULT_OPTIONS.bandwidth_bytes,
    repeats: int = DEFAULT_OPTIONS.bandwidth_repeats,
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


# ---------------------------------------------------------------------------------------------
# GGUF tensor table without gguf-py


@dataclass(frozen=True, slots=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order
    ggml_type: str
    n_bytes: int


_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def read_gguf_tensors(path: str | os.PathLike[str]) -> list[GGUFTensorInfo]:
    """The tensor table of a GGUF file (names, shapes, types, byte sizes).

    Parses the header per the GGUF spec (ggml/docs/gguf.md), skipping metadata values.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise ArtifactError(f"cannot read {path}: {err.strerror}") from None
    with handle:
        try:
            return _parse_gguf_tensors(path, handle)
        except (OSError, ValueError, OverflowError, MemoryError, RecursionError) as err:
            # a garbage length or offset: seek/read refuse it before our own bounds checks could
            raise ArtifactError(f"{path} is not a readable GGUF file ({err})") from None


def _parse_gguf_tensors(path: Path, handle: Any) -> list[GGUFTensorInfo]:
    file_bytes = os.fstat(handle.fileno()).st_size

    def skip(n: int) -> None:
        if n < 0 or handle.tell() + n > file_bytes:
            raise ArtifactError(f"{path} is truncated inside its GGUF header")
        handle.seek(n, os.SEEK_CUR)

    def read(fmt: str) -> int | float:
        size = struct.calcsize(fmt)
        data = handle.read(size)
        if len(data) != size:
            raise ArtifactError(f"{path} is truncated inside its GGUF header")
        return struct.unpack(fmt, data)[0]

    def skip_string() -> None:
        skip(int(read("<Q")))

    def read_string() -> str:
        n = int(read("<Q"))
        if handle.tell() + n > file_bytes:
            raise ArtifactError(f"{path} is truncated inside its GGUF header")
        return handle.read(n).decode("utf-8", errors="replace")

    def skip_value(vtype: int) -> None:
        if vtype in _SCALAR:
            skip(struct.calcsize(_SCALAR[vtype]))
        elif vtype == 8:
            skip_string()
        elif vtype == 9:
            item_type, count = int(read("<I")), int(read("<Q"))
            if item_type in _SCALAR:
                skip(count * struct.calcsize(_SCALAR[item_type]))
            elif count > file_bytes:  # every item takes at least one byte
                raise ArtifactError(f"{path} is truncated inside its GGUF header")
            else:
                for _ in range(count):
                    skip_value(item_type)
        else:
            raise ArtifactError(f"{path}: unknown GGUF metadata type {vtype}")

    if handle.read(4) != b"GGUF":
        raise ArtifactError(f"{path} is not a GGUF file (bad magic)")
    version = int(read("<I"))
    if version < 2:
        raise ArtifactError(f"{path}: GGUF version {version} is too old")
    n_tensors, n_kv = int(read("<Q")), int(read("<Q"))
    if n_tensors > file_bytes or n_kv > file_bytes:  # each entry takes many bytes
        raise ArtifactError(
            f"{path}: implausible GGUF header ({n_tensors} tensors, {n_kv} metadata keys "
            f"in {file_bytes} bytes)"
        )
    for _ in range(n_kv):
        skip_string()
        skip_value(int(read("<I")))
    tensors = []
    for _ in range(n_tensors):
        name = read_string()
        n_dims = int(read("<I"))
        shape = tuple(int(read("<Q")) for _ in range(n_dims))
        type_id = int(read("<I"))
        read("<Q")  # data offset
        qtype = BY_ID.get(type_id)
        if qtype is None:
            raise ArtifactError(f"{path}: tensor {name} has unsupported ggml type {type_id}")
        tensors.append(GGUFTensorInfo(name, shape, qtype.name, qtype.tensor_bytes(shape)))
    return tensors


def bytes_read_per_token(tensors: Sequence[GGUFTensorInfo]) -> dict[str, int]:
    """Weight-matrix bytes one decoded token reads, per ggml type.

    Every 2-D+ tensor is read once per token by its matmul, except `token_embd` when the model
    has a separate `output.weight`: then the embedding is a row lookup (ggml_get_rows) that
    reads one row. 1-D tensors (norms) are negligible and left out.
    """
    names = {t.name for t in tensors}
    untied = "output.weight" in names
    out: dict[str, int] = {}
    for t in tensors:
        if len(t.shape) < 2 or (untied and t.name == "token_embd.weight"):
            continue
        out[t.ggml_type] = out.get(t.ggml_type, 0) + t.n_bytes
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# llama.cpp speed


def _require_llama():  # type: ignore[no-untyped-def]
    try:
        import llama_cpp
    except ImportError:
        raise DependencyError(
            "llama-cpp-python is not installed; run: pip install ramp-edge"
        ) from None
    # llama-cpp-python forwards llama.cpp's C log (one line per tensor when quantizing) to
    # stderr unless this logger's level is above INFO; keep errors only.
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level < logging.ERROR:
        llama_logger.setLevel(logging.ERROR)
    return llama_cpp


def quantize_pure(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str, threads: int = 0
) -> Path:
    """Requantize a GGUF so every weight matrix has `qtype` (llama-quantize --pure).

    Rows the type's block does not fit fall back as llama.cpp decides (tensor_type_fallback).
    Written to a `.partial` name and renamed, so a killed run leaves no half file.
    """
    llama_cpp = _require_llama()
    key = qtype.strip().upper()
    if key not in CATALOGUE or CATALOGUE[key].ftype is None:
        raise ConfigError(f"unknown quant type {qtype!r}; known: {', '.join(CATALOGUE)}")
    if CATALOGUE[key].needs_imatrix:
        raise ConfigError(f"{key} needs an importance matrix; the probe measures types without one")
    dst = Path(dst)
    partial = dst.with_name(dst.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = CATALOGUE[key].ftype
    params.allow_requantize = True
    params.pure = True
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(
        str(src).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if rc != 0 or not partial.exists():
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise RampEdgeError(f"llama_model_quantize failed for {src} -> {key} (rc={rc})")
    os.replace(partial, dst)
    return dst


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Profiling through the device agent: one path for localhost and SSH hosts


def probe_models(
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    progress: ProgressFn = _no_progress,
) -> tuple[str, list[tuple[str, Path]]]:
    """Small probe GGUFs made here: `model` requantized purely to each type (cached).

    Returns (model id, [(type, path)]). The files are pushed once per host (sha256-checked).
    """
    from ramp_edge import paths
    from ramp_edge.models import resolve

    resolved = resolve(model)
    if resolved.kind != "gguf":
        raise ConfigError(
            f"the speed probe needs a GGUF reference model, got {resolved.kind} {model!r}"
        )
    work = paths.cache_dir("profiles", resolved.model_id)
    out = []
    for i, qtype in enumerate(types):
        key = qtype.strip().upper()
        progress(i, len(types), f"probe model {key}")
        # the source size in the name keeps a changed reference from reusing stale files
        target = work / f"{resolved.model_id}-{Path(resolved.path).stat().st_size}-{key}.gguf"
        if not target.exists():
            logger.info("quantizing %s to %s", resolved.model_id, key)
            quantize_pure(resolved.path, target, key)
        out.append((key, target))
    return resolved.model_id, out


def _type_speed_from_bench(path: Path, qtype: str, model: str, data: dict) -> TypeSpeed:
    tests = data.get("tests", {})
    pp = next((v for k, v in tests.items() if k.startswith("pp")), None)
    tg = next((v for k, v in tests.items() if k.startswith("tg")), None)
    if tg is None:
        raise RampEdgeError(f"the agent's bench of {path.name} has no tg result")
    return TypeSpeed(
        qtype=qtype,
        model=model,
        file_bytes=path.stat().st_size,
        bytes_by_type=tuple(bytes_read_per_token(read_gguf_tensors(path)).items()),
        n_threads=int(data["threads"]),
        n_prompt=int(pp["n_tokens"]) if pp else 0,
        n_gen=int(tg["n_tokens"]),
        pp_tokens_per_s=round(float(pp["avg_ts"]), 3) if pp else 0.0,
        tg_tokens_per_s=round(float(tg["avg_ts"]), 3),
        tg_samples_tokens_per_s=tuple(round(float(x), 3) for x in tg.get("samples_ts", ())),
    )


def profile_from_probe(
    device: str,
    probe: Mapping[str, Any],
    *,
    bandwidth_bytes_per_s: float | None,
    type_speeds: Sequence[TypeSpeed] = (),
    source: str = "",
) -> MeasuredProfile:
    """A MeasuredProfile from the agent's `probe` data (and bandwidth, speeds)."""
    cpu = dict(probe.get("cpu") or {})
    memory = dict(probe.get("memory") or {})
    llama = dict(probe.get("llama_cpp") or {})
    total = int(memory.get("total_bytes") or 0)
    available = int(memory.get("available_bytes") or total)
    cap = probe.get("cgroup_memory_limit_bytes")
    if cap:  # a container's cap is the RAM a model can really get
        total, available = min(total, int(cap)), min(available, int(cap))
    logical = int(cpu.get("logical_cores") or 1)
    os_facts = dict(probe.get("os") or {})
    facts = {
        "python": dict(probe.get("python") or {}),
        "os": os_facts,
        "llama_cpp": {k: v for k, v in llama.items() if k != "system_info"} or None,
        "gpu": dict(probe.get("gpu") or {}),
        "disk_free_bytes": probe.get("disk_free_bytes"),
        "thermal": dict(probe.get("thermal") or {}),
        "cgroup_memory_limit_bytes": cap,
        "ram_total_bytes_physical": memory.get("total_bytes"),
        "swap_total_bytes": memory.get("swap_total_bytes"),
        "cpu_flags_raw_count": len(cpu.get("flags") or ()),
        "cpu_max_mhz": cpu.get("max_mhz"),
    }
    return MeasuredProfile(
        device=device,
        host=str(probe.get("hostname") or ""),
        created_utc=_now_utc(),
        agent_version=f"{probe.get('agent_version', '?')}+probe.{PROBE_VERSION}",
        arch=normalize_arch(str(os_facts.get("machine") or "")),
        cpu=str(cpu.get("model") or ""),
        cores=int(cpu.get("physical_cores") or logical),
        logical_cpus=logical,
        cpu_features=parse_cpu_features("flags: " + " ".join(cpu.get("flags") or ())),
        ram_total_bytes=total,
        ram_available_bytes=available,
        bandwidth_copy_bytes_per_s=(
            None if bandwidth_bytes_per_s is None else round(bandwidth_bytes_per_s)
        ),
        llama_system_info=str(llama.get("system_info") or ""),
        llama_cpp_version=str(llama.get("version") or ""),
        type_speeds=tuple(type_speeds),
        load_avg_1m=(
            None if probe.get("load_avg_1m") is None else round(float(probe["load_avg_1m"]), 2)
        ),
        source=source,
        facts=facts,
    )


def profile_host(
    conn: Transport,
    device: str,
    *,
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    options: ProbeOptions = DEFAULT_OPTIONS,
    llama: bool = True,
    n_threads: int | None = None,
    bootstrap_env: bool = False,
    progress: ProgressFn = _no_progress,
) -> MeasuredProfile:
    """Measure the device behind `conn` (SSH or this machine) through its agent.

    The same steps for every host: push the agent, probe (RAM, cgroup cap, CPU, backends, GPU,
    disk, thermal), copy bandwidth, then llama.cpp pp/tg of the probe models (made here, pushed
    once) with the agent's llama-bench-style `bench`.

    Raises:
        RemoteError (link, agent failures), DependencyError (no llama-cpp-python on the device
        and no `bootstrap_env`).
    """
    from ramp_edge.agent_client import ARTIFACT_DIR, Agent, BenchOptions, bootstrap

    steps = 3 + (2 * len(types) if llama else 0)
    progress(0, steps, "agent")
    agent = Agent(conn)
    agent.install()
    if llama:
        env = agent.env_check()
        if not env.get("ready", {}).get("bench"):
            if not bootstrap_env:
                raise DependencyError(
                    f"{conn.name}: the device lacks {', '.join(env.get('missing') or [])}; "
                    "rerun with --bootstrap, or profile with --no-llama"
                )
            agent = Agent(conn, python=bootstrap(conn, python=agent.python))
    progress(1, steps, "probe")
    probe = agent.probe()
    progress(2, steps, "memory bandwidth")
    size_mib = max(1, options.bandwidth_bytes >> 20)
    bw = float(agent.bandwidth(size_mib, options.bandwidth_repeats)["copy_bytes_per_s"])
    speeds: list[TypeSpeed] = []
    if llama:
        model_id, files = probe_models(
            model, types, progress=lambda i, n, d: progress(3 + i, steps, d)
        )
        opts = BenchOptions(
            threads=n_threads,
            n_prompt=options.n_prompt,
            n_gen=options.n_gen,
            reps=options.repetitions,
            timeout_s=900.0,
        )
        for i, (qtype, path) in enumerate(files):
            remote = f"{ARTIFACT_DIR}/probe/{path.name}"
            progress(3 + len(types) + i, steps, f"llama.cpp speed {qtype}")
            conn.put(path, remote)
            data = agent.bench(remote, opts)
            speed = _type_speed_from_bench(path, qtype, model_id, data)
            logger.info(
                "%s %s: pp %.1f t/s, tg %.1f t/s",
                conn.name,
                qtype,
                speed.pp_tokens_per_s,
                speed.tg_tokens_per_s,
            )
            speeds.append(speed)
    progress(steps, steps, "done")
    where = "localhost" if conn.name in ("localhost", LOCALHOST) else conn.name
    kind = "ssh" if type(conn).__name__ == "Connection" else "local"
    measured = profile_from_probe(
        device,
        probe,
        bandwidth_bytes_per_s=bw,
        type_speeds=speeds,
        source=f"agent over {kind} {where}",
    )
    load = measured.load_avg_1m
    if load is not None and load > 0.5 * measured.logical_cpus:
        # llama.cpp's threads meet at a barrier per graph node; one descheduled thread stalls
        # all of them (on a shared 2-core VM, 2 threads fell from ~120 to ~5 tok/s).
        logger.warning(
            "%s: load average %.1f on %d CPUs while profiling: other jobs compete, so speeds "
            "are low and noisy",
            conn.name,
            load,
            measured.logical_cpus,
        )
    return measured


def profile_localhost(
    device: str = LOCALHOST,
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    fast: bool = False,
    llama: bool = True,
    n_threads: int | None = None,
    progress: ProgressFn = _no_progress,
) -> MeasuredProfile:
    """`profile_host` on this machine (the agent as a local subprocess, no SSH)."""
    from ramp_edge.fleet.local import LocalConnection

    with LocalConnection() as conn:
        return profile_host(
            conn,
            device,
            model=model,
            types=types,
            options=FAST_OPTIONS if fast else DEFAULT_OPTIONS,
            llama=llama,
            n_threads=n_threads,
            progress=progress,
        )


def quick_probe(device: str = LOCALHOST) -> MeasuredProfile:
    """Host facts plus a short bandwidth test through the local agent; no llama.cpp run."""
    return profile_localhost(device, llama=False, fast=True)


def is_fresh(measured: MeasuredProfile | None, max_age_days: float = FRESH_DAYS) -> bool:
    """Whether a stored measurement is recent and has llama.cpp speeds."""
    if measured is None or not measured.type_speeds:
        return False
    try:
        when = _dt.datetime.strptime(measured.created_utc, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=_dt.UTC
        )
    except ValueError:
        return False
    return (_dt.datetime.now(_dt.UTC) - when).total_seconds() < max_age_days * 86400


def ensure_measured(profile: DeviceProfile, progress: ProgressFn = _no_progress) -> DeviceProfile:
    """An `auto` profile (localhost) that was never measured gets a quick probe merged over it."""
    if not profile.auto or profile.measured is not None:
        return profile
    logger.warning(
        "%s has no stored measurement; using a quick probe (no llama.cpp speeds). "
        "For measured speeds run: ramp-edge profile --device %s",
        profile.id,
        profile.id,
    )
    return profile.merged(quick_probe(profile.id))
