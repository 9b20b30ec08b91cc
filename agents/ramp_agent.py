#!/usr/bin/env python3
"""ramp-edge device agent: one file, pushed to a device and run there.

Dependencies: the standard library, plus llama-cpp-python and psutil where a command needs
them (never torch). Python >= 3.8, because edge boards often ship an older system Python.

Protocol (version 1): every line on stdout is one JSON object with ``"ramp_agent": 1`` and a
``type``:

    {"ramp_agent": 1, "type": "heartbeat", "elapsed_s": 4.0}
    {"ramp_agent": 1, "type": "progress", "phase": "tg", "done": 2, "total": 5}
    {"ramp_agent": 1, "type": "result", "command": "bench", "ok": true, "data": {...}}
    {"ramp_agent": 1, "type": "error", "command": "bench", "ok": false,
     "error": {"kind": "out_of_memory", "message": "...", "exit_code": 6, "log_tail": [...]}}

The last line is always a ``result`` or an ``error`` (unless the process is killed, e.g. by the
kernel's OOM killer: the caller then sees exit status 137 and no final line). Heartbeats come
every ``--heartbeat`` seconds during long work, so a silent channel means a dead link, not a
slow model. Human-readable logs go to stderr.

Commands:
    probe      system facts (RAM, cgroup cap, cores, CPU flags, OS, Python, llama.cpp build and
               backends, GPU or unified memory, loadable ggml types, free disk, thermal state)
    bandwidth  memory copy bandwidth (threaded memmove, read + write bytes)
    env-check  which dependencies are missing, and how to install them; with --canary-model a
               canary decode in a subprocess, retried without extra buffer types if it crashes
    canary     load a model and decode a few tokens (what env-check runs in a subprocess)
    bench      pp<N>/tg<N> tokens/s like llama-bench (reps, mean, stddev), load time, peak RSS
    eval       multiple-choice commonsense scoring of task items (a ramp-edge/task-items JSON
               file) pushed with the agent; needs the scorer modules beside this file as
               ramp_edge/errors.py + ramp_edge/evaluate/{tasks,runner,loglik}.py

Exit codes: 0 ok, 1 internal error, 2 usage, 3 missing dependency, 4 bad input, 5 model failed
to load, 6 out of memory, 7 the worker crashed (error kind "crashed" with its signal); 137 (from
the shell) when the kernel killed the agent.

bench, eval and canary run in a worker subprocess (this file with --worker): the parent relays
its lines and, when it dies from a signal, reports {"kind": "crashed", "signal": 11,
"signal_name": "SIGSEGV", "stderr_tail": [...]}.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import random
import sys
import threading
import time
import traceback

PROTOCOL = 1
AGENT_VERSION = "1.0.0"

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DEPENDENCY = 3
EXIT_BAD_INPUT = 4
EXIT_MODEL_LOAD = 5
EXIT_OOM = 6
EXIT_CRASHED = 7  # the worker process died from a signal (SIGSEGV in ggml, SIGILL, ...)

# Commands run in a worker subprocess, so a native crash in llama.cpp becomes an error line
# with its signal instead of a silent death of the agent.
WORKER_COMMANDS = ("bench", "eval", "canary")
# Test-only fault injection: "<command>=<SIGNAL>" makes that worker kill itself with the signal
# before it loads anything. It exists because a real native crash (ggml's AMX SIGSEGV, issue 15)
# cannot be reproduced on demand, yet the crash path (recorded failure with its signal, fleet
# goes on) must be tested (tests/fleet/test_native_crash.py). A stray variable on a device must
# never kill a real bench, so it is honoured only together with RAMP_AGENT_TESTING=1.
FAULT_ENV = "RAMP_AGENT_TEST_FAULT"
TESTING_ENV = "RAMP_AGENT_TESTING"

HERE = os.path.dirname(os.path.abspath(__file__))

# What the agent needs per command, as (import name, pip requirement).
REQUIREMENTS = {
    "llama_cpp": "llama-cpp-python",
    "psutil": "psutil",
    "numpy": "numpy",
}
COMMAND_NEEDS = {
    "probe": (),
    "env-check": (),
    "bench": ("llama_cpp",),
    "eval": ("llama_cpp", "numpy"),
}
# Scorer modules pushed beside the agent, as a package tree (their imports are absolute).
SCORER_FILES = {
    "errors": ("ramp_edge", "errors.py"),
    "tasks": ("ramp_edge", "evaluate", "tasks.py"),
    "runner": ("ramp_edge", "evaluate", "runner.py"),
    "loglik": ("ramp_edge", "evaluate", "loglik.py"),
}
TASK_SCHEMA = "ramp-edge/task-items"

# Substrings of llama.cpp / ggml log lines that mean an allocation failed.
_OOM_MARKERS = (
    "failed to allocate",
    "unable to allocate",
    "cannot allocate",
    "out of memory",
    "bad_alloc",
    "failed to mmap",
)

_out_lock = threading.Lock()


class AgentError(Exception):
    """A failure with a kind, a message and an exit code; reported as one JSON error line."""

    def __init__(self, kind: str, message: str, exit_code: int, **detail: object) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.exit_code = exit_code
        self.detail = detail


def emit(obj: dict) -> None:
    """Write one protocol line to stdout (thread-safe, flushed at once)."""
    line = json.dumps({"ramp_agent": PROTOCOL, **obj}, separators=(",", ":"), default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(message: str) -> None:
    sys.stderr.write("ramp_agent: " + message + "\n")
    sys.stderr.flush()


class Heartbeat:
    """Emit a heartbeat line every `interval` seconds until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            emit({"type": "heartbeat", "elapsed_s": round(time.monotonic() - self._start, 1)})

    def __enter__(self) -> Heartbeat:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- llama.cpp glue


class LlamaLog:
    """Capture llama.cpp's log lines (instead of spraying them on stderr); keep the tail."""

    def __init__(self, llama_cpp, verbose: bool = False) -> None:
        self.lines: collections.deque = collections.deque(maxlen=200)
        self._partial = ""
        self.verbose = verbose
        # llama.cpp's load_tensors line "offloaded N/M layers to GPU" (llama-model.cpp): what
        # --n-gpu-layers really did; kept apart so a long log cannot push it out of the tail
        self.offload_line = ""
        self.layer_devices = {}  # "layer 3 assigned to device CUDA0" lines (any build)

        def callback(level, text, user_data):
            try:
                chunk = text.decode("utf-8", "replace") if text else ""
            except Exception:  # pragma: no cover - defensive, never raise into C
                return
            self._partial += chunk
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                if line.strip():
                    self.lines.append(line)
                    if "layers to GPU" in line:
                        self.offload_line = line
                    elif "assigned to device" in line:
                        self._layer_line(line)
                    if self.verbose:
                        sys.stderr.write(line + "\n")

        self._callback = llama_cpp.llama_log_callback(callback)  # keep a reference
        llama_cpp.llama_log_set(self._callback, None)

    def tail(self, n: int = 20) -> list:
        return list(self.lines)[-n:]

    def offloaded_layers(self):
        """(offloaded, total) layers from llama.cpp's load log, or None if it did not say."""
        import re

        match = re.search(r"offloaded (\d+)/(\d+) layers to GPU", self.offload_line)
        if match:
            return int(match.group(1)), int(match.group(2))
        if self.layer_devices:  # repeating layers only (a CPU-only build prints no total)
            devices = list(self.layer_devices.values())
            return sum(1 for d in devices if not d.upper().startswith("CPU")), len(devices)
        return None

    def _layer_line(self, line: str) -> None:
        import re

        match = re.search(r"layer\s+(\d+) assigned to device ([^,\s]+)", line)
        if match:
            self.layer_devices[int(match.group(1))] = match.group(2)

    def mentions_oom(self) -> bool:
        text = "\n".join(self.lines).lower()
        return any(marker in text for marker in _OOM_MARKERS)


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise AgentError(
            "missing_dependency",
            f"llama-cpp-python is not installed on this device ({err}); "
            "rerun with --bootstrap, or: pip install llama-cpp-python psutil",
            EXIT_DEPENDENCY,
            missing=["llama-cpp-python"],
        ) from None
    return llama_cpp


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except Exception:
            return None


def default_threads() -> int:
    """llama-bench's default: the number of physical cores."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        if physical:
            return int(physical)
    except Exception:
        pass
    return os.cpu_count() or 1


class Model:
    """A GGUF loaded with the llama.cpp C API (the same calls llama-bench makes)."""

    def __init__(
        self,
        llama_cpp,
        path: str,
        llog: LlamaLog,
        n_gpu_layers: int = 0,
        extra_bufts: bool = True,
    ) -> None:
        self.lib = llama_cpp
        self.llog = llog
        if not os.path.isfile(path):
            raise AgentError("bad_input", f"model file not found: {path}", EXIT_BAD_INPUT)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        # -1: every layer (llama.cpp's 999); 0 on a CPU-only build, which offloads nothing
        params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers < 0 else int(n_gpu_layers)
        if not extra_bufts and hasattr(params, "use_extra_bufts"):
            # llama.cpp's --no-repack: no CPU extra buffer types (repacked Q4_0/AMX/KleidiAI)
            params.use_extra_bufts = False
        start = time.perf_counter()
        self.model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), params)
        self.load_time_s = time.perf_counter() - start
        if not self.model:
            self._fail("model_load_failed", f"llama.cpp could not load {path}", EXIT_MODEL_LOAD)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        import ctypes

        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.model, desc, 256)
        self.desc = desc.value.decode("utf-8", "replace")
        self.n_params = int(llama_cpp.llama_model_n_params(self.model))
        self.size_bytes = int(llama_cpp.llama_model_size(self.model))

    def _fail(self, kind: str, message: str, exit_code: int) -> None:
        if self.llog.mentions_oom():
            raise AgentError(
                "out_of_memory",
                message + ": out of memory",
                EXIT_OOM,
                log_tail=self.llog.tail(),
            )
        raise AgentError(kind, message, exit_code, log_tail=self.llog.tail())

    def context(self, n_ctx: int, n_batch: int, n_ubatch: int, threads: int):
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            self._fail(
                "context_failed",
                f"llama.cpp could not create a context of {n_ctx} tokens",
                EXIT_MODEL_LOAD,
            )
        lib.llama_set_n_threads(ctx, threads, threads)
        return ctx

    def free_context(self, ctx) -> None:
        self.lib.llama_free(ctx)

    def clear(self, ctx) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(ctx), False)

    def decode(self, ctx, tokens: list) -> None:
        lib = self.lib
        array = (lib.llama_token * len(tokens))(*tokens)
        rc = lib.llama_decode(ctx, lib.llama_batch_get_one(array, len(tokens)))
        if rc != 0:
            self._fail("decode_failed", f"llama_decode returned {rc}", EXIT_INTERNAL)

    def close(self) -> None:
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None


def run_prompt(model: Model, ctx, n_prompt: int, n_batch: int, rng: random.Random) -> None:
    """llama-bench's test_prompt: random tokens (BOS first), decoded in n_batch chunks."""
    done = 0
    while done < n_prompt:
        n = min(n_prompt - done, n_batch)
        first = model.bos if done == 0 and model.add_bos else rng.randrange(model.n_vocab)
        tokens = [first] + [rng.randrange(model.n_vocab) for _ in range(n - 1)]
        model.decode(ctx, tokens)
        done += n
    model.lib.llama_synchronize(ctx)


def run_gen(model: Model, ctx, n_gen: int, rng: random.Random) -> None:
    """llama-bench's test_gen: one token per decode, synchronize after each."""
    lib = model.lib
    token = model.bos if model.add_bos else rng.randrange(model.n_vocab)
    one = (lib.llama_token * 1)()
    for _ in range(n_gen):
        one[0] = token
        rc = lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1))
        if rc != 0:
            model._fail("decode_failed", f"llama_decode returned {rc}", EXIT_INTERNAL)
        lib.llama_synchronize(ctx)
        token = rng.randrange(model.n_vocab)


def summarize(samples_ns: list, n_tokens: int) -> dict:
    """llama-bench's statistics: t/s per repetition, mean and sample standard deviation."""
    ts = [n_tokens * 1e9 / ns for ns in samples_ns]
    mean = sum(ts) / len(ts)
    std = math.sqrt(sum((x - mean) ** 2 for x in ts) / (len(ts) - 1)) if len(ts) > 1 else 0.0
    return {
        "n_tokens": n_tokens,
        "samples_ns": samples_ns,
        "samples_ts": [round(x, 4) for x in ts],
        "avg_ts": mean,
        "stddev_ts": std,
        "min_ts": min(ts),
        "max_ts": max(ts),
    }


# --------------------------------------------------------------------------- commands


def cpu_flags() -> list:
    """CPU feature flags from /proc/cpuinfo (x86 'flags', ARM 'Features')."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return sorted(set(value.split()))
    except OSError:
        pass
    return []


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


def memory_facts() -> dict:
    try:
        import psutil

        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        return {
            "total_bytes": int(vm.total),
            "available_bytes": int(vm.available),
            "swap_total_bytes": int(swap.total),
        }
    except Exception:
        facts = {}
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    parts = value.split()
                    if parts:
                        facts[key] = int(parts[0]) * 1024
        except OSError:
            return {}
        return {
            "total_bytes": facts.get("MemTotal"),
            "available_bytes": facts.get("MemAvailable"),
            "swap_total_bytes": facts.get("SwapTotal"),
        }


def cgroup_memory_limit() -> int | None:
    """The memory cap of this process's cgroup (v2 memory.max or v1 limit_in_bytes)."""
    try:
        with open("/proc/self/cgroup") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidate = "/sys/fs/cgroup" + path + "/memory.max"
        elif "memory" in controllers.split(","):
            candidate = "/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"
        else:
            continue
        try:
            with open(candidate) as handle:
                value = handle.read().strip()
        except OSError:
            continue
        if value != "max" and int(value) < (1 << 60):
            return int(value)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _run_quiet(argv: list, timeout: float = 5.0) -> str | None:
    """stdout of a small system tool, or None when it is missing or fails."""
    import subprocess

    try:
        out = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace").strip() if out.returncode == 0 else None


def llama_facts() -> dict | None:
    """llama-cpp-python's version, llama.cpp's build line, backends and loadable ggml types."""
    try:
        import llama_cpp
    except ImportError:
        return None
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    gpu = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
    backends = ["CPU"]
    for name in ("CUDA", "Metal", "Vulkan", "SYCL", "HIP", "OpenCL", "CANN", "BLAS"):
        if name.upper() + " :" in info.upper() or name.upper() + " =" in info.upper():
            backends.append(name)
    devices = []
    try:  # ggml's device registry (llama.cpp >= b4000): the real list, GPUs with free memory
        n = int(llama_cpp.ggml_backend_dev_count())
        for i in range(n):
            dev = llama_cpp.ggml_backend_dev_get(i)
            name = llama_cpp.ggml_backend_dev_name(dev)
            devices.append(name.decode() if isinstance(name, bytes) else str(name))
    except Exception:
        pass
    build = None
    for attr in ("LLAMA_BUILD_NUMBER", "LLAMA_COMMIT"):
        build = build or getattr(llama_cpp, attr, None)
    types = sorted(
        name[len("GGML_TYPE_") :]
        for name in dir(llama_cpp)
        if name.startswith("GGML_TYPE_") and name != "GGML_TYPE_COUNT"
    )
    return {
        "version": getattr(llama_cpp, "__version__", None),
        "llama_cpp_build": build,
        "system_info": info,
        "supports_mmap": bool(llama_cpp.llama_supports_mmap()),
        "supports_gpu_offload": gpu,
        "backends": backends if not gpu or len(backends) > 1 else [*backends, "GPU"],
        "devices": devices,
        "ggml_types": types,
        "cpu_only": not gpu,
    }


def gpu_facts() -> dict:
    """GPU memory: nvidia-smi on discrete GPUs; Jetson and Apple share RAM (unified memory)."""
    jetson = os.path.exists("/etc/nv_tegra_release")
    apple = sys.platform == "darwin" and platform.machine() == "arm64"
    facts = {"unified_memory": jetson or apple, "kind": None, "name": None}
    if jetson:
        facts["kind"] = "jetson"
        facts["name"] = _read("/proc/device-tree/model")
    elif apple:
        facts["kind"] = "apple"
    out = _run_quiet(
        ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"]
    )
    if out:
        name, total, free = [x.strip() for x in out.splitlines()[0].split(",")[:3]]
        facts.update(kind=facts["kind"] or "cuda", name=name)
        try:
            facts["memory_total_bytes"] = int(float(total)) << 20
            facts["memory_free_bytes"] = int(float(free)) << 20
        except ValueError:
            pass
    return facts


def thermal_facts() -> dict:
    """Throttling and power state where the board tells: Pi get_throttled, Jetson nvpmodel."""
    facts = {}
    temps = []
    base = "/sys/class/thermal"
    try:
        zones = sorted(z for z in os.listdir(base) if z.startswith("thermal_zone"))
    except OSError:
        zones = []
    for zone in zones:
        value = _read(os.path.join(base, zone, "temp"))
        if value and value.lstrip("-").isdigit():
            temps.append(int(value) / 1000.0)
    if temps:
        facts["max_temp_c"] = max(temps)
    # Raspberry Pi firmware: bit 0 under-voltage now, 1 frequency capped, 2 throttled, 3 soft
    # temperature limit; bits 16-19 the same since boot.
    throttled = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")
    if throttled is None:
        out = _run_quiet(["vcgencmd", "get_throttled"])
        throttled = out.split("=", 1)[1] if out and "=" in out else None
    if throttled is not None:
        try:
            bits = int(throttled, 16)
            facts["pi_throttled"] = hex(bits)
            facts["pi_throttled_now"] = bool(bits & 0xF)
        except ValueError:
            pass
    mode = _run_quiet(["nvpmodel", "-q"])
    if mode:
        facts["jetson_power_mode"] = " ".join(mode.split())
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        facts["cpu_governor"] = governor
    return facts


def copy_bandwidth(size_bytes: int, repeats: int, threads: int) -> float:
    """Bytes/s of a threaded memmove (read + write counted, like STREAM copy); stdlib only.

    ctypes.memmove is a foreign call that releases the GIL, so the threads copy in parallel,
    as llama.cpp's decode threads stream weights. The buffer is capped at 1/8 of free RAM.
    """
    import ctypes

    avail = memory_facts().get("available_bytes") or size_bytes * 8
    size = int(min(size_bytes, avail // 8))
    threads = max(1, threads)
    size -= size % (threads * 4096)
    if size <= 0:
        raise AgentError("bad_input", "not enough free memory to measure bandwidth", EXIT_OOM)
    src = ctypes.create_string_buffer(size)
    dst = ctypes.create_string_buffer(size)
    ctypes.memset(src, 1, size)
    step = size // threads
    base_src, base_dst = ctypes.addressof(src), ctypes.addressof(dst)

    def work(i: int) -> None:
        ctypes.memmove(base_dst + i * step, base_src + i * step, step)

    best = 0.0
    for _ in range(max(1, repeats)):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, 2 * size / (time.perf_counter() - start))
    return best


def cmd_bandwidth(args: argparse.Namespace) -> dict:
    threads = args.threads or default_threads()
    bw = copy_bandwidth(args.size_mib << 20, args.repeats, threads)
    return {"copy_bytes_per_s": bw, "threads": threads, "size_mib": args.size_mib}


def cmd_probe(args: argparse.Namespace) -> dict:
    facts = {
        "agent_version": AGENT_VERSION,
        "hostname": platform.node(),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version(),
            "machine": platform.machine(),
        },
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "cpu": {
            "model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "physical_cores": None,
            "flags": cpu_flags(),
        },
        "memory": memory_facts(),
        "cgroup_memory_limit_bytes": cgroup_memory_limit(),
        "jetson": os.path.exists("/etc/nv_tegra_release"),
    }
    try:
        import psutil

        facts["cpu"]["physical_cores"] = psutil.cpu_count(logical=False)
        freq = psutil.cpu_freq()
        facts["cpu"]["max_mhz"] = float(freq.max) if freq and freq.max else None
        facts["psutil_version"] = psutil.__version__
    except Exception:
        facts["psutil_version"] = None
    try:
        # where artifacts land (.ramp-edge/artifacts beside the agent's folder)
        statvfs = os.statvfs(os.path.dirname(HERE) or HERE)
        facts["disk_free_bytes"] = statvfs.f_bavail * statvfs.f_frsize
    except OSError:
        facts["disk_free_bytes"] = None
    facts["llama_cpp"] = llama_facts()
    facts["gpu"] = gpu_facts()
    facts["thermal"] = thermal_facts()
    facts["load_avg_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return facts


def cmd_env_check(args: argparse.Namespace) -> dict:
    found = {}
    missing = []
    for module, requirement in REQUIREMENTS.items():
        try:
            mod = __import__(module)
            found[module] = getattr(mod, "__version__", "unknown")
        except ImportError:
            found[module] = None
            missing.append(requirement)
    scorer = [name for name in SCORER_FILES if _find_scorer_module(name) is None]
    ready = {
        command: all(found[m] is not None for m in needs)
        for command, needs in COMMAND_NEEDS.items()
    }
    ready["eval"] = ready["eval"] and not scorer
    hint = None
    if missing:
        hint = "pip install " + " ".join(missing)
    canary = None
    if getattr(args, "canary_model", None) and found["llama_cpp"] is not None:
        canary = run_canaries(args.canary_model, args.n_gpu_layers)
    return {
        "canary": canary,
        "python": platform.python_version(),
        "python_ok": sys.version_info >= (3, 8),
        "executable": sys.executable,
        "modules": found,
        "missing": missing,
        "missing_scorer_modules": scorer,
        "ready": ready,
        "install_hint": hint,
    }


def cmd_bench(args: argparse.Namespace) -> dict:
    lib = import_llama_cpp()
    llog = LlamaLog(lib, verbose=args.verbose)
    threads = args.threads or default_threads()
    if args.reps < 1 or args.n_prompt < 0 or args.n_gen < 0 or (args.n_prompt == args.n_gen == 0):
        raise AgentError("bad_input", "need reps >= 1 and n_prompt or n_gen > 0", EXIT_BAD_INPUT)
    if args.n_batch < 1 or args.n_ubatch < 1 or args.threads < 0 or args.ctx_size < 0:
        # n_batch 0 would never advance run_prompt's loop
        raise AgentError(
            "bad_input", "need n_batch, n_ubatch >= 1 and threads, ctx_size >= 0", EXIT_BAD_INPUT
        )
    rng = random.Random(args.seed)
    rss_before = current_rss_bytes()
    model = Model(lib, args.model, llog, args.n_gpu_layers, not args.no_extra_bufts)
    result = {
        "model": {
            "path": args.model,
            "desc": model.desc,
            "n_params": model.n_params,
            "size_bytes": model.size_bytes,
            "file_bytes": os.path.getsize(args.model),
        },
        "threads": threads,
        "n_gpu_layers": args.n_gpu_layers,
        "extra_bufts": not args.no_extra_bufts,
        "gpu_offload": bool(getattr(lib, "llama_supports_gpu_offload", lambda: False)()),
        # as llama.cpp reported loading the model: [offloaded, total] layers, or None
        "layers_offloaded": list(llog.offloaded_layers() or []) or None,
        "n_batch": args.n_batch,
        "n_ubatch": args.n_ubatch,
        "reps": args.reps,
        "load_time_s": model.load_time_s,
        "tests": {},
    }
    try:
        # Like llama-bench: one context per test, sized n_prompt + n_gen of that test, a warmup
        # run, then `reps` timed runs each starting from an empty KV cache.
        plan = []
        if args.n_prompt > 0:
            plan.append((f"pp{args.n_prompt}", args.n_prompt, 0))
        if args.n_gen > 0:
            plan.append((f"tg{args.n_gen}", 0, args.n_gen))
        for name, n_prompt, n_gen in plan:
            n_ctx = args.ctx_size or (n_prompt + n_gen)
            ctx = model.context(n_ctx, args.n_batch, args.n_ubatch, threads)
            try:
                model.clear(ctx)
                if n_prompt:
                    run_prompt(model, ctx, n_prompt, args.n_batch, rng)
                else:
                    run_gen(model, ctx, 1, rng)
                samples = []
                for rep in range(args.reps):
                    model.clear(ctx)
                    start = time.perf_counter_ns()
                    if n_prompt:
                        run_prompt(model, ctx, n_prompt, args.n_batch, rng)
                    else:
                        run_gen(model, ctx, n_gen, rng)
                    samples.append(time.perf_counter_ns() - start)
                    emit({"type": "progress", "phase": name, "done": rep + 1, "total": args.reps})
                result["tests"][name] = summarize(samples, n_prompt or n_gen)
            finally:
                model.free_context(ctx)
    finally:
        model.close()
    result["rss_before_load_bytes"] = rss_before
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def _find_scorer_module(name: str) -> str | None:
    path = os.path.join(HERE, *SCORER_FILES[name])
    return path if os.path.isfile(path) else None


def import_scorer():
    """Import the scorer modules pushed beside the agent as a package tree.

    The harness pushes ``ramp_edge/errors.py`` and ``ramp_edge/evaluate/{tasks,runner,loglik}.py``
    (plus stub ``__init__.py`` files) into this directory, so the modules' own absolute imports
    resolve here, ahead of any installed ramp_edge.
    """
    missing = [name for name in SCORER_FILES if _find_scorer_module(name) is None]
    if missing:
        raise AgentError(
            "missing_scorer",
            "the scorer modules {} are not beside the agent in {}; push them with it "
            "(ramp_edge/errors.py, ramp_edge/evaluate/{{tasks,runner,loglik}}.py)".format(
                ", ".join(missing), HERE
            ),
            EXIT_DEPENDENCY,
            missing=missing,
        )
    if sys.path[:1] != [HERE]:
        sys.path.insert(0, HERE)
    import importlib

    try:
        tasks = importlib.import_module("ramp_edge.evaluate.tasks")
        loglik = importlib.import_module("ramp_edge.evaluate.loglik")
    except ImportError as err:
        name = getattr(err, "name", None) or str(err)
        raise AgentError(
            "missing_dependency",
            f"the scorer needs {name} on this device: {err}",
            EXIT_DEPENDENCY,
            missing=[name],
        ) from None
    return tasks, loglik


def _error_kind(err: Exception) -> tuple:
    """Map the scorer's own error classes (ArtifactError, ConfigError) to protocol errors."""
    name = type(err).__name__
    if name == "ArtifactError":
        return "model_load_failed", EXIT_MODEL_LOAD
    return "bad_input", EXIT_BAD_INPUT


def cmd_eval(args: argparse.Namespace) -> dict:
    try:
        with open(args.tasks, encoding="utf-8") as handle:
            payload = json.load(handle)
    except FileNotFoundError:
        raise AgentError(
            "bad_input", f"task file not found: {args.tasks}", EXIT_BAD_INPUT
        ) from None
    except ValueError as err:
        raise AgentError(
            "bad_input", f"task file {args.tasks} is not valid JSON: {err}", EXIT_BAD_INPUT
        ) from None
    if payload.get("schema") != TASK_SCHEMA or payload.get("schema_version") != 1:
        raise AgentError(
            "bad_input",
            f"task file {args.tasks} is not a {TASK_SCHEMA} v1 file",
            EXIT_BAD_INPUT,
        )
    if not os.path.isfile(args.model):
        raise AgentError("bad_input", f"model file not found: {args.model}", EXIT_BAD_INPUT)
    import_llama_cpp()
    tasks_mod, loglik = import_scorer()
    plan = []
    try:
        for entry in payload["tasks"]:
            # tasks are data: the host built the items from any task file, so the device
            # needs only the name, version and metrics it reports, never the task itself
            task = tasks_mod.TaskInfo(
                str(entry["name"]), int(entry["version"]), tuple(entry["metrics"])
            )
            items = [
                tasks_mod.Item(
                    requests=tuple((str(c), str(t)) for c, t in item["requests"]),
                    gold=int(item["gold"]),
                    choice_chars=tuple(int(n) for n in item["choice_chars"]),
                )
                for item in entry["items"]
            ]
            if args.limit:
                items = items[: args.limit]
            plan.append((task, items))
    except AgentError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise AgentError(
            "bad_input", f"malformed task items in {args.tasks}: {err!r}", EXIT_BAD_INPUT
        ) from None
    except Exception as err:  # the scorer's ConfigError / ArtifactError
        kind, code = _error_kind(err)
        raise AgentError(kind, str(err), code) from None

    lib = import_llama_cpp()
    llog = LlamaLog(lib, verbose=False)
    threads = args.threads or default_threads()
    start = time.perf_counter()
    total = sum(len(items) for _, items in plan)
    if args.no_extra_bufts:
        _patch_no_extra_bufts(lib)
    try:
        kwargs = {"n_threads": threads}
        if args.n_ctx:
            kwargs["n_ctx"] = args.n_ctx
        if args.n_gpu_layers:
            kwargs["n_gpu_layers"] = args.n_gpu_layers
        scorer = loglik.LlamaCppScorer(args.model, **kwargs)
    except MemoryError:
        raise
    except Exception as err:
        if llog.mentions_oom():
            raise AgentError(
                "out_of_memory",
                "loading the model for eval: out of memory",
                EXIT_OOM,
                log_tail=llog.tail(),
            ) from None
        kind, code = _error_kind(err)
        raise AgentError(kind, str(err), code, log_tail=llog.tail()) from None
    results = []
    try:
        offset = 0
        for task, items in plan:

            def tick(done, _base=offset, _name=task.name):
                emit(
                    {
                        "type": "progress",
                        "phase": "eval",
                        "task": _name,
                        "done": _base + done,
                        "total": total,
                    }
                )

            result = tasks_mod.evaluate_items(scorer, task, items, tick)
            results.append(result.to_dict())
            offset += len(items)
        evaluated = getattr(scorer, "n_evaluated_tokens", None)
    finally:
        scorer.close()
    return {
        "tasks": results,
        "threads": threads,
        "n_gpu_layers": args.n_gpu_layers,
        "extra_bufts": not args.no_extra_bufts,
        "n_ctx": getattr(scorer, "n_ctx", None),
        "evaluated_tokens": evaluated,
        "duration_s": time.perf_counter() - start,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _patch_no_extra_bufts(lib) -> None:
    """Make llama_cpp.Llama load without CPU extra buffer types (it has no such argument)."""
    inner = getattr(lib, "llama_cpp", lib)
    original = inner.llama_model_default_params

    def default_params():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    inner.llama_model_default_params = default_params


def cmd_canary(args: argparse.Namespace) -> dict:
    """Load a model and decode a short prompt plus two tokens: the first llama_decode is where
    a CPU path the build picked but the CPU cannot run (e.g. ggml's AMX kernels) dies."""
    lib = import_llama_cpp()
    llog = LlamaLog(lib, verbose=False)
    start = time.perf_counter()
    model = Model(lib, args.model, llog, args.n_gpu_layers, not args.no_extra_bufts)
    try:
        ctx = model.context(64, 64, 64, args.threads or default_threads())
        try:
            rng = random.Random(1)
            run_prompt(model, ctx, 16, 64, rng)
            run_gen(model, ctx, 2, rng)
        finally:
            model.free_context(ctx)
    finally:
        model.close()
    return {
        "ok": True,
        "extra_bufts": not args.no_extra_bufts,
        "n_gpu_layers": args.n_gpu_layers,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _signal_name(number: int) -> str:
    import signal as _signal

    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_canaries(model: str, n_gpu_layers: int) -> dict:
    """The canary in a worker; when it crashes, again without extra buffer types."""
    base = ["canary", "--model", model, "--n-gpu-layers", str(n_gpu_layers)]
    tries = []
    for extra in ([], ["--no-extra-bufts"]):
        code, final, tail = run_worker(base + extra, relay=False)
        entry = {"extra_bufts": not extra, "exit_code": code}
        if final is not None and final.get("ok"):
            entry["ok"] = True
            tries.append(entry)
            break
        entry["ok"] = False
        err = (final or {}).get("error") or {}
        entry["error"] = err.get("message") or " ".join(tail[-3:])
        if code is not None and code < 0:
            entry.update(signal=-code, signal_name=_signal_name(-code))
            entry["error"] = "crashed with {}{}".format(
                _signal_name(-code), ": " + entry["error"] if entry["error"] else ""
            )
        tries.append(entry)
        if not (code is not None and code < 0):
            break  # an ordinary error (bad file, OOM) will not change without extra buffers
    ok = tries[-1]["ok"]
    first = tries[0]
    if ok and len(tries) > 1:
        reason = (
            "the first decode crashed with {} using CPU extra buffer types (repacked/AMX "
            "kernels); bench and eval run without them (llama.cpp --no-repack)".format(
                first.get("signal_name")
            )
        )
    elif ok:
        reason = None
    else:
        reason = "the canary decode failed: {}".format(tries[-1].get("error"))
    return {
        "ok": ok,
        "extra_bufts": bool(ok and tries[-1]["extra_bufts"]),
        "fallback": "no_extra_bufts" if ok and len(tries) > 1 else None,
        "reason": reason,
        "tries": tries,
    }


def run_worker(argv: list, relay: bool = True) -> tuple:
    """Run this agent with --worker for `argv`; relay its protocol lines (not the final one).

    Returns (exit code, the worker's final result/error message or None, stderr tail). A
    negative exit code is the signal that killed the worker (subprocess convention).
    """
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tail: collections.deque = collections.deque(maxlen=20)

    def drain() -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                tail.append(line)
                sys.stderr.write(line + "\n")

    reader = threading.Thread(target=drain, name="worker-stderr", daemon=True)
    reader.start()
    final = None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").strip()
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict) or message.get("ramp_agent") != PROTOCOL:
            continue
        if message.get("type") in ("result", "error"):
            final = message
        elif relay:
            emit({k: v for k, v in message.items() if k != "ramp_agent"})
    code = proc.wait()
    reader.join(timeout=5)
    return code, final, list(tail)


def inject_fault(command: str, args: argparse.Namespace) -> None:
    """Test-only: RAMP_AGENT_TEST_FAULT="bench=SEGV" kills the bench worker with SIGSEGV;
    "canary:extra=SEGV" only while extra buffer types are on (as ggml's AMX crash did).

    Ignored unless RAMP_AGENT_TESTING=1 is also set (see FAULT_ENV)."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    if os.environ.get(TESTING_ENV) != "1":
        sys.stderr.write(f"ramp_agent: ignoring {FAULT_ENV} (test-only; needs {TESTING_ENV}=1)\n")
        return
    import signal as _signal

    for part in spec.split(","):
        name, _, sig = part.partition("=")
        name, _, qualifier = name.strip().partition(":")
        if qualifier == "extra" and getattr(args, "no_extra_bufts", False):
            continue
        if name == command:
            number = getattr(_signal, "SIG" + sig.strip().upper().replace("SIG", ""), None)
            if number is not None:
                sys.stdout.flush()
                os.kill(os.getpid(), number)
                time.sleep(5)  # the signal arrives asynchronously


COMMANDS = {
    "probe": cmd_probe,
    "bandwidth": cmd_bandwidth,
    "env-check": cmd_env_check,
    "bench": cmd_bench,
    "eval": cmd_eval,
    "canary": cmd_canary,
}


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a protocol error line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise AgentError("usage", f"{self.prog}: {message}", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ramp_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    parser.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sub.add_parser("probe", help="system facts")
    bw = sub.add_parser("bandwidth", help="memory copy bandwidth")
    bw.add_argument("--size-mib", type=int, default=128)
    bw.add_argument("--repeats", type=int, default=5)
    bw.add_argument("--threads", type=int, default=0, help="0: physical cores")
    env = sub.add_parser("env-check", help="which dependencies are missing")
    env.add_argument("--canary-model", default=None, help="decode this GGUF in a subprocess")
    env.add_argument("--n-gpu-layers", type=int, default=0)
    canary = sub.add_parser("canary", help="load a model and decode a few tokens")
    canary.add_argument("--model", required=True)
    canary.add_argument("--threads", type=int, default=0)

    def load_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--n-gpu-layers", type=int, default=0, help="layers offloaded to the GPU, -1: all"
        )
        p.add_argument(
            "--no-extra-bufts", action="store_true", help="no CPU repack buffers (--no-repack)"
        )

    load_options(canary)
    bench = sub.add_parser("bench", help="pp/tg tokens per second, llama-bench style")
    bench.add_argument("--model", required=True)
    bench.add_argument("--threads", type=int, default=0, help="0: physical cores")
    bench.add_argument("--n-prompt", type=int, default=512)
    bench.add_argument("--n-gen", type=int, default=128)
    bench.add_argument("--reps", type=int, default=5)
    bench.add_argument("--n-batch", type=int, default=2048)
    bench.add_argument("--n-ubatch", type=int, default=512)
    bench.add_argument("--ctx-size", type=int, default=0, help="0: n_prompt + n_gen per test")
    bench.add_argument("--seed", type=int, default=1234)
    bench.add_argument("--verbose", action="store_true", help="llama.cpp log on stderr")
    load_options(bench)
    ev = sub.add_parser("eval", help="commonsense multiple-choice accuracy")
    ev.add_argument("--model", required=True)
    ev.add_argument("--tasks", required=True, help="JSON task items pushed with the agent")
    ev.add_argument("--limit", type=int, default=0, help="items per task, 0: all")
    ev.add_argument("--threads", type=int, default=0)
    ev.add_argument("--n-ctx", type=int, default=0, help="0: the scorer's default (2048)")
    load_options(ev)
    return parser


def main(argv: list | None = None) -> int:
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        if command is None:
            raise AgentError("usage", "no command; one of: " + ", ".join(COMMANDS), EXIT_USAGE)
        if command in WORKER_COMMANDS and not args.worker:
            with Heartbeat(args.heartbeat):
                code, final, tail = run_worker(list(argv if argv is not None else sys.argv[1:]))
            if final is not None:
                emit({k: v for k, v in final.items() if k != "ramp_agent"})
                return code if code >= 0 else EXIT_CRASHED
            if code < 0 and -code == getattr(__import__("signal"), "SIGKILL", 9):
                # SIGKILL is not a native fault: on a device it is the kernel's (or cgroup's)
                # out-of-memory killer, as it was before bench ran in a worker
                raise AgentError(
                    "killed",
                    "{} was killed by SIGKILL, most likely the out-of-memory killer; "
                    "last log: {}".format(command, " | ".join(tail[-3:]) or "none"),
                    EXIT_OOM,
                    signal=-code,
                    signal_name=_signal_name(-code),
                    stderr_tail=tail,
                )
            if code < 0:
                raise AgentError(
                    "crashed",
                    "{} crashed with {} (native code in llama.cpp/ggml); last log: {}".format(
                        command, _signal_name(-code), " | ".join(tail[-3:]) or "none"
                    ),
                    EXIT_CRASHED,
                    signal=-code,
                    signal_name=_signal_name(-code),
                    stderr_tail=tail,
                )
            raise AgentError(
                "internal",
                "the {} worker exited {} without a result: {}".format(
                    command, code, " | ".join(tail[-3:]) or "no output"
                ),
                EXIT_INTERNAL,
                stderr_tail=tail,
            )
        if args.worker:
            args.heartbeat = 0  # the parent beats; the worker only reports progress
            inject_fault(command, args)
        with Heartbeat(args.heartbeat):
            data = COMMANDS[command](args)
        emit({"type": "result", "command": command, "ok": True, "data": data})
        return EXIT_OK
    except AgentError as err:
        error = {"kind": err.kind, "message": err.message, "exit_code": err.exit_code}
        error.update(err.detail)
        emit({"type": "error", "command": command, "ok": False, "error": error})
        return err.exit_code
    except MemoryError:
        emit(
            {
                "type": "error",
                "command": command,
                "ok": False,
                "error": {
                    "kind": "out_of_memory",
                    "message": f"out of memory (MemoryError) during {command}",
                    "exit_code": EXIT_OOM,
                    "peak_rss_bytes": peak_rss_bytes(),
                },
            }
        )
        return EXIT_OOM
    except KeyboardInterrupt:
        emit(
            {
                "type": "error",
                "command": command,
                "ok": False,
                "error": {"kind": "interrupted", "message": "interrupted", "exit_code": 130},
            }
        )
        return 130
    except SystemExit as err:  # --version / --help
        return int(err.code or 0)
    except Exception as err:  # every failure ends in a JSON line
        emit(
            {
                "type": "error",
                "command": command,
                "ok": False,
                "error": {
                    "kind": "internal",
                    "message": f"{type(err).__name__}: {err}",
                    "exit_code": EXIT_INTERNAL,
                    "traceback": traceback.format_exc().splitlines()[-8:],
                },
            }
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
