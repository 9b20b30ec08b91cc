"""The deploy pipeline, top to bottom: one device, one request, one report.

    profile -> budget -> allocate -> export -> quality -> push -> bench + eval -> store

`run_deploy` is the whole request for one device; `deploy_to_host` is its device half (push,
bench, eval through the agent) and `bench_fleet` runs that half on many hosts through
`fleet.group`. The CLI resolves every identity first (device profile id, `Host`, budget text),
so nothing here parses or resolves names again. `--device localhost` runs the same agent as a
remote device would, as a local subprocess (`fleet.local`, no paramiko).
"""

from __future__ import annotations

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
    ARTIFACT_DIR,
    TASK_DIR,
    VENV_DIR,
    Agent,
    AgentError,
    BenchOptions,
    bootstrap,
    build_task_payload,
)
from ramp_edge.device.profiles import LOCALHOST
from ramp_edge.errors import ArtifactError, DependencyError
from ramp_edge.fleet.hosts import Host
from ramp_edge.fleet.transport import PushResult, Transport
from ramp_edge.fsutil import atomic_write_text, sha256_file
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
    n_ctx: int = 2048
    out: str | None = None
    trust_new_host: bool = False
    bootstrap: bool = False
    calibrate: bool = True
    bench_reps: int = 3


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
    from ramp_edge.errors import ConfigError
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.models import resolve
    from ramp_edge.device.profiling import ensure_measured
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
            f"device {request.device!r} needs --host user@addr (or use fleet bench with an inventory)"
        )
    profile = ensure_measured(profile)
    resolved = resolve(request.model)
    source = open_source(resolved)
    say("budget")
    budget_bytes, binding, explanation = choose_budget(request, source, profile)
    say(f"allocate ({request.method}) for {budget_bytes:,} bytes")
    recipe = allocate(
        source,
        parse_budget(f"{budget_bytes}b"),
        request.method,
        policy=request.policy,
        progress=progress,
        calibrate_roles=request.calibrate,
    )
    label = f"{resolved.model_id}-{request.method}-{budget_bytes // 1000}k"
    target = Path(request.out) if request.out else paths.artifacts_dir() / f"{label}.gguf"
    say(f"export {target.name}")
    result = export_model(source, recipe, target, progress=progress)
    recipe.save(target.with_suffix(".recipe.json"))
    say("quality against the reference")
    kld = kl_divergence(target, resolved.path, n_chunks=request.chunks, progress=progress)
    quality = {
        "mean_kld": kld.mean_kld,
        "kld_p99": kld.kld_p99,
        "same_top_p": kld.same_top_p,
        "ppl": kld.ppl_cand,
        "ppl_ref": kld.ppl_ref,
        "chunks": kld.n_chunks,
    }
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
        )
    with Store() as store:
        store_report(store, report)
        store.add_result(
            "quality",
            request.device,
            report.host,
            str(target),
            {"recipe": recipe.method, "bytes": result.plan.size_bytes, **quality},
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
    )


def _bench_failure(err: AgentError, **fields: Any) -> BenchResult:
    return BenchResult.failure(
        status="oom" if err.oom else "error",
        error=str(err),
        peak_rss_bytes=err.detail.get("peak_rss_bytes"),
        **fields,
    )


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
    sha = artifact_sha256 or sha256_file(artifact)
    size = artifact.stat().st_size
    name = conn.name

    def on_event(message: dict[str, Any]) -> None:
        if message.get("type") == "progress":
            status(f"{message.get('phase')} {message.get('done')}/{message.get('total')}")

    agent = Agent(conn, on_event=on_event)
    status("push agent")
    agent.install()
    status("env-check")
    env = agent.env_check()
    if not env.get("ready", {}).get("bench"):
        missing = ", ".join(env.get("missing") or ["llama-cpp-python"])
        if not bootstrap_env:
            raise DependencyError(
                f"{name}: the device lacks {missing} (python {env.get('python')}); rerun with "
                f"--bootstrap to install them into {VENV_DIR}, or: {env.get('install_hint')}"
            )
        status("bootstrap")
        agent = Agent(conn, python=bootstrap(conn, python=agent.python), on_event=on_event)
        env = agent.env_check()
        if not env.get("ready", {}).get("bench"):
            raise DependencyError(f"{name}: still missing after --bootstrap: {env.get('missing')}")
    probe = agent.probe()
    llama = probe.get("llama_cpp") or {}

    def push_progress(done: float, total: float, desc: str) -> None:
        status(f"push {100 * done / total:.0f}%" if total else "push")
        if progress is not None:
            progress(done, total, desc)

    status("push 0%")
    remote_model = f"{ARTIFACT_DIR}/{artifact.name}"
    push = conn.put(artifact, remote_model, progress=push_progress, local_sha256=sha)
    fields = {
        "host": name,
        "device": device,
        "artifact": artifact.name,
        "artifact_sha256": sha,
    }
    status("bench")
    try:
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
            **fields,
        )
    evals: list[EvalResult] = []
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
            )
            evals = [EvalResult.from_agent(t, **fields) for t in data.get("tasks", [])]
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
    )


def store_report(store: Store, report: DeployReport) -> list[int]:
    """Commit a report's bench and eval records to a `ramp_edge.store.Store`; returns row ids.

    The device column is the profile id, or the host name when the host names no profile.
    """
    device = report.device or report.host
    ids = []
    if report.bench is not None:
        ids.append(
            store.add_result("bench", device, report.host, report.artifact, report.bench.to_dict())
        )
    for result in report.evals:
        ids.append(store.add_result("eval", device, report.host, report.artifact, result.to_dict()))
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
) -> FleetResult[DeployReport]:
    """`deploy_to_host` on every inventory host, at most `forks` at once.

    Each host's records are committed to `store` as soon as that host finishes, so a crash or a
    dead host later never loses finished results. Returns a fleet.group.FleetResult whose
    values are DeployReports.
    """
    from ramp_edge.fleet.group import connect_host, run_on_hosts

    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    sha = sha256_file(artifact)
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
        hosts, work, forks=forks, connect=connect_one, on_done=done, on_status=on_status
    )
