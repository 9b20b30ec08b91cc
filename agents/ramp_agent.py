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
    probe      system facts (RAM, cores, CPU flags, OS, Python, llama.cpp build)
    env-check  which dependencies are missing, and how to install them
    bench      pp<N>/tg<N> tokens/s like llama-bench (reps, mean, stddev), load time, peak RSS
    eval       multiple-choice commonsense scoring of task items (a ramp-edge/task-items JSON
               file) pushed with the agent; needs the scorer modules beside this file as
               ramp_edge/errors.py + ramp_edge/evaluate/{tasks,runner,loglik}.py

Exit codes: 0 ok, 1 internal error, 2 usage, 3 missing dependency, 4 bad input, 5 model failed
to load, 6 out of memory; 137 (from the shell) when the kernel killed the agent.
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
                    if self.verbose:
                        sys.stderr.write(line + "\n")

        self._callback = llama_cpp.llama_log_callback(callback)  # keep a reference
        llama_cpp.llama_log_set(self._callback, None)

    def tail(self, n: int = 20) -> list:
        return list(self.lines)[-n:]

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

    def __init__(self, llama_cpp, path: str, llog: LlamaLog) -> None:
        self.lib = llama_cpp
        self.llog = llog
        if not os.path.isfile(path):
            raise AgentError("bad_input", f"model file not found: {path}", EXIT_BAD_INPUT)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
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
        statvfs = os.statvfs(HERE)
        facts["disk_free_bytes"] = statvfs.f_bavail * statvfs.f_frsize
    except OSError:
        facts["disk_free_bytes"] = None
    try:
        import llama_cpp

        facts["llama_cpp"] = {
            "version": getattr(llama_cpp, "__version__", None),
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "supports_mmap": bool(llama_cpp.llama_supports_mmap()),
        }
    except ImportError:
        facts["llama_cpp"] = None
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
    return {
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
    rng = random.Random(args.seed)
    rss_before = current_rss_bytes()
    model = Model(lib, args.model, llog)
    result = {
        "model": {
            "path": args.model,
            "desc": model.desc,
            "n_params": model.n_params,
            "size_bytes": model.size_bytes,
            "file_bytes": os.path.getsize(args.model),
        },
        "threads": threads,
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
    try:
        kwargs = {"n_threads": threads}
        if args.n_ctx:
            kwargs["n_ctx"] = args.n_ctx
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
        "n_ctx": getattr(scorer, "n_ctx", None),
        "evaluated_tokens": evaluated,
        "duration_s": time.perf_counter() - start,
        "peak_rss_bytes": peak_rss_bytes(),
    }


COMMANDS = {
    "probe": cmd_probe,
    "env-check": cmd_env_check,
    "bench": cmd_bench,
    "eval": cmd_eval,
}


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a protocol error line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise AgentError("usage", f"{self.prog}: {message}", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ramp_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    parser.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sub.add_parser("probe", help="system facts")
    sub.add_parser("env-check", help="which dependencies are missing")
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
    ev = sub.add_parser("eval", help="commonsense multiple-choice accuracy")
    ev.add_argument("--model", required=True)
    ev.add_argument("--tasks", required=True, help="JSON task items pushed with the agent")
    ev.add_argument("--limit", type=int, default=0, help="items per task, 0: all")
    ev.add_argument("--threads", type=int, default=0)
    ev.add_argument("--n-ctx", type=int, default=0, help="0: the scorer's default (2048)")
    return parser


def main(argv: list | None = None) -> int:
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        if command is None:
            raise AgentError("usage", "no command; one of: " + ", ".join(COMMANDS), EXIT_USAGE)
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
