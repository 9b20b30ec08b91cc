"""`ramp-edge deploy --device NAME`: the whole pipeline for one device, one report."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, gptq_option, human_bytes, json_option, method_option


@click.command()
@click.option(
    "--device", default="localhost", show_default=True, help="Device profile (ramp-edge devices)."
)
@click.option("--host", help="user@addr[:port] of the device (SSH); not needed for localhost.")
@click.option(
    "--model", "model_ref", default="smollm2-135m", show_default=True, help="Model reference."
)
@click.option(
    "--budget",
    default="auto",
    show_default=True,
    help="auto (from the device profile), bits per weight (4.5bpw) or bytes (300MB).",
)
@method_option
@click.option(
    "--policy", type=click.Path(exists=True, dir_okay=False), help="SAC policy for --method sac."
)
@click.option(
    "--tasks",
    default="arc_easy,piqa",
    show_default=True,
    help="Commonsense tasks the agent scores on the device ('' for none).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Items per task."
)
@click.option(
    "--chunks",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="512-token windows for KLD/perplexity against the reference.",
)
@click.option("--min-tps", type=float, help="Generation speed the budget must allow (auto budget).")
@click.option(
    "--max-kld",
    type=float,
    default=0.05,
    show_default=True,
    help="When memory and speed do not bind: the smallest artifact whose mean KLD against the "
    "source stays within this (0 or negative: keep the source-size cap).",
)
@click.option(
    "--compare",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="llama.cpp presets of equal or larger size benchmarked beside the artifact.",
)
@click.option(
    "--n-gpu-layers",
    default="auto",
    show_default=True,
    help="Layers offloaded to the GPU for bench and eval alike: auto (all that fit the GPU or "
    "unified memory; 0 on a CPU-only build), -1 (all) or a count.",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Where to keep the GGUF.")
@click.option("--trust-new-host", is_flag=True, help="Accept and remember an unknown SSH host key.")
@click.option(
    "--bootstrap",
    is_flag=True,
    help="Create a venv on the device and install what the agent needs.",
)
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    show_default=True,
    help="Calibrate the allocator with real KLD probes (cached after the first run).",
)
@gptq_option
@json_option
def deploy(
    device,
    host,
    model_ref,
    budget,
    method,
    policy,
    tasks,
    limit,
    chunks,
    min_tps,
    max_kld,
    compare,
    n_gpu_layers,
    out,
    trust_new_host,
    bootstrap,
    calibrate,
    gptq,
    as_json,
) -> None:
    """Budget, allocate, export, push, benchmark and evaluate MODEL on DEVICE.

    profile -> budget -> allocate -> export -> push -> bench + eval -> report.
    With --device localhost everything runs here, without SSH; results are kept
    in the results database (ramp-edge results).

    \b
    Examples:
      ramp-edge deploy --device localhost
      ramp-edge deploy --device localhost --gptq --max-kld 0.03
      ramp-edge deploy --device raspberry-pi-5-8gb --host pi@pi5.local --budget auto --min-tps 20
    """
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.cli._common import resolve_device
    from ramp_edge.fleet.hosts import parse_host
    from ramp_edge.pipeline import DeployRequest, run_deploy
    from ramp_edge.ui import err_console, out_console, progress

    device = resolve_device(device)
    _check_early(tasks, out, min_tps)
    if n_gpu_layers != "auto":
        try:
            n_gpu_layers = int(n_gpu_layers)
        except ValueError:
            raise click.BadParameter(
                "auto, -1 or a layer count", param_hint="--n-gpu-layers"
            ) from None
    request = DeployRequest(
        device=device,
        host=parse_host(host, device=device, name=device) if host else None,
        model=model_ref,
        budget=None if budget == "auto" else parse_budget(budget),
        method=method,
        policy=policy,
        tasks=tasks or None,
        limit=limit,
        chunks=chunks,
        min_tps=min_tps,
        max_kld=max_kld if max_kld and max_kld > 0 else None,
        compare_presets=compare,
        n_gpu_layers=n_gpu_layers,
        out=out,
        trust_new_host=trust_new_host,
        bootstrap=bootstrap,
        calibrate=calibrate,
        gptq=gptq,
    )
    with progress("Deploying") as bar:
        outcome = run_deploy(
            request,
            progress=bar,
            status=lambda text: err_console.print(f"[dim]· {text}") if not as_json else None,
        )
    failed = outcome.report is not None and outcome.report.status != "ok"
    if as_json:
        emit_json(outcome.to_dict())
        if failed:
            raise SystemExit(1)
        return
    from rich.table import Table

    r = outcome.report
    table = Table(title=f"ramp-edge deploy · {outcome.model_id} on {device}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row(
        "budget",
        f"{human_bytes(outcome.budget_bytes)} ({outcome.budget_binding}): "
        f"{outcome.budget_explanation}",
    )
    table.add_row(
        "artifact",
        f"{outcome.artifact} · {human_bytes(outcome.artifact_bytes)} · "
        f"{outcome.bpw:.2f} bpw · {outcome.recipe_method}",
    )
    q = outcome.quality
    table.add_row(
        "quality",
        f"KLD {q['mean_kld']:.4f} (p99 {q['kld_p99']:.3f}) · same top-1 "
        f"{100 * q['same_top_p']:.1f}% · PPL {q['ppl']:.3f} vs {q['ppl_ref']:.3f} reference",
    )
    if r is not None and r.bench is not None:
        b = r.bench
        if b.status == "ok":
            table.add_row(
                "speed",
                f"pp{b.n_prompt} {b.pp_tps or 0:.1f} t/s · tg{b.n_gen} {b.tg_tps or 0:.1f} t/s"
                f" · load {b.load_time_s or 0:.2f} s · peak RSS "
                f"{human_bytes(b.peak_rss_bytes or 0)}",
            )
        else:
            table.add_row("speed", f"[red]{b.status}: {b.error}")
    for e in r.evals if r is not None else ():
        if e.status == "ok":
            norm = f" · acc_norm {100 * e.acc_norm:.1f}%" if e.acc_norm is not None else ""
            table.add_row(e.task, f"acc {100 * e.acc:.1f}% (n={e.n}){norm}")
        else:
            table.add_row(e.task, f"[red]{e.status}: {e.error}")
    env = dict(r.environment) if r is not None else {}
    if env:
        canary = dict(env.get("canary") or {})
        table.add_row(
            "runs on",
            f"n_gpu_layers {env.get('n_gpu_layers')} ({env.get('n_gpu_layers_reason')})"
            + (f" · {canary['reason']}" if canary.get("reason") else ""),
        )
    table.add_row("time", f"{outcome.seconds:.1f} s")
    out_console.print(table)
    if outcome.comparison:
        cmp = Table(
            title=f"{outcome.model_id}: ramp-edge vs llama.cpp presets of equal or larger size"
        )
        for col in ("artifact", "bytes", "KLD", "PPL", "tg t/s", "accuracy"):
            cmp.add_column(col, justify="left" if col == "artifact" else "right")
        for row in outcome.comparison:
            cmp.add_row(
                row["name"],
                f"{row['bytes']:,}",
                f"{row['mean_kld']:.4f}",
                f"{row['ppl']:.3f}",
                "-" if row["tg_tps"] is None else f"{row['tg_tps']:.1f}",
                "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%",
            )
        out_console.print(cmp)
    if outcome.verdict:
        out_console.print(f"verdict: {outcome.verdict}")
    if failed:
        err_console.print(
            f"[red]the device run failed ({outcome.report.status}); recorded in ramp-edge results"
        )
        raise SystemExit(1)


def _check_early(tasks: str | None, out: str | None, min_tps: float | None) -> None:
    """Arguments that used to fail only after export and KLD (minutes): ConfigError at once."""
    import math
    import os
    from pathlib import Path

    from ramp_edge.cli.fleet import check_tasks
    from ramp_edge.errors import ConfigError

    if tasks:
        check_tasks(tasks)
    if out:
        target = Path(out)
        parent = target.parent if str(target.parent) else Path(".")
        if target.is_dir():
            raise ConfigError(f"--out {out}: is a directory; give a file name such as model.gguf")
        if not parent.is_dir():
            raise ConfigError(f"--out {out}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"--out {out}: directory {parent} is not writable")
    if min_tps is not None and not (math.isfinite(min_tps) and min_tps > 0):
        raise ConfigError(f"--min-tps must be a positive number, got {min_tps}")
