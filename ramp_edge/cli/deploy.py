"""`ramp-edge deploy --device NAME`: the whole pipeline for one device, one report."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, human_bytes, json_option, method_option


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
    out,
    trust_new_host,
    bootstrap,
    calibrate,
    as_json,
) -> None:
    """Budget, allocate, export, push, benchmark and evaluate MODEL on DEVICE.

    profile -> budget -> allocate -> export -> push -> bench + eval -> report.
    With --device localhost everything runs here, without SSH; results are kept
    in the results database (ramp-edge results).

    \b
    Examples:
      ramp-edge deploy --device localhost
      ramp-edge deploy --device raspberry-pi-5-8gb --host pi@pi5.local --budget auto --min-tps 20
    """
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.cli._common import resolve_device
    from ramp_edge.fleet.hosts import parse_host
    from ramp_edge.pipeline import DeployRequest, run_deploy
    from ramp_edge.ui import err_console, out_console, progress

    device = resolve_device(device)
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
        out=out,
        trust_new_host=trust_new_host,
        bootstrap=bootstrap,
        calibrate=calibrate,
    )
    with progress("Deploying") as bar:
        outcome = run_deploy(
            request,
            progress=bar,
            status=lambda text: err_console.print(f"[dim]· {text}") if not as_json else None,
        )
    if as_json:
        emit_json(outcome.to_dict())
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
    table.add_row("time", f"{outcome.seconds:.1f} s")
    out_console.print(table)
