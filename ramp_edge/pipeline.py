"""The main job: profile -> budget -> allocate -> export -> push -> bench + eval -> report.

`--device localhost` runs the same agent as a remote device would, as a local subprocess, so
numbers from this machine and from a Raspberry Pi are produced by the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge import paths

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]


@dataclass(frozen=True, slots=True)
class DeployRequest:
    device: str = "localhost"
    host: str | None = None  # user@addr[:port]; None = local (device localhost) or inventory-less
    model: str = "smollm2-135m"
    budget: str = "auto"  # auto | 4.5bpw | 300MB
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
    report: Any  # bench.harness.DeployReport
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "request": asdict(self.request),
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


def parse_host(text: str) -> tuple[str | None, str, int | None]:
    """`user@addr[:port]` -> (user, addr, port)."""
    user, _, rest = text.rpartition("@")
    addr, _, port = rest.partition(":")
    return (user or None, addr, int(port) if port.isdigit() else None)


def choose_budget(request: DeployRequest, source, profile) -> tuple[int, str, str]:
    """Budget in file bytes, which constraint binds, and why."""
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.budget import compute_budget, geometry_from_specs

    source_bytes = Path(source.path).stat().st_size
    if request.budget != "auto":
        b = parse_budget(request.budget)
        return b.target_bytes(source.info.n_params), "user", f"budget {request.budget} given"
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
    from ramp_edge.bench.harness import BenchOptions, deploy_to_host, store_report
    from ramp_edge.errors import ConfigError
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.models import resolve
    from ramp_edge.profiling import ensure_measured
    from ramp_edge.quant.export import export_model
    from ramp_edge.source import open_source
    from ramp_edge.store import Store

    say = status or (lambda text: logger.info(text))
    start = time.perf_counter()
    # Check every input before any slow step.
    with Store() as store:
        profile = store.profile(request.device)
    if request.host is None and request.device != "localhost":
        raise ConfigError(
            f"device {request.device!r} needs --host user@addr (or use fleet bench with an inventory)"
        )
    if request.budget != "auto":
        parse_budget(request.budget)
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
    if request.host is None:
        from ramp_edge.fleet.ssh import LocalConnection

        conn_ctx = LocalConnection()
    else:
        from ramp_edge.fleet.ssh import Connection

        user, addr, port = parse_host(request.host)
        conn_ctx = Connection(
            addr, user=user, port=port, name=request.device, trust_new_host=request.trust_new_host
        )
    bench_opts = BenchOptions(reps=request.bench_reps)
    with conn_ctx as conn:
        say(f"push + bench + eval on {getattr(conn, 'name', request.device)}")
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
            getattr(report, "host", request.device),
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
