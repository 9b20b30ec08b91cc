"""Predicted vs measured generation speed of SmolLM2-135M recipes on this machine.

The latency model (`ramp_edge.device.budget.latency_model`) is fitted the way `ramp-edge
profile` fits it: llama.cpp tg speed of the reference model quantized purely to Q8_0, Q5_0,
Q4_1 and Q4_0.
It then predicts recipes measured in *other* runs:

- the four named recipes: uniform Q8_0, Q4_0, Q5_0 and the shipped Q4_1 source (Q4_1 + a Q8_0
  embedding), each predicted (a) by the full fit, (b) leaving its own type out of the fit (the
  type then falls back to the prior speed factor), and (c) by the probe-only model (copy
  bandwidth x decode efficiency, no llama.cpp run);
- three mixed recipes the allocator could emit, including llama.cpp's Q4_K_M mix with types
  (Q4_K, Q6_K) that were never calibrated.

All files are measured in interleaved rounds; even rounds feed the fit, odd rounds are the
measurements predictions are compared with, so noise on a shared machine hits both alike.

Remote mode (`--host USER@ADDR[:PORT]`, or `--loopback [127.0.0.x]` which starts an OpenSSH
sshd on a loopback address the way tests/fleet does): `ramp-edge profile --host ... --device
PROFILE --json` measures the host through its agent over SSH; each recipe above is then
predicted from that stored profile (`budget`'s code path: `Store().profile` -> `latency_model`)
and pushed and benched by the agent on that host (`pipeline.deploy_to_host` once, then the
agent's `bench` for later rounds, same pp/tg settings as the profile). Its rows (marked
`remote`) are merged into the same files; the local rows stay.

Usage: .venv/bin/python scripts/bench_budget.py [--rounds 6] [--threads N]
       .venv/bin/python scripts/bench_budget.py --loopback --threads 1 [--rounds 3]
Writes bench/budget_tps.json and bench/budget_tps.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge import paths
from ramp_edge.device.budget import (
    DEFAULT_DECODE_EFFICIENCY,
    LatencyModel,
    bytes_read_per_token,
    fit_type_bandwidths,
    speed_factors,
)
from ramp_edge.device.host import host_facts, measure_copy_bandwidth, physical_cores
from ramp_edge.device.probe_models import quantize_pure, require_llama
from ramp_edge.device.profiles import load_profile
from ramp_edge.errors import ArtifactError, ConfigError, RampEdgeError
from ramp_edge.fsutil import atomic_write_json, atomic_write_text
from ramp_edge.models import resolve
from ramp_edge.quant.llamacpp import llama_quantize
from ramp_edge.schema import unwrap, wrap
from ramp_edge.source.gguf_header import read_gguf_tensors

logger = logging.getLogger("bench_budget")


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
    llama_cpp = require_llama()
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
    n_prompt: int = 128,
    n_gen: int = 64,
    repetitions: int = 3,
    n_threads: int | None = None,
) -> LlamaSpeed:
    """Prompt (pp) and generation (tg) speed of a GGUF with llama.cpp.

    Each repetition: pp = one decode of `n_prompt` tokens; tg = `n_gen` one-token decodes
    from an empty cache (llama-bench's pp512/tg128, shorter). A warm-up pass first faults the
    memory-mapped weights in.
    """
    llama_cpp = require_llama()
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


ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ("Q8_0", "Q5_0", "Q4_1", "Q4_0")
# recipe -> (file, the type a leave-one-out fit drops)
NAMED = {
    "uniform Q8_0": ("pure Q8_0", "Q8_0"),
    "uniform Q4_0": ("pure Q4_0", "Q4_0"),
    "uniform Q5_0": ("pure Q5_0", "Q5_0"),
    "Q4_1 source": ("Q4_1 source", "Q4_1"),
}
MIXED = {
    "attn Q8_0 + rest Q4_0": ("Q4_0", {r"attn_(q|k|v|output)": "Q8_0"}, True),
    "ffn Q5_0 + rest Q4_1": ("Q4_1", {r"ffn_": "Q5_0"}, True),
    "llama.cpp Q4_K_M mix": ("Q4_K_M", None, False),
}


def build_files(source: Path, work: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    tag = source.stat().st_size
    for qtype in CALIBRATION:
        path = work / f"smollm2-135m-{tag}-{qtype}.gguf"
        if not path.exists():
            quantize_pure(source, path, qtype)
        files[f"pure {qtype}"] = path
    files["Q4_1 source"] = source
    for i, (name, (preset, overrides, pure)) in enumerate(MIXED.items()):
        path = work / f"smollm2-135m-{tag}-mix{i}.gguf"
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            llama_quantize(source, partial, preset, overrides=overrides, pure=pure)
            os.replace(partial, path)
        files[name] = path
    return files


def pct(pred: float, meas: float) -> float:
    return (pred - meas) / meas * 100.0


def predictions(b: dict, meas: float, fit, probe, loo=None) -> dict:
    """One recipe's predicted tg by each latency model (fit, probe, leave-one-out) and errors."""
    out = {"pred_fit": round(fit.tokens_per_s(b), 2), "pred_probe": round(probe.tokens_per_s(b), 2)}
    out["err_fit_pct"] = round(pct(out["pred_fit"], meas), 1)
    out["err_probe_pct"] = round(pct(out["pred_probe"], meas), 1)
    if loo is not None:
        out["pred_loo"] = round(loo.tokens_per_s(b), 2)
        out["err_loo_pct"] = round(pct(out["pred_loo"], meas), 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds (local, default 6: even fit, odd test; remote, default 3)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-prompt", type=int, default=64)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument(
        "--stat",
        choices=("max", "median"),
        default="max",
        help="per-file statistic over its rounds; max (best of) resists other jobs' load",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    remote = parser.add_mutually_exclusive_group()
    remote.add_argument(
        "--host",
        metavar="USER@ADDR[:PORT]",
        help="remote mode: profile and bench this SSH host through its agent",
    )
    remote.add_argument(
        "--loopback",
        nargs="?",
        const="127.0.0.9",
        metavar="127.0.0.X",
        help="remote mode against an OpenSSH sshd started here on a loopback address "
        "(default 127.0.0.9), as tests/fleet does",
    )
    parser.add_argument(
        "--device",
        default="laptop-x86",
        help="remote mode: profile id to store the remote measurement under (loopback: in a "
        "temporary RAMP_EDGE_HOME, so it starts unmeasured)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    if args.host or args.loopback:
        return main_remote(args)

    args.rounds = args.rounds or 6
    source = resolve("smollm2-135m").path
    work = paths.cache_dir("bench", "budget")
    files = build_files(Path(source), work)
    bytes_by_file = {name: bytes_read_per_token(read_gguf_tensors(p)) for name, p in files.items()}
    threads = args.threads or physical_cores()
    load_before = os.getloadavg()

    samples: dict[str, list[float]] = {name: [] for name in files}
    start = time.time()
    for r in range(args.rounds):
        order = list(files) if r % 2 == 0 else list(reversed(files))
        for name in order:
            speed = measure_llama_speed(
                files[name], args.n_prompt, args.n_gen, 1, n_threads=threads
            )
            samples[name].append(speed.tg_tokens_per_s)
            logger.info("round %d %-24s tg %.1f tok/s", r, name, speed.tg_tokens_per_s)
    elapsed = time.time() - start
    load_after = os.getloadavg()
    stat = max if args.stat == "max" else statistics.median
    fit_tps = {n: stat(s[0::2]) for n, s in samples.items()}
    test_tps = {n: stat(s[1::2]) for n, s in samples.items()}

    profile = load_profile("localhost")
    factors = speed_factors(profile)
    calib = [f"pure {t}" for t in CALIBRATION]
    fitted, reference = fit_type_bandwidths(
        [(bytes_by_file[n], fit_tps[n]) for n in calib], factors
    )
    full = LatencyModel(
        reference, "measured", factors=tuple(factors.items()), measured=tuple(fitted.items())
    )
    copy_bw = measure_copy_bandwidth(64 << 20, 3, threads)
    probe = LatencyModel(
        copy_bw * DEFAULT_DECODE_EFFICIENCY, "probe", factors=tuple(factors.items())
    )

    def loo_model(leave: str) -> LatencyModel:
        rows = [
            (bytes_by_file[f"pure {t}"], fit_tps[f"pure {t}"]) for t in CALIBRATION if t != leave
        ]
        fit, ref = fit_type_bandwidths(rows, factors)
        return LatencyModel(
            ref, "measured", factors=tuple(factors.items()), measured=tuple(fit.items())
        )

    rows = []
    for name in [*NAMED, *MIXED]:
        file_key = NAMED[name][0] if name in NAMED else name
        b = bytes_by_file[file_key]
        meas = test_tps[file_key]
        row = {
            "recipe": name,
            "where": "local",
            "kind": "named" if name in NAMED else "mixed",
            "read_mib": round(sum(b.values()) / 2**20, 2),
            "types": {t: round(v / 2**20, 2) for t, v in b.items()},
            "measured_tg": round(meas, 2),
            "measured_samples": [round(x, 2) for x in samples[file_key][1::2]],
            "measured_tg_median": round(statistics.median(samples[file_key][1::2]), 2),
            **predictions(
                b, meas, full, probe, loo_model(NAMED[name][1]) if name in NAMED else None
            ),
        }
        rows.append(row)

    calibration = [
        {
            "type": t,
            "read_mib": round(sum(bytes_by_file[f"pure {t}"].values()) / 2**20, 2),
            "tg_fit_rounds": round(fit_tps[f"pure {t}"], 2),
            "samples": [round(x, 2) for x in samples[f"pure {t}"][0::2]],
            "effective_gb_s": round(fitted.get(t, 0.0) / 1e9, 3),
        }
        for t in CALIBRATION
    ]
    facts = host_facts()
    doc = wrap(
        "ramp-edge/bench",
        {
            "bench": "budget_tps",
            "machine": {
                "cpu": facts["cpu"],
                "arch": facts["arch"],
                "cores": facts["cores"],
                "features": list(facts["cpu_features"]),
                "python": platform.python_version(),
            },
            "settings": {
                "threads": threads,
                "rounds": args.rounds,
                "statistic": args.stat,
                "n_prompt": args.n_prompt,
                "n_gen": args.n_gen,
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after],
                "elapsed_s": round(elapsed, 1),
            },
            "copy_bandwidth_gb_s": round(copy_bw / 1e9, 2),
            "reference_bandwidth_gb_s": round(reference / 1e9, 3),
            "calibration": calibration,
            "recipes": rows,
            "goal_pct": 15.0,
            "max_abs_err_fit_pct": max(abs(r["err_fit_pct"]) for r in rows),
        },
    )
    previous = read_previous(args.out)
    if previous is not None and "remote" in previous:
        doc["remote"] = previous["remote"]
    write_outputs(args.out, doc)
    return 0


def read_previous(out: Path) -> dict | None:
    """The existing bench/budget_tps.json, or None."""
    path = out / "budget_tps.json"
    if not path.is_file():
        return None
    return unwrap("ramp-edge/bench", json.loads(path.read_text()), str(path))


def write_outputs(out: Path, doc: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "budget_tps.json", doc)
    atomic_write_text(out / "budget_tps.md", render_md(doc))
    print(render_md(doc))


# --------------------------------------------------------------------------- remote mode

FLEET_TESTS = ROOT / "tests" / "fleet"
REMOTE_GOAL_PCT = 10.0  # issue 15


@contextlib.contextmanager
def loopback_target(
    address: str, work: Path
) -> Iterator[tuple[str, dict[str, str], Callable[[], Any]]]:
    """An OpenSSH sshd on `address` (tests/fleet/fleetlib.py's device), ready for the agent.

    As tests/fleet/test_profile_ssh.py: a client HOME whose ~/.ssh/config names the key and
    pins the host key, and a device `.ramp-edge/venv/bin/python` that runs this checkout's
    venv, so the agent needs no bootstrap. Yields the `user@addr:port` target, the environment
    the `ramp-edge` client needs, and a factory of pinned Connections for this process.
    """
    sys.path.insert(0, str(FLEET_TESTS))
    import fleetlib  # the loopback devices of the ssh tests (imports pytest)

    fleetlib.assert_loopback(address)
    for need in (fleetlib.SSHD, fleetlib.SFTP_SERVER):
        if not os.path.exists(need):
            raise RampEdgeError(f"{need} not found: apt-get install openssh-server")
    key = str(work / "client_ed25519")
    fleetlib._keygen(key, "bench-budget-client")
    device_dir = work / "device"
    device_dir.mkdir()
    device = fleetlib.make_device(device_dir, "bench-remote", address, key)
    try:
        home = fleetlib.client_home(work / "client-home", device, key)
        fleetlib.device_python(device)
        target = f"{device.user}@{device.host}:{device.port}"
        # python=None: the agent client finds the device venv python, as for `profile --host`
        yield target, {"HOME": str(home)}, lambda: fleetlib.connect(device, python=None)
    finally:
        device.stop()


def tg_of(data: dict) -> float:
    """Mean tg tokens/s of an agent `bench` result."""
    tg = next((v for k, v in data.get("tests", {}).items() if k.startswith("tg")), None)
    if tg is None:
        raise RampEdgeError("the agent's bench has no tg result")
    return float(tg["avg_ts"])


def main_remote(args: argparse.Namespace) -> int:
    from ramp_edge.agent_client import Agent, BenchOptions, remote_artifact_path
    from ramp_edge.device.budget import latency_model
    from ramp_edge.device.profiles import resolve_name
    from ramp_edge.device.profiling import DEFAULT_OPTIONS
    from ramp_edge.fleet.group import connect_host
    from ramp_edge.fleet.hosts import parse_host
    from ramp_edge.pipeline import deploy_to_host
    from ramp_edge.schema import provenance
    from ramp_edge.store import Store

    pid = resolve_name(args.device)
    rounds = args.rounds or 3
    threads = args.threads or physical_cores()
    source = resolve("smollm2-135m").path
    files = build_files(Path(source), paths.cache_dir("bench", "budget"))
    bytes_by_file = {name: bytes_read_per_token(read_gguf_tensors(p)) for name, p in files.items()}
    # the profile measures pp128/tg64 x 3 (mean); the artifacts are benched the same way
    opts = BenchOptions(
        threads=threads,
        n_prompt=DEFAULT_OPTIONS.n_prompt,
        n_gen=DEFAULT_OPTIONS.n_gen,
        reps=DEFAULT_OPTIONS.repetitions,
        timeout_s=900.0,
    )
    env = dict(os.environ, RAMP_EDGE_CACHE=str(paths.cache_dir()), RAMP_EDGE_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="bench-budget-remote-") as tmp:
        with contextlib.ExitStack() as stack:
            if args.loopback:
                target, extra, connect = stack.enter_context(
                    loopback_target(args.loopback, Path(tmp))
                )
                env.update(extra)
                # a fresh store: the profile starts unmeasured and budget reads this one
                env["RAMP_EDGE_HOME"] = os.environ["RAMP_EDGE_HOME"] = str(Path(tmp) / "state")
            else:
                target = args.host

                def connect() -> Any:
                    return connect_host(parse_host(target, device=pid, name=pid))

            load_before = os.getloadavg()
            start = time.time()
            cmd = [
                str(Path(sys.executable).with_name("ramp-edge")),
                "profile",
                "--host",
                target,
                "--device",
                pid,
                "--threads",
                str(threads),
                "--json",
            ]
            logger.info("$ %s", " ".join(cmd))
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
            if proc.returncode != 0:
                raise RampEdgeError(f"ramp-edge profile --host {target} exited {proc.returncode}")
            profile_s = time.time() - start
            printed = json.loads(proc.stdout)
            with Store() as store:  # what `ramp-edge budget --device <pid>` reads
                profile = store.profile(pid)
            measured = profile.measured
            if measured is None or not measured.source.startswith("agent over ssh"):
                raise RampEdgeError(f"no measurement over ssh stored for {pid}")
            lm = latency_model(profile)
            printed_ref = printed["latency_model"]["reference_bandwidth_bytes_per_s"]
            if lm.source != "measured" or abs(lm.reference_bandwidth_bytes_per_s - printed_ref) > 1:
                raise RampEdgeError("budget's latency model differs from what profile printed")

            # the files the rows need (pure Q4_1 only calibrates the local fit)
            used = [NAMED[n][0] for n in NAMED] + list(MIXED)
            samples: dict[str, list[float]] = {name: [] for name in used}
            deployed: dict[str, Any] = {}
            with connect() as conn:
                agent = Agent(conn)
                for r in range(rounds):
                    order = used if r % 2 == 0 else used[::-1]
                    for name in order:
                        if name not in deployed:  # push + canary + bench: deploy's own path
                            report = deploy_to_host(
                                conn, files[name], bench_opts=opts, device=pid, n_gpu_layers=0
                            )
                            if report.bench is None or report.bench.tg_tps is None:
                                raise RampEdgeError(f"{name}: deploy bench failed: {report}")
                            deployed[name] = report
                            tg = report.bench.tg_tps
                        else:  # later rounds: the same agent bench on the pushed file
                            report = deployed[name]
                            extra_bufts = bool(
                                report.environment["canary"].get("extra_bufts", True)
                            )
                            data = agent.bench(
                                remote_artifact_path(files[name].name, report.artifact_sha256),
                                dataclasses.replace(opts, extra_bufts=extra_bufts),
                            )
                            tg = tg_of(data)
                        samples[name].append(tg)
                        logger.info("remote round %d %-24s tg %.1f tok/s", r, name, tg)
            elapsed = time.time() - start
            load_after = os.getloadavg()

    factors = speed_factors(profile)
    probe = LatencyModel(
        (measured.bandwidth_copy_bytes_per_s or 0) * DEFAULT_DECODE_EFFICIENCY,
        "probe",
        factors=tuple(factors.items()),
    )

    def loo_model(leave: str) -> LatencyModel:
        kept = [(dict(s.bytes_by_type), s.tg_tokens_per_s) for s in measured.type_speeds]
        kept = [row for s, row in zip(measured.type_speeds, kept, strict=True) if s.qtype != leave]
        fit, ref = fit_type_bandwidths(kept, factors)
        return LatencyModel(
            ref, "measured", factors=tuple(factors.items()), measured=tuple(fit.items())
        )

    rows = []
    for name in [*NAMED, *MIXED]:
        key = NAMED[name][0] if name in NAMED else name
        b = bytes_by_file[key]
        meas = statistics.median(samples[key])
        row = {
            "recipe": name,
            "where": "remote",
            "kind": "named" if name in NAMED else "mixed",
            "read_mib": round(sum(b.values()) / 2**20, 2),
            "types": {t: round(v / 2**20, 2) for t, v in b.items()},
            "measured_tg": round(meas, 2),
            "measured_samples": [round(x, 2) for x in samples[key]],
            "measured_tg_max": round(max(samples[key]), 2),
            **predictions(b, meas, lm, probe, loo_model(NAMED[name][1]) if name in NAMED else None),
        }
        rows.append(row)
    fitted = dict(lm.measured)
    remote = {
        "provenance": provenance(),
        "target": target,
        "loopback": bool(args.loopback),
        "device_profile": pid,
        "profile_command": f"ramp-edge profile --host {target} --device {pid} "
        f"--threads {threads} --json",
        "profile_source": measured.source,
        "profile_host": measured.host,
        "profile_created_utc": measured.created_utc,
        "profile_load_avg_1m": measured.load_avg_1m,
        "profile_s": round(profile_s, 1),
        "machine": {
            "cpu": measured.cpu,
            "arch": measured.arch,
            "cores": measured.cores,
            "llama_cpp": measured.llama_cpp_version,
        },
        "settings": {
            "threads": threads,
            "rounds": rounds,
            "statistic": "median",
            "n_prompt": opts.n_prompt,
            "n_gen": opts.n_gen,
            "reps": opts.reps,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "elapsed_s": round(elapsed, 1),
        },
        "copy_bandwidth_gb_s": round((measured.bandwidth_copy_bytes_per_s or 0) / 1e9, 2),
        "reference_bandwidth_gb_s": round(lm.reference_bandwidth_bytes_per_s / 1e9, 3),
        "calibration": [
            {
                "type": s.qtype,
                "read_mib": round(s.read_bytes / 2**20, 2),
                "tg": round(s.tg_tokens_per_s, 2),
                "samples": list(s.tg_samples_tokens_per_s),
                "effective_gb_s": round(fitted.get(s.qtype, 0.0) / 1e9, 3),
            }
            for s in measured.type_speeds
        ],
        "recipes": rows,
        "goal_pct": REMOTE_GOAL_PCT,
        "max_abs_err_fit_pct": max(abs(r["err_fit_pct"]) for r in rows),
        "max_abs_err_fit_pct_mixed": max(
            abs(r["err_fit_pct"]) for r in rows if r["kind"] == "mixed"
        ),
    }
    previous = read_previous(args.out)
    if previous is None:
        doc = wrap("ramp-edge/bench", {"bench": "budget_tps"})
    else:
        doc = previous
        for row in doc.get("recipes", []):
            row.setdefault("where", "local")
    doc["remote"] = remote
    write_outputs(args.out, doc)
    return 0


def render_md(doc: dict) -> str:
    lines = ["# Predicted vs measured generation speed, SmolLM2-135M", ""]
    if "recipes" in doc:
        lines += render_local_md(doc)
    if "remote" in doc:
        lines += render_remote_md(doc["remote"])
    return "\n".join(lines)


def render_local_md(doc: dict) -> list[str]:
    s = doc["settings"]
    m = doc["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['arch']}, {m['cores']} cores), llama-cpp-python "
        f"{doc['provenance']['versions'].get('llama_cpp', '?')}, threads: {s['threads']}; "
        f"tg{s['n_gen']} from an empty context, llama.cpp perf counters; {s['rounds']} interleaved "
        f"rounds (even rounds fit the model, odd rounds are the measurements below; statistic: "
        f"{s['statistic']} over each file's rounds); "
        f"load average {s['loadavg_before'][0]} before, {s['loadavg_after'][0]} after "
        f"(shared machine); {s['elapsed_s']} s. Produced by `scripts/bench_budget.py`.",
        "",
        *(
            [
                f"Threads {s['threads']} on {m['cores']} cores: this VM is shared with other jobs. "
                "With one llama.cpp thread per core, a descheduled thread stalls the others at "
                "every graph barrier and tg fell to about 5 tok/s, so only the 1-thread numbers "
                "are meaningful here.",
                "",
            ]
            if s["threads"] < m["cores"]
            else []
        ),
        f"Copy bandwidth {doc['copy_bandwidth_gb_s']} GB/s (under the same load); "
        "fitted Q4_0 decode bandwidth "
        f"{doc['reference_bandwidth_gb_s']} GB/s.",
        "",
        "## Calibration (what `ramp-edge profile` measures)",
        "",
        "| type | MiB read/token | tg t/s (fit rounds) | effective GB/s |",
        "|---|---|---|---|",
    ]
    for c in doc["calibration"]:
        lines.append(
            f"| {c['type']} | {c['read_mib']} | {c['tg_fit_rounds']} | {c['effective_gb_s']} |"
        )
    lines += [
        "",
        "## Predictions",
        "",
        "fit: latency model fitted on the four pure types; leave-one-out: fitted without the "
        "recipe's own type (it falls back to reference x prior speed factor); "
        "probe: copy bandwidth "
        f"x {DEFAULT_DECODE_EFFICIENCY} x prior factor, no llama.cpp run.",
        "",
        "| recipe | MiB read/token | measured t/s | fit t/s (err) | leave-one-out t/s (err) "
        "| probe t/s (err) |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["recipes"]:
        loo = f"{r['pred_loo']} ({r['err_loo_pct']:+.1f}%)" if "pred_loo" in r else "-"
        lines.append(
            f"| {r['recipe']} | {r['read_mib']} | {r['measured_tg']} | {r['pred_fit']} "
            f"({r['err_fit_pct']:+.1f}%) | {loo} | {r['pred_probe']} ({r['err_probe_pct']:+.1f}%) |"
        )
    within = doc["max_abs_err_fit_pct"] <= doc["goal_pct"]
    lines += [
        "",
        f"Largest fit error {doc['max_abs_err_fit_pct']}% (goal: within {doc['goal_pct']:g}%: "
        f"{'met' if within else 'not met'}).",
        "",
    ]
    return lines


def render_remote_md(r: dict) -> list[str]:
    s = r["settings"]
    m = r["machine"]
    where = (
        f"an OpenSSH sshd on loopback ({r['target'].split('@')[-1]}) started by the script on this "
        "same machine: same CPU and memory as the local rows above, not a separate device; "
        "its `.ramp-edge/venv/bin/python` runs this checkout's venv (no bootstrap)"
        if r["loopback"]
        else f"{r['target']}"
    )
    lines = [
        "## Remote (agent over SSH, loopback sshd)"
        if r["loopback"]
        else "## Remote (agent over SSH)",
        "",
        f"Host: {where}. The machine is shared with other jobs, so the speeds are under their "
        f"load: load average {s['loadavg_before'][0]} before, {s['loadavg_after'][0]} after "
        f"(1 min; {r['profile_load_avg_1m']} seen by the agent while profiling). "
        f"{m['cpu']} ({m['arch']}, {m['cores']} cores), llama-cpp-python {m['llama_cpp']}, "
        f"threads: {s['threads']}.",
        "",
        f"1. `{r['profile_command']}` ({r['profile_s']} s) measured the host through the agent "
        f'(source: "{r["profile_source"]}") and stored it as `{r["device_profile"]}`'
        + (" in a fresh temporary RAMP_EDGE_HOME" if r["loopback"] else "")
        + "; predictions come from that stored profile the way `ramp-edge budget --device "
        f"{r['device_profile']}` reads it (fit), leave-one-out refits the profile's type speeds "
        "without the recipe's own type, probe is the agent's copy bandwidth x "
        f"{DEFAULT_DECODE_EFFICIENCY} x prior factor.",
        f"2. Each artifact was pushed over SFTP and benched by the agent "
        f"(`pipeline.deploy_to_host`: push, canary, bench), then benched again by the agent in "
        f"later rounds: {s['rounds']} interleaved rounds, pp{s['n_prompt']}/tg{s['n_gen']} x "
        f"{s['reps']} reps each (the profile's own settings; tg = mean over reps, wall clock); "
        f"measured = {s['statistic']} over rounds. {s['elapsed_s']} s in all.",
        "",
        f"Copy bandwidth {r['copy_bandwidth_gb_s']} GB/s; fitted Q4_0 decode bandwidth "
        f"{r['reference_bandwidth_gb_s']} GB/s.",
        "",
        "| type (profile) | MiB read/token | tg t/s | effective GB/s |",
        "|---|---|---|---|",
    ]
    for c in r["calibration"]:
        lines.append(f"| {c['type']} | {c['read_mib']} | {c['tg']} | {c['effective_gb_s']} |")
    lines += [
        "",
        "| recipe | MiB read/token | measured t/s (rounds) | fit t/s (err) "
        "| leave-one-out t/s (err) | probe t/s (err) |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["recipes"]:
        loo = f"{row['pred_loo']} ({row['err_loo_pct']:+.1f}%)" if "pred_loo" in row else "-"
        rounds = ", ".join(f"{x:g}" for x in row["measured_samples"])
        lines.append(
            f"| {row['recipe']} | {row['read_mib']} | {row['measured_tg']} ({rounds}) | "
            f"{row['pred_fit']} ({row['err_fit_pct']:+.1f}%) | {loo} | "
            f"{row['pred_probe']} ({row['err_probe_pct']:+.1f}%) |"
        )
    goal = r["goal_pct"]
    worst, worst_mixed = r["max_abs_err_fit_pct"], r["max_abs_err_fit_pct_mixed"]
    verdict = "met" if worst <= goal else "not met"
    lines += [
        "",
        f"Verdict: largest fit error {worst}% over all rows, {worst_mixed}% over the mixed "
        f"recipes; goal (issue 15: within {goal:g}% on a remote-profiled host): {verdict}.",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
