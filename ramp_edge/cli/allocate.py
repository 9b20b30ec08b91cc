"""`ramp-edge allocate MODEL --budget B`: choose every tensor's quant type under a budget."""

from __future__ import annotations

from collections import Counter, defaultdict

import click

from ramp_edge.cli._common import (
    calibrate_option,
    emit_json,
    gptq_option,
    human_bytes,
    json_option,
    method_option,
    open_model,
    ray_address_option,
)


class PositiveFinite(click.ParamType):
    """A float > 0 that is neither inf nor nan (click's float accepts both)."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} must be a positive, finite number", param, ctx)
        return number


@click.command()
@click.argument("model")
@click.option("--budget", help="Size budget: bits per weight (4.6bpw) or bytes (95MB, 90MiB).")
@click.option(
    "--max-ms-per-token",
    type=PositiveFinite(),
    help="Latency budget instead: predicted generation ms/token on --device.",
)
@click.option(
    "--device",
    default="localhost",
    show_default=True,
    help="Device whose per-type speeds price the latency budget.",
)
@method_option
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy .zip for methods sac and predicted (default: the shipped policy, knapsack "
    "demonstrations on SmolLM2-135M and Gemma-3-270M). Both measure nothing on MODEL: weight "
    "and activation statistics only (--json: target_measurements 0, features_seconds, ...). "
    "predicted = the policy's prior alone (knapsack over its predicted errors); zero shot on a "
    "held-out family it beat sac (bench/transfer.md).",
)
@click.option(
    "--imatrix",
    type=click.Path(exists=True, dir_okay=False),
    help="Importance matrix weighting the error measurements.",
)
@click.option(
    "--types",
    "types_csv",
    help="Candidate types, comma-separated (an allow-list for older llama.cpp builds), "
    "e.g. Q8_0,Q6_K,Q4_K,Q4_0,Q3_K. Default: every type llama.cpp's CPU backend runs.",
)
@click.option(
    "--max-evals",
    type=click.IntRange(1, 10_000),
    default=120,
    show_default=True,
    help="Method measured: model evaluations the search may spend (cached, resumable).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the recipe JSON here.")
@click.option(
    "--tensor-type-file",
    type=click.Path(dir_okay=False),
    help="Also write llama-quantize's --tensor-type-file.",
)
@gptq_option
@ray_address_option
@calibrate_option
@json_option
def allocate(
    model: str,
    budget: str | None,
    max_ms_per_token: float | None,
    device: str,
    method: str,
    policy: str | None,
    imatrix: str | None,
    types_csv: str | None,
    max_evals: int,
    out: str | None,
    tensor_type_file: str | None,
    calibrate: bool,
    ray_address: str | None,
    gptq: bool | None,
    as_json: bool,
) -> None:
    """Allocate a quant type to every tensor of MODEL so the GGUF fits BUDGET.

    The file size that counts is the exported GGUF's, metadata included; the
    result is at or under the budget (within 0.5% when types allow).

    \b
    Examples:
      ramp-edge allocate smollm2-135m --budget 4.6bpw --out recipe.json
      ramp-edge allocate smollm2-135m --budget 80MB --method predicted --json
      ramp-edge allocate smollm2-135m --budget 4.4bpw --method measured --json
      ramp-edge allocate smollm2-135m --budget 80MB --method measured --no-gptq --imatrix m.gguf
      ramp-edge allocate smollm2-135m --max-ms-per-token 12 --device raspberry-pi-5-8gb
      ramp-edge allocate smollm2-135m --budget 4.6bpw --ray-address auto
      ramp-edge export smollm2-135m --recipe recipe.json --out smol-mix.gguf
    """
    from ramp_edge.allocate.api import allocate as run_allocate
    from ramp_edge.allocate.api import check_feasible, check_types
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.allocate.search import SearchSettings
    from ramp_edge.cli.export import load_imatrix
    from ramp_edge.quant.export import plan_export
    from ramp_edge.quant.presets import category, layer_index
    from ramp_edge.ui import out_console, progress

    if (budget is None) == (max_ms_per_token is None):
        raise click.UsageError("give exactly one of --budget and --max-ms-per-token")
    if ray_address:
        from ramp_edge.distributed import require_ray

        require_ray()
        if max_ms_per_token is not None:
            raise click.UsageError("--ray-address works with --budget, not --max-ms-per-token")
    types = check_types(tuple(t for t in (types_csv or "").split(",") if t.strip()) or None)
    b = parse_budget(budget) if budget is not None else None
    source = open_model(model)
    if max_ms_per_token is not None:
        from ramp_edge.allocate.api import allocate_for_latency
        from ramp_edge.device.budget import latency_model
        from ramp_edge.store import Store

        latency = latency_model(Store().profile(device))
        with progress("Allocating") as bar:
            recipe = allocate_for_latency(
                source,
                latency,
                max_ms_per_token,
                "greedy" if method == "greedy" else "knapsack",
                bar,
                calibrate,
            )
        budget = f"{max_ms_per_token}ms/token"
        b = None
    else:
        assert b is not None
        check_feasible(source, b, types)  # before any calibration or measurement
        imat, imatrix_id, hessians, sensitivity = load_imatrix(imatrix), imatrix, None, None
        if gptq is None:
            gptq = method == "measured"
        if gptq or (method == "measured" and imat is None):
            # The measured search quantizes what it measures: with the model's own calibration
            # statistics (cached), unless an imatrix file is given.
            from ramp_edge.features.calibration import calibrate_model

            with progress("Calibration statistics") as bar:
                calibration = calibrate_model(source.model, gram=gptq, progress=bar)
            hessians = calibration.hessians or None
            sensitivity = calibration.sensitivity or None
            if imat is None:
                imat, imatrix_id = dict(calibration.imatrix), calibration.id
        with progress("Allocating") as bar:
            recipe = run_allocate(
                source,
                b,
                method,
                policy=policy,
                imatrix=imat,
                imatrix_id=imatrix_id,
                hessians=hessians,
                sensitivity=sensitivity,
                progress=bar,
                calibrate_roles=calibrate,
                types=types,
                search=SearchSettings(max_evals=max_evals),
                ray_address=ray_address,
            )
    plan = plan_export(source, recipe)
    if out:
        recipe.save(out)
    if tensor_type_file:
        recipe.save_tensor_type_file(tensor_type_file)
    target = b.target_bytes(source.info.n_params) if b else None
    summary = {
        "model": source.model.model_id,
        "method": recipe.method,
        "budget": budget,
        "target_bytes": target,
        "predicted_bytes": plan.size_bytes,
        "predicted_ms_per_token": recipe.notes.get("predicted_ms_per_token"),
        "bpw": round(plan.file_bpw, 4),
        "types": dict(recipe.type_counts()),
        "evaluations": recipe.notes.get("evaluations", 0),
        "encoding": recipe.encoding,
        # how the error table became KLD units: fisher | role-probes | relative (table methods)
        "error_scale": recipe.notes.get("error_scale"),
        # method sac (measurement-free): what it computed and how much the repair changed
        **{
            k: recipe.notes[k]
            for k in (
                "target_measurements",
                "features_seconds",
                "policy_seconds",
                "repair_changed",
            )
            if k in recipe.notes
        },
        "recipe": recipe.to_dict(),
        "out": out,
    }
    if as_json:
        emit_json(summary)
        return
    from rich.table import Table

    by_role: dict[str, Counter[str]] = defaultdict(Counter)
    depth: dict[str, Counter[str]] = defaultdict(Counter)
    n_layer = max(1, source.info.n_layer)
    for t in plan.tensors:
        if t.qtype == "F32":
            continue
        by_role[category(t.name)][t.qtype] += 1
        li = layer_index(t.name)
        band = (
            "-"
            if li < 0
            else (
                "first third"
                if li < n_layer / 3
                else "middle third"
                if li < 2 * n_layer / 3
                else "last third"
            )
        )
        depth[band][t.qtype] += 1
    table = Table(title=f"{source.model.model_id} · {method} · budget {budget}")
    table.add_column("role / depth")
    table.add_column("types")
    for key, counts in list(by_role.items()) + list(depth.items()):
        table.add_row(key, ", ".join(f"{q}×{n}" for q, n in counts.most_common()))
    out_console.print(table)
    out_console.print(
        f"predicted {plan.size_bytes:,} bytes ({human_bytes(plan.size_bytes)}), "
        f"{plan.file_bpw:.3f} bpw, budget {budget}" + (f"; recipe written to {out}" if out else "")
    )
