"""Measure a host into a `MeasuredProfile`: RAM, cores, CPU flags, copy bandwidth, llama.cpp speed.

This runs on the machine being profiled (`ramp-edge profile` on the device itself); the device
agent (agents/ramp_agent.py) has its own probe and bench and does not import this module.
Model resolution (which may download) stays at the bottom.

Speeds follow llama-bench's conventions: pp = one batch of n_prompt
tokens, tg = n_gen single-token decodes from an empty context, both timed by llama.cpp's own
performance counters (`llama_perf_context`, which excludes tokenization, sampling and Python
overhead), after a warm-up; the median over repetitions is reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import logging
import os
import platform
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ramp_edge import __version__
from ramp_edge.device.profiles import LOCALHOST, DeviceProfile, MeasuredProfile, TypeSpeed, normalize_arch
from ramp_edge.errors import ArtifactError, ConfigError, DependencyError, RampEdgeError
from ramp_edge.quant.catalogue import BY_ID, CATALOGUE

logger = logging.getLogger(__name__)

# Bump when what the probe measures or how changes; stored with every measurement.
PROBE_VERSION = 1
AGENT_VERSION = f"{__version__}+probe.{PROBE_VERSION}"

# Types measured by default: the 32-block types, which fit every tensor of SmolLM2-135M (rows
# of 576) and are the ones llama.cpp repacks on CPU (Q4_0, Q8_0) or not (Q4_1, Q5_0).
DEFAULT_TYPES: tuple[str, ...] = ("Q8_0", "Q5_0", "Q4_1", "Q4_0")

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

        def read(fmt: str) -> int | float:
            size = struct.calcsize(fmt)
            data = handle.read(size)
            if len(data) != size:
                raise ArtifactError(f"{path} is truncated inside its GGUF header")
            return struct.unpack(fmt, data)[0]

        def skip_string() -> None:
            handle.seek(int(read("<Q")), os.SEEK_CUR)

        def read_string() -> str:
            n = int(read("<Q"))
            return handle.read(n).decode("utf-8", errors="replace")

        def skip_value(vtype: int) -> None:
            if vtype in _SCALAR:
                handle.seek(struct.calcsize(_SCALAR[vtype]), os.SEEK_CUR)
            elif vtype == 8:
                skip_string()
            elif vtype == 9:
                item_type, count = int(read("<I")), int(read("<Q"))
                if item_type in _SCALAR:
                    handle.seek(count * struct.calcsize(_SCALAR[item_type]), os.SEEK_CUR)
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


@dataclass(frozen=True, slots=True)
class LlamaSpeed:
    """pp/tg samples of one GGUF (tokens/s from llama.cpp's counters)."""

    path: str
    n_threads: int
    n_prompt: int
    n_gen: int
    pp_samples_tokens_per_s: tuple[float, ...]
    tg_samples_tokens_per_s: tuple[float, ...]

    @property
    def pp_tokens_per_s(self) -> float:
        return statistics.median(self.pp_samples_tokens_per_s)

    @property
    def tg_tokens_per_s(self) -> float:
        return statistics.median(self.tg_samples_tokens_per_s)


@contextlib.contextmanager
def _load(path: Path, n_ctx: int, n_batch: int, n_threads: int) -> Iterator[object]:
    llama_cpp = _require_llama()
    try:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            verbose=False,
        )
    except (ValueError, RuntimeError) as err:
        raise ArtifactError(f"llama.cpp could not load {path}: {err}") from None
    try:
        yield llm
    finally:
        llm.close()


def measure_llama_speed(
    path: str | os.PathLike[str],
    n_prompt: int = DEFAULT_OPTIONS.n_prompt,
    n_gen: int = DEFAULT_OPTIONS.n_gen,
    repetitions: int = DEFAULT_OPTIONS.repetitions,
    n_threads: int | None = None,
) -> LlamaSpeed:
    """Prompt (pp) and generation (tg) speed of a GGUF with llama.cpp.

    Each repetition: pp = one decode of `n_prompt` tokens; tg = `n_gen` one-token decodes
    from an empty cache (llama-bench's pp512/tg128, shorter). A warm-up pass first faults the
    memory-mapped weights in.
    """
    llama_cpp = _require_llama()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    n_threads = n_threads or physical_cores()
    n_ctx = max(64, n_prompt + n_gen + 8)
    pp: list[float] = []
    tg: list[float] = []
    with _load(path, n_ctx=n_ctx, n_batch=max(8, n_prompt), n_threads=n_threads) as llm:
        ctx = llm._ctx.ctx  # type: ignore[attr-defined]
        n_vocab = llm.n_vocab()  # type: ignore[attr-defined]
        # deterministic pseudo-random tokens away from the special ids at the start
        tokens = [100 + (i * 7919) % max(1, n_vocab - 100) for i in range(max(n_prompt, n_gen))]

        def decode(toks: Sequence[int]) -> None:
            llm.eval(toks)  # type: ignore[attr-defined]
            # llama.cpp books a decode's time in synchronize(); Llama.eval never calls it
            llama_cpp.llama_synchronize(ctx)

        llm.reset()  # type: ignore[attr-defined]
        decode(tokens[: min(n_prompt, 16)])
        decode(tokens[:1])
        for _ in range(max(1, repetitions)):
            llm.reset()  # type: ignore[attr-defined]
            llama_cpp.llama_perf_context_reset(ctx)
            decode(tokens[:n_prompt])
            data = llama_cpp.llama_perf_context(ctx)
            if data.t_p_eval_ms > 0:
                pp.append(n_prompt / data.t_p_eval_ms * 1000.0)
            llm.reset()  # type: ignore[attr-defined]
            llama_cpp.llama_perf_context_reset(ctx)
            for tok in tokens[:n_gen]:
                decode([tok])
            data = llama_cpp.llama_perf_context(ctx)
            if data.t_eval_ms <= 0 or data.n_eval != n_gen:
                raise RampEdgeError(
                    f"llama.cpp timed {data.n_eval} of {n_gen} generated tokens; "
                    "cannot measure speed"
                )
            tg.append(n_gen / data.t_eval_ms * 1000.0)
    return LlamaSpeed(str(path), n_threads, n_prompt, n_gen, tuple(pp) or (0.0,), tuple(tg))


def type_speed(
    path: str | os.PathLike[str], qtype: str, model: str, speed: LlamaSpeed
) -> TypeSpeed:
    """A TypeSpeed record for a measured GGUF."""
    tensors = read_gguf_tensors(path)
    return TypeSpeed(
        qtype=qtype,
        model=model,
        file_bytes=Path(path).stat().st_size,
        bytes_by_type=tuple(bytes_read_per_token(tensors).items()),
        n_threads=speed.n_threads,
        n_prompt=speed.n_prompt,
        n_gen=speed.n_gen,
        pp_tokens_per_s=round(speed.pp_tokens_per_s, 3),
        tg_tokens_per_s=round(speed.tg_tokens_per_s, 3),
        tg_samples_tokens_per_s=tuple(round(x, 3) for x in speed.tg_samples_tokens_per_s),
    )


def measure_type_speeds(
    reference: str | os.PathLike[str],
    model: str,
    work_dir: str | os.PathLike[str],
    types: Sequence[str] = DEFAULT_TYPES,
    options: ProbeOptions = DEFAULT_OPTIONS,
    n_threads: int | None = None,
    progress: ProgressFn = _no_progress,
) -> list[TypeSpeed]:
    """Quantize `reference` to each type (cached in `work_dir`) and time each file."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out: list[TypeSpeed] = []
    for i, qtype in enumerate(types):
        key = qtype.strip().upper()
        progress(i, len(types), f"llama.cpp speed {key}")
        # the source size in the name keeps a changed reference from reusing stale files
        target = work / f"{model}-{Path(reference).stat().st_size}-{key}.gguf"
        if not target.exists():
            logger.info("quantizing %s to %s", model, key)
            quantize_pure(reference, target, key, threads=n_threads or 0)
        speed = measure_llama_speed(
            target, options.n_prompt, options.n_gen, options.repetitions, n_threads=n_threads
        )
        logger.info(
            "%s %s: pp %.1f tok/s, tg %.1f tok/s",
            model,
            key,
            speed.pp_tokens_per_s,
            speed.tg_tokens_per_s,
        )
        out.append(type_speed(target, key, model, speed))
    progress(len(types), len(types), "llama.cpp speed")
    return out


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def measure_host(
    device: str = LOCALHOST,
    reference: str | os.PathLike[str] | None = None,
    model: str = "reference",
    work_dir: str | os.PathLike[str] | None = None,
    types: Sequence[str] = DEFAULT_TYPES,
    options: ProbeOptions = DEFAULT_OPTIONS,
    bandwidth: bool = True,
    n_threads: int | None = None,
    progress: ProgressFn = _no_progress,
) -> MeasuredProfile:
    """Measure this host. Without `reference`, only host facts and bandwidth.

    Args:
        device: the profile id to store the measurement under.
        reference: a GGUF to quantize to `types` and time; None skips llama.cpp speeds.
        work_dir: where the per-type GGUFs are cached (required with `reference`).
    """
    facts = host_facts()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5 * int(facts["logical_cpus"]):  # type: ignore[call-overload]
        # llama.cpp's threads meet at a barrier per graph node; one descheduled thread stalls
        # all of them (on a shared 2-core VM, 2 threads fell from ~120 to ~5 tok/s).
        logger.warning(
            "load average %.1f on %s CPUs: other jobs compete, so speeds will be low and noisy; "
            "measure an idle host, or use fewer threads on a shared one",
            load,
            facts["logical_cpus"],
        )
    steps = 1 + (1 if bandwidth else 0) + (len(types) if reference is not None else 0)
    progress(0, steps, "host facts")
    bw = None
    if bandwidth:
        progress(1, steps, "memory bandwidth")
        bw = measure_copy_bandwidth(options.bandwidth_bytes, options.bandwidth_repeats)
        logger.info("copy bandwidth %.1f GB/s", bw / 1e9)
    speeds: list[TypeSpeed] = []
    if reference is not None:
        if work_dir is None:
            raise ConfigError("measure_host needs work_dir to cache the quantized reference files")
        done = steps - len(types)

        def sub(i: float, n: float, desc: str = "") -> None:
            progress(done + i, steps, desc)

        speeds = measure_type_speeds(
            reference, model, work_dir, types, options, n_threads=n_threads, progress=sub
        )
    progress(steps, steps, "done")
    return MeasuredProfile(
        device=device,
        host=str(facts["host"]),
        created_utc=_now_utc(),
        agent_version=AGENT_VERSION,
        arch=str(facts["arch"]),
        cpu=str(facts["cpu"]),
        cores=int(facts["cores"]),  # type: ignore[call-overload]
        logical_cpus=int(facts["logical_cpus"]),  # type: ignore[call-overload]
        cpu_features=tuple(facts["cpu_features"]),  # type: ignore[arg-type]
        ram_total_bytes=int(facts["ram_total_bytes"]),  # type: ignore[call-overload]
        ram_available_bytes=int(facts["ram_available_bytes"]),  # type: ignore[call-overload]
        bandwidth_copy_bytes_per_s=None if bw is None else round(bw),
        llama_system_info=llama_system_info(),
        llama_cpp_version=llama_cpp_version(),
        type_speeds=tuple(speeds),
        load_avg_1m=None if load is None else round(load, 2),
    )


# ---------------------------------------------------------------------------------------------
# Model resolution (resolves ramp-edge model names, may download)


def quick_probe(device: str = LOCALHOST) -> MeasuredProfile:
    """Host facts plus a short bandwidth test (well under a second); no llama.cpp run."""
    return measure_host(device, reference=None, options=FAST_OPTIONS)


def profile_localhost(
    device: str = LOCALHOST,
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    fast: bool = False,
    llama: bool = True,
    n_threads: int | None = None,
    progress: ProgressFn = _no_progress,
) -> MeasuredProfile:
    """Measure this machine for `device`, timing `model` (a ramp-edge model ref) at `types`."""
    from ramp_edge import paths
    from ramp_edge.models import resolve

    reference = None
    work_dir = None
    if llama:
        resolved = resolve(model)
        if resolved.kind != "gguf":
            raise ConfigError(
                f"the speed probe needs a GGUF reference model, got {resolved.kind} {model!r}"
            )
        reference = resolved.path
        work_dir = paths.cache_dir("profiles", resolved.model_id)
        model = resolved.model_id
    return measure_host(
        device,
        reference=reference,
        model=model,
        work_dir=work_dir,
        types=types,
        options=FAST_OPTIONS if fast else DEFAULT_OPTIONS,
        n_threads=n_threads,
        progress=progress,
    )


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
    return profile.merged(
        measure_host(profile.id, reference=None, options=FAST_OPTIONS, progress=progress)
    )
