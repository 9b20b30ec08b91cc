"""The deploy pipeline, top to bottom: one device, one request, one report.

    profile -> budget -> allocate -> export -> quality -> push -> bench + eval -> store

`run_deploy` is the whole request for one device; `deploy_to_host` is its device half (push,
bench, eval through the agent) and `bench_fleet` runs that half on many hosts through
`fleet.group`. The CLI resolves every identity first (device profile id, `Host`, budget text),
so nothing here parses or resolves names again. `--device localhost` runs the same agent as a
remote device would, as a local subprocess (`fleet.local`, no paramiko).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramp_edge import paths
from ramp_edge.agent_client import (
    TASK_DIR,
    VENV_DIR,
    Agent,
    AgentError,
    BenchOptions,
    bootstrap,
    build_task_payload,
    remote_artifact_path,
)
from ramp_edge.device.profiles import LOCALHOST
from ramp_edge.errors import ArtifactError, DependencyError
from ramp_edge.fleet.hosts import Host
from ramp_edge.fleet.transport import PushResult, Transport
from ramp_edge.fsutil import atomic_write_text, sha256_cached
from ramp_edge.results import BenchResult, EvalResult, utc_now

if TYPE_CHECKING:
    from ramp_edge.allocate.budget import Budget
    from ramp_edge.fleet.group import FleetResult, HostOutcome
    from ramp_edge.store import Store

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]
StatusFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DeployRequest:
    device: str = "localhost"  # a device profile id (canonical: the CLI resolves aliases)
    host: Host | None = None  # None: this machine (only for device localhost)
    model: str = "smollm2-135m"
    budget: Budget | None = None  # None: auto, from the device profile
    method: str = "knapsack"
    policy: str | None = None
    tasks: str | None = "arc_easy,piqa"
    limit: int | None = 50
    chunks: int = 4
    min_tps: float | None = None
    # the goal when memory and latency do not bind: the smallest artifact whose mean KLD
    # against the source stays within this (None: keep the source-size cap)
    max_kld: float | None = 0.05
    search_steps: int = 3  # KLD measurements of the search for the smallest size within max_kld
    compare_presets: int = 2  # llama.cpp presets of equal or larger size in the table
    n_gpu_layers: int | str | None = "auto"
    n_ctx: int = 2048
    out: str | None = None
    trust_new_host: bool = False
    bootstrap: bool = False
    calibrate: bool = True
    bench_reps: int = 3
    # None: as the method implies (on for "measured"); True: GPTQ-encoded artifact
    gptq: bool | None = None


@dataclass(frozen=True, slots=True)
class DeployOutcome:
    request: DeployRequest
    model_id: str
    budget_bytes: int
    budget_binding: str
    budget_explanation: str
    artifact: str
    artifact_bytes: int
    bpw: float
    recipe_method: str
    quality: dict[str, Any]  # KLD / perplexity against the source, measured here
    report: DeployReport | None
    seconds: float
    # rows of the comparison table (ours first, then llama.cpp presets) and the verdict
    comparison: tuple[Mapping[str, Any], ...] = ()
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "request": {
                **asdict(self.request),
                "host": self.request.host.to_dict() if self.request.host else None,
                "budget": str(self.request.budget) if self.request.budget else "auto",
            },
            "model_id": self.model_id,
            "budget": {
                "bytes": self.budget_bytes,
                "binding": self.budget_binding,
                "explanation": self.budget_explanation,
            },
            "artifact": self.artifact,
            "artifact_bytes": self.artifact_bytes,
            "bpw": round(self.bpw, 4),
            "method": self.recipe_method,
            "quality": self.quality,
            "device_report": self.report.to_dict() if self.report is not None else None,
            "seconds": round(self.seconds, 2),
            "comparison": [dict(r) for r in self.comparison],
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class DeployReport:
    """Everything one host produced for one artifact: push, probe, bench, evals."""

    host: str
    device: str | None
    artifact: str
    artifact_sha256: str
    push: PushResult | None
    probe: Mapping[str, Any]
    bench: BenchResult | None
    evals: tuple[EvalResult, ...] = ()
    duration_s: float = 0.0
    finished_at: str = field(default_factory=utc_now)
    # how llama.cpp ran: n_gpu_layers and why, the canary decode (fallback, signals)
    environment: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        statuses = [r.status for r in ([self.bench] if self.bench else []) + list(self.evals)]
        if "oom" in statuses:
            return "oom"
        return "error" if "error" in statuses else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "device": self.device,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "status": self.status,
            "push": self.push.to_dict() if hasattr(self.push, "to_dict") else None,
            "probe": dict(self.probe),
            "bench": self.bench.to_dict() if self.bench else None,
            "evals": [e.to_dict() for e in self.evals],
            "duration_s": round(self.duration_s, 3),
            "finished_at": self.finished_at,
            "environment": dict(self.environment),
        }


def choose_budget(request: DeployRequest, source, profile) -> tuple[int, str, str]:
    """Budget in file bytes, which constraint binds, and why."""
    from ramp_edge.device.budget import compute_budget, geometry_from_specs

    source_bytes = Path(source.path).stat().st_size
    if request.budget is not None:
        b = request.budget
        return b.target_bytes(source.info.n_params), "user", f"budget {b} given"
    result = compute_budget(
        profile,
        source.info,
        geometry_from_specs(source.specs),
        n_ctx=request.n_ctx,
        min_tps=request.min_tps,
        model=source.model.model_id,
    )
    cap = source_bytes + 65536  # our metadata adds a few hundred bytes to a verbatim copy
    if result.budget_bytes >= cap:
        # More bits than the (already quantized) reference itself holds buy nothing.
        return (
            cap,
            "reference",
            f"{result.explanation}; capped at the reference model's own size ({source_bytes:,} B)",
        )
    return result.budget_bytes, result.binding, result.explanation


def run_deploy(
    request: DeployRequest,
    progress: ProgressFn | None = None,
    status: Callable[[str], None] | None = None,
) -> DeployOutcome:
    from ramp_edge.allocate.api import allocate
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.device.profiling import ensure_measured, is_fresh
    from ramp_edge.errors import ConfigError
    from ramp_edge.models import resolve
    from ramp_edge.quant.export import export_model
    from ramp_edge.source import open_source
    from ramp_edge.store import Store

    say = status or (lambda text: logger.info(text))
    start = time.perf_counter()
    # Check every input before any slow step.
    with Store() as store:
        profile = store.profile(request.device)
    if request.host is None and profile.id != LOCALHOST:
        raise ConfigError(
            f"device {request.device!r} needs --host user@addr "
            "(or use fleet bench with an inventory)"
        )
    if request.host is not None and not is_fresh(profile.measured):
        # a device's budget comes from its own measurement: profile it first (seconds)
        from ramp_edge.device.profiling import FAST_OPTIONS, profile_host
        from ramp_edge.fleet.group import connect_host

        say(f"profile {request.host.name} (no fresh measured profile)")
        with connect_host(request.host, trust_new_host=request.trust_new_host) as conn:
            measured = profile_host(
                conn, profile.id, options=FAST_OPTIONS, bootstrap_env=request.bootstrap
            )
        with Store() as store:
            store.save_measured_profile(measured)
            profile = store.profile(request.device)
    elif request.host is not None:
        # Connect and check the device's environment (llama-cpp-python, ...) before any slow
        # step: a device that cannot run the bench fails here in seconds, not after minutes of
        # allocation, export and KLD (issue 16 class 5). profile_host above checks the same.
        from ramp_edge.fleet.group import connect_host

        say(f"env-check on {request.host.name}")
        with connect_host(request.host, trust_new_host=request.trust_new_host) as conn:
            ready_agent(conn, bootstrap_env=request.bootstrap, status=say)
    profile = ensure_measured(profile)
    resolved = resolve(request.model)
    source = open_source(resolved)
    say("budget")
    budget_bytes, binding, explanation = choose_budget(request, source, profile)

    gptq = request.gptq if request.gptq is not None else request.method == "measured"
    calibration = None
    if gptq or request.method == "measured":
        from ramp_edge.features.calibration import calibrate_model

        say("calibration statistics" + (" and Hessians (GPTQ)" if gptq else ""))
        calibration = calibrate_model(resolved, gram=gptq, progress=progress)
    imatrix = dict(calibration.imatrix) if calibration else None
    hessians = (calibration.hessians or None) if calibration else None
    sensitivity = (calibration.sensitivity or None) if calibration else None

    def build(nbytes: int, out: str | None = None) -> tuple[Path, Any, Any, dict[str, Any]]:
        say(f"allocate ({request.method}) for {nbytes:,} bytes")
        recipe = allocate(
            source,
            parse_budget(f"{nbytes}b"),
            request.method,
            policy=request.policy,
            progress=progress,
            calibrate_roles=request.calibrate,
            imatrix=imatrix,
            imatrix_id=calibration.id if calibration else None,
            hessians=hessians,
            sensitivity=sensitivity,
        )
        label = f"{resolved.model_id}-{request.method}-{nbytes // 1000}k"
        target = Path(out) if out else paths.artifacts_dir() / f"{label}.gguf"
        say(f"export {target.name}")
        result = export_model(
            source, recipe, target, imatrix=imatrix, progress=progress, hessians=hessians
        )
        recipe.save(target.with_suffix(".recipe.json"))
        say("quality against the reference")
        return target, result, recipe, _quality(target, resolved.path, request.chunks, progress)

    source_bytes = Path(source.path).stat().st_size
    if binding == "reference" and request.max_kld is not None:
        # Memory and latency do not bind: the goal is the smallest artifact within max_kld.
        found = _smallest_within_kld(
            source, request, build, estimate=lambda n: _estimated_kld(source, request, n), say=say
        )
        if found is not None:
            budget_bytes, built = found
            binding = "quality"
            explanation = (
                f"memory and latency do not bind ({explanation}); goal: the smallest artifact "
                f"with mean KLD <= {request.max_kld} against the source "
                f"({100 * budget_bytes / source_bytes:.0f}% of its {source_bytes:,} B)"
            )
        else:
            built = build(source_bytes)
            explanation += f"; no smaller artifact met KLD <= {request.max_kld}"
        target, result, recipe, quality = built
        if request.out:
            os.replace(target, request.out)
            target = Path(request.out)
    else:
        target, result, recipe, quality = build(budget_bytes, request.out)
    conn_ctx: Transport
    if request.host is None:
        from ramp_edge.fleet.local import LocalConnection

        conn_ctx = LocalConnection()
    else:
        from ramp_edge.fleet.group import connect_host

        conn_ctx = connect_host(request.host, trust_new_host=request.trust_new_host)
    bench_opts = BenchOptions(reps=request.bench_reps)
    with conn_ctx as conn:
        say(f"push + bench + eval on {conn.name}")
        report = deploy_to_host(
            conn,
            target,
            tasks=request.tasks,
            limit=request.limit,
            bench_opts=bench_opts,
            device=request.device,
            bootstrap_env=request.bootstrap,
            on_status=say,
            progress=progress,
            n_gpu_layers=request.n_gpu_layers,
        )
        comparison = [
            _row("ramp-edge " + recipe.method, target, result.plan.size_bytes, quality, report)
        ]
        for preset in _presets_at_or_above(source, result.plan.size_bytes, request.compare_presets):
            say(f"compare: llama.cpp preset {preset}")
            path, size, pq = _export_preset(source, resolved, preset, request.chunks, progress)
            preset_report = deploy_to_host(
                conn,
                path,
                tasks=request.tasks,
                limit=request.limit,
                bench_opts=bench_opts,
                device=request.device,
                on_status=say,
                n_gpu_layers=request.n_gpu_layers,
            )
            comparison.append(_row(preset, path, size, pq, preset_report))
    with Store() as store:
        store_report(store, report)
        store.add_result(
            "quality",
            request.device,
            report.host,
            str(target),
            {"recipe": recipe.method, "bytes": result.plan.size_bytes, **quality},
            artifact_sha256=report.artifact_sha256,
        )
    return DeployOutcome(
        request,
        resolved.model_id,
        budget_bytes,
        binding,
        explanation,
        str(target),
        result.plan.size_bytes,
        result.plan.file_bpw,
        recipe.method,
        quality,
        report,
        time.perf_counter() - start,
        tuple(comparison),
        _verdict(comparison, request.max_kld if binding == "quality" else None),
    )


def _estimated_kld(source: Any, request: DeployRequest, nbytes: int) -> float | None:
    """The error table's KLD estimate for the allocation at `nbytes` (no model run)."""
    from ramp_edge.allocate.api import allocate
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.errors import BudgetError

    try:
        recipe = allocate(
            source, parse_budget(f"{nbytes}b"), "knapsack", calibrate_roles=request.calibrate
        )
    except BudgetError:
        return None
    value = (recipe.notes or {}).get("estimated_error")
    return float(value) if value is not None else None


CLOSE_ENOUGH = 0.9  # a measured KLD in [0.9 goal, goal] ends the search for a smaller size


def _smallest_within_kld(
    source: Any,
    request: DeployRequest,
    build: Callable[[int], tuple[Path, Any, Any, dict[str, Any]]],
    estimate: Callable[[int], float | None],
    say: StatusFn,
) -> tuple[int, tuple[Path, Any, Any, dict[str, Any]]] | None:
    """The smallest size whose measured KLD stays within `request.max_kld`, and its build.

    Each measured step costs an allocation, an export and a KLD run, so the size to try is
    read off the calibrated error table first (its KLD estimate is free), corrected by the
    ratio measured/estimated seen so far; a plain bisection of the bracket is the fallback
    where the estimate does not fall inside it.
    """
    from ramp_edge.device.budget import geometry_from_specs
    from ramp_edge.errors import BudgetError

    goal = float(request.max_kld or 0.0)
    source_bytes = Path(source.path).stat().st_size
    geometry = geometry_from_specs(source.specs)
    # lo: known too lossy (or just above the smallest legal file); hi: known within the goal
    lo = int(1.08 * geometry.weights_bytes(geometry.min_bpw))
    hi = source_bytes
    correction = 1.0  # measured KLD / estimated KLD, learnt from each measurement
    best = None
    for _ in range(max(1, request.search_steps)):
        if hi - lo < 0.02 * source_bytes:
            break  # the bracket is within 2% of the source: nothing worth another run
        mid = _size_for_estimate(estimate, goal / correction, lo, hi)
        if not lo < mid < hi or (hi - mid) < 0.01 * source_bytes:
            mid = (lo + hi) // 2
        try:
            built = build(mid)
        except BudgetError as err:
            say(f"size {mid:,} B: {err}")
            lo = mid
            continue
        kld_value = built[3]["mean_kld"]
        est = (built[2].notes or {}).get("estimated_error")
        if est:
            correction = max(kld_value / float(est), 1e-3)
        say(f"size {mid:,} B: KLD {kld_value:.4f} (goal <= {goal})")
        if kld_value <= goal:
            best, hi = (mid, built), mid
            if kld_value >= CLOSE_ENOUGH * goal:
                break  # within 10% under the goal: a smaller file would cross it
        else:
            lo = mid
    return best


def _size_for_estimate(
    estimate: Callable[[int], float | None], goal: float, lo: int, hi: int, steps: int = 12
) -> int:
    """The smallest size in (lo, hi] whose estimated KLD is <= goal (bisection on bytes)."""
    a, b = lo, hi
    for _ in range(steps):
        mid = (a + b) // 2
        value = estimate(mid)
        if value is not None and value <= goal:
            b = mid
        else:
            a = mid
    return b


def _quality(target: Path, reference: Any, chunks: int, progress: ProgressFn | None) -> dict:
    from ramp_edge.evaluate.perplexity import kl_divergence

    kld = kl_divergence(target, reference, n_chunks=chunks, progress=progress)
    return {
        "mean_kld": kld.mean_kld,
        "kld_p99": kld.kld_p99,
        "same_top_p": kld.same_top_p,
        "ppl": kld.ppl_cand,
        "ppl_ref": kld.ppl_ref,
        "chunks": kld.n_chunks,
    }


# llama.cpp presets a mixed artifact is compared with (no imatrix needed)
COMPARE_PRESETS = ("Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_K_S")


def _presets_at_or_above(source: Any, size_bytes: int, n: int) -> list[str]:
    """The `n` smallest llama.cpp presets whose file is at least `size_bytes`."""
    from ramp_edge import recipe as recipes
    from ramp_edge.errors import ConfigError
    from ramp_edge.quant.export import plan_export

    sized = []
    for name in COMPARE_PRESETS:
        try:
            sized.append((plan_export(source, recipes.build(source, name)).size_bytes, name))
        except ConfigError:
            continue
    return [name for size, name in sorted(sized) if size >= size_bytes][:n]


def _export_preset(
    source: Any, resolved: Any, preset: str, chunks: int, progress: ProgressFn | None
) -> tuple[Path, int, dict]:
    from ramp_edge import recipe as recipes
    from ramp_edge.quant.export import export_model

    target = paths.artifacts_dir() / f"{resolved.model_id}-preset-{preset}.gguf"
    result = export_model(source, recipes.build(source, preset), target, progress=progress)
    return target, result.plan.size_bytes, _quality(target, resolved.path, chunks, progress)


def _row(name: str, path: Path, size: int, quality: Mapping[str, Any], report: Any) -> dict:
    bench = report.bench if report is not None else None
    accs = [e.acc for e in (report.evals if report is not None else ()) if e.status == "ok"]
    return {
        "name": name,
        "artifact": str(path),
        "bytes": size,
        "mean_kld": quality["mean_kld"],
        "ppl": quality["ppl"],
        "tg_tps": bench.tg_tps if bench is not None and bench.ok else None,
        "accuracy": sum(accs) / len(accs) if accs else None,
        "status": report.status if report is not None else "not run",
    }


def _verdict(rows: Sequence[Mapping[str, Any]], max_kld: float | None) -> str:
    """One line: how ours compares with the presets of equal or larger size."""
    if not rows:
        return ""
    ours, presets = rows[0], rows[1:]
    if not presets:
        return (
            f"{ours['name']}: {ours['bytes']:,} B, KLD {ours['mean_kld']:.4f}; no preset to compare"
        )
    beaten = [p for p in presets if ours["mean_kld"] <= p["mean_kld"]]
    smallest = min(presets, key=lambda p: p["bytes"])
    saved = 100 * (1 - ours["bytes"] / smallest["bytes"])
    goal = f" (goal KLD <= {max_kld})" if max_kld is not None else ""
    if len(beaten) == len(presets):
        return (
            f"ramp-edge's mix is {saved:.0f}% smaller than {smallest['name']} and its KLD "
            f"{ours['mean_kld']:.4f} is at or below every larger preset's{goal}"
        )
    others = ", ".join("{} {:.4f}".format(p["name"], p["mean_kld"]) for p in presets)
    return (
        f"ramp-edge's mix is {saved:.0f}% smaller than {smallest['name']}; KLD "
        f"{ours['mean_kld']:.4f} vs {others}{goal}: {len(beaten)} of {len(presets)} matched"
    )


def _bench_failure(err: AgentError, **fields: Any) -> BenchResult:
    return BenchResult.failure(
        status="oom" if err.oom else "error",
        error=str(err),
        peak_rss_bytes=err.detail.get("peak_rss_bytes"),
        signal=err.signal,
        **fields,
    )


def resolve_gpu_layers(
    requested: int | str | None, probe: Mapping[str, Any], artifact: Path, n_ctx: int = 2048
) -> tuple[int, str]:
    """`--n-gpu-layers`: an int as given, or "auto" from the device's memory (budget.py)."""
    if requested not in (None, "auto"):
        n = int(requested)
        gpu = bool(dict(probe.get("llama_cpp") or {}).get("supports_gpu_offload"))
        return n, ("as requested" if gpu or n == 0 else "as requested, but a CPU-only build")
    from ramp_edge.device.budget import auto_gpu_layers
    from ramp_edge.source.gguf_header import read_gguf_tensors

    tensors = read_gguf_tensors(artifact)
    blocks = {t.name.split(".")[1] for t in tensors if t.name.startswith("blk.")}
    # KV cache + compute buffers: a generous flat allowance for small edge contexts
    overhead = 256 << 20
    return auto_gpu_layers(probe, artifact.stat().st_size, len(blocks) + 1, overhead)


def ready_agent(
    conn: Transport,
    *,
    bootstrap_env: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    status: StatusFn | None = None,
) -> Agent:
    """Push the agent and run its environment check; bootstrap the venv when asked.

    Seconds on a reachable device, so deploy runs it before any expensive step.

    Raises:
        DependencyError: the device lacks llama-cpp-python (or psutil) and not `bootstrap_env`.
        RemoteError: the link or the agent failed.
    """
    say = status or (lambda text: None)
    agent = Agent(conn, on_event=on_event)
    say("push agent")
    agent.install()
    say("env-check")
    env = agent.env_check()
    if not env.get("ready", {}).get("bench"):
        missing = ", ".join(env.get("missing") or ["llama-cpp-python"])
        if not bootstrap_env:
            raise DependencyError(
                f"{conn.name}: the device lacks {missing} (python {env.get('python')}); rerun "
                f"with --bootstrap to install them into {VENV_DIR}, or: {env.get('install_hint')}"
            )
        say("bootstrap")
        agent = Agent(conn, python=bootstrap(conn, python=agent.python), on_event=on_event)
        env = agent.env_check()
        if not env.get("ready", {}).get("bench"):
            raise DependencyError(
                f"{conn.name}: still missing after --bootstrap: {env.get('missing')}"
            )
    return agent


def deploy_to_host(
    conn: Transport,
    artifact_path: str | os.PathLike[str],
    tasks: str | Sequence[str] | Mapping[str, Any] | None = None,
    limit: int | None = None,
    bench_opts: BenchOptions | None = None,
    *,
    device: str | None = None,
    bootstrap_env: bool = False,
    artifact_sha256: str | None = None,
    eval_n_ctx: int | None = None,
    on_status: StatusFn | None = None,
    progress: ProgressFn | None = None,
    n_gpu_layers: int | str | None = "auto",
) -> DeployReport:
    """Push an artifact plus the agent to one device, then bench (and eval) it there.

    Args:
        conn: an open Transport (fleet.ssh.Connection or fleet.local.LocalConnection).
        artifact_path: local GGUF.
        tasks: task names ("arc_easy,piqa"), or a payload from `build_task_payload`; None: no eval.
        limit: items per task when `tasks` are names.
        bench_opts: llama-bench style options; defaults pp512/tg128 x 5.
        device: device profile id recorded with the results.
        bootstrap_env: create a venv and pip-install what the agent misses.
        on_status: short status texts for a live view ("push 40%", "bench tg128 3/5").
        progress: push progress callback (bytes done, total, description).
        n_gpu_layers: layers to offload for bench and eval alike (-1 all), or "auto" (all that
            fit the GPU or unified memory; 0 on a CPU-only build); stored with every result.

    A canary decode runs first in a subprocess on the device; when it crashes with CPU extra
    buffer types (ggml's AMX/repack path) bench and eval run without them. A native crash
    during bench or eval is recorded with its signal.

    Returns:
        DeployReport. An out-of-memory or failed benchmark/eval is recorded in the report with
        status "oom"/"error"; a broken link, a failed push or a missing dependency raises.

    Raises:
        RemoteError, ArtifactError, DependencyError.
    """
    start = time.monotonic()
    options = bench_opts or BenchOptions()
    status = on_status or (lambda text: None)
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    sha = artifact_sha256 or sha256_cached(artifact)
    size = artifact.stat().st_size
    name = conn.name

    def on_event(message: dict[str, Any]) -> None:
        if message.get("type") == "progress":
            status(f"{message.get('phase')} {message.get('done')}/{message.get('total')}")

    agent = ready_agent(conn, bootstrap_env=bootstrap_env, on_event=on_event, status=status)
    probe = agent.probe()
    llama = probe.get("llama_cpp") or {}

    def push_progress(done: float, total: float, desc: str) -> None:
        status(f"push {100 * done / total:.0f}%" if total else "push")
        if progress is not None:
            progress(done, total, desc)

    status("push 0%")
    remote_model = remote_artifact_path(artifact.name, sha)
    push = conn.put(artifact, remote_model, progress=push_progress, local_sha256=sha)
    fields = {
        "host": name,
        "device": device,
        "artifact": artifact.name,
        "artifact_sha256": sha,
    }
    ngl, ngl_reason = resolve_gpu_layers(n_gpu_layers, probe, artifact)
    status("canary")
    canary = agent.canary(remote_model, ngl)
    environment = {"n_gpu_layers": ngl, "n_gpu_layers_reason": ngl_reason, "canary": canary}
    if canary.get("fallback"):
        logger.warning("%s: %s", name, canary.get("reason"))
    options = dataclasses.replace(
        options, n_gpu_layers=ngl, extra_bufts=bool(canary.get("extra_bufts", True))
    )
    status("bench")
    try:
        if not canary.get("ok"):
            tries = canary.get("tries", ())
            signal = next((t.get("signal") for t in tries if t.get("signal")), None)
            raise AgentError(
                f"{name}: {canary.get('reason') or 'the canary decode failed'}",
                "crashed" if signal else "canary_failed",
                None,
                {"signal": signal} if signal else {},
            )
        data = agent.bench(remote_model, options)
        bench = BenchResult.from_agent(
            data,
            artifact_bytes=size,
            llama_cpp_version=llama.get("version"),
            system_info=llama.get("system_info"),
            **fields,
        )
    except AgentError as err:
        if err.kind in ("missing_dependency", "no_python", "usage"):
            raise
        logger.warning("%s", err)
        bench = _bench_failure(
            err,
            artifact_bytes=size,
            threads=options.threads or 0,
            n_prompt=options.n_prompt,
            n_gen=options.n_gen,
            reps=options.reps,
            n_gpu_layers=ngl,
            **fields,
        )
    evals: list[EvalResult] = []
    if tasks and not canary.get("ok"):
        payload = dict(tasks) if isinstance(tasks, Mapping) else build_task_payload(tasks, limit)
        evals = [
            EvalResult(
                task=t["name"],
                task_version=int(t["version"]),
                n=len(t["items"]),
                status="error",
                error=str(bench.error),
                n_gpu_layers=ngl,
                signal=bench.signal,
                **fields,
            )
            for t in payload["tasks"]
        ]
        tasks = None
    if tasks:
        payload = dict(tasks) if isinstance(tasks, Mapping) else build_task_payload(tasks, limit)
        text = json.dumps(payload, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        local_tasks = paths.cache_dir("task-items") / f"{digest[:12]}.json"
        if not local_tasks.is_file():
            atomic_write_text(local_tasks, text)
        remote_tasks = f"{TASK_DIR}/{digest[:12]}.json"
        conn.put(local_tasks, remote_tasks, local_sha256=digest)
        status("eval")
        try:
            data = agent.eval(
                remote_model,
                remote_tasks,
                threads=options.threads,
                n_ctx=eval_n_ctx,
                timeout=options.timeout_s,
                n_gpu_layers=ngl,
                extra_bufts=options.extra_bufts,
            )
            evals = [
                EvalResult.from_agent(t, n_gpu_layers=ngl, **fields) for t in data.get("tasks", [])
            ]
        except AgentError as err:
            if err.kind in ("missing_dependency", "missing_scorer", "no_python", "usage"):
                raise
            logger.warning("%s", err)
            evals = [
                EvalResult(
                    task=t["name"],
                    task_version=int(t["version"]),
                    n=len(t["items"]),
                    status="oom" if err.oom else "error",
                    error=str(err),
                    n_gpu_layers=ngl,
                    signal=err.signal,
                    **fields,
                )
                for t in payload["tasks"]
            ]
    status("done")
    return DeployReport(
        host=name,
        device=device,
        artifact=artifact.name,
        artifact_sha256=sha,
        push=push,
        probe=probe,
        bench=bench,
        evals=tuple(evals),
        duration_s=time.monotonic() - start,
        environment=environment,
    )


def store_report(store: Store, report: DeployReport) -> list[int]:
    """Commit a report's bench and eval records to a `ramp_edge.store.Store`; returns row ids.

    The device column is the profile id, or the host name when the host names no profile.
    """
    device = report.device or report.host
    ids = []
    if report.bench is not None:
        ids.append(
            store.add_result(
                "bench",
                device,
                report.host,
                report.artifact,
                report.bench.to_dict(),
                artifact_sha256=report.artifact_sha256,
            )
        )
    for result in report.evals:
        ids.append(
            store.add_result(
                "eval",
                device,
                report.host,
                report.artifact,
                result.to_dict(),
                artifact_sha256=report.artifact_sha256,
            )
        )
    return ids


def bench_fleet(
    hosts: Sequence[Host],
    artifact_path: str | os.PathLike[str],
    *,
    tasks: str | Sequence[str] | None = None,
    limit: int | None = None,
    bench_opts: BenchOptions | None = None,
    forks: int = 5,
    store: Store | None = None,
    connect: Callable[[Host], Transport] | None = None,
    connect_options: Mapping[str, Any] | None = None,
    bootstrap_env: bool = False,
    on_status: Callable[[str, str], None] | None = None,
    on_report: Callable[[DeployReport], None] | None = None,
    deadline_s: float | None = None,
) -> FleetResult[DeployReport]:
    """`deploy_to_host` on every inventory host, at most `forks` at once.

    A host still running `deadline_s` after its connect is stopped and fails (exit 7).

    Each host's records are committed to `store` as soon as that host finishes, so a crash or a
    dead host later never loses finished results. Returns a fleet.group.FleetResult whose
    values are DeployReports.
    """
    from ramp_edge.fleet.group import connect_host, run_on_hosts

    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    sha = sha256_cached(artifact)
    payload = build_task_payload(tasks, limit) if tasks else None
    options = dict(connect_options or {})
    status = on_status or (lambda host, text: None)

    host_of: dict[int, Host] = {}  # id(connection) -> its host; connections are not annotated

    def connect_one(host: Host) -> Transport:
        conn = connect(host) if connect is not None else connect_host(host, **options)
        host_of[id(conn)] = host
        return conn

    def work(conn: Transport) -> DeployReport:
        host = host_of[id(conn)]
        return deploy_to_host(
            conn,
            artifact,
            payload,
            bench_opts=bench_opts,
            device=host.device,
            bootstrap_env=bootstrap_env,
            artifact_sha256=sha,
            on_status=lambda text: status(host.name, text),
        )

    def done(host: Host, outcome: HostOutcome[DeployReport]) -> None:
        if outcome.ok:
            if store is not None:
                store_report(store, outcome.value)
            if on_report is not None:
                on_report(outcome.value)

    return run_on_hosts(
        hosts,
        work,
        forks=forks,
        connect=connect_one,
        on_done=done,
        on_status=on_status,
        deadline_s=deadline_s,
    )
