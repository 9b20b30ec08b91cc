"""`ramp-edge export MODEL --recipe R --out F.gguf`: write a mixed-precision GGUF."""

from __future__ import annotations

from pathlib import Path

import click

from ramp_edge.cli._common import emit_json, gptq_option, human_bytes, json_option, open_model


def load_imatrix(path: str | None):
    if not path:
        return None
    from ramp_edge.features.imatrix import read_imatrix

    return read_imatrix(path)


@click.command()
@click.argument("model")
@click.option(
    "--recipe",
    "recipe_spec",
    required=True,
    help="Preset (Q4_K_M, Q4_0, ...), uniform:TYPE, or a recipe .json file.",
)
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Output .gguf path.")
@click.option(
    "--imatrix",
    type=click.Path(exists=True, dir_okay=False),
    help="llama.cpp importance matrix (imatrix GGUF) to guide quantization.",
)
@click.option(
    "--fold/--no-fold",
    default=False,
    show_default=True,
    help="Scale Folding: migrate activation outliers into the weights first.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show each tensor's type and the exact file size; write nothing.",
)
@click.option(
    "--tensor-type-file",
    type=click.Path(dir_okay=False),
    help="Also write llama-quantize's --tensor-type-file for this recipe.",
)
@click.option(
    "--tokenizer-from",
    type=click.Path(exists=True, dir_okay=False),
    help="For a Hugging Face directory: take the tokenizer from this GGUF of the same model.",
)
@gptq_option
@json_option
def export(
    model: str,
    recipe_spec: str,
    out: str | None,
    imatrix: str | None,
    fold: bool,
    dry_run: bool,
    tensor_type_file: str | None,
    tokenizer_from: str | None,
    gptq: bool | None,
    as_json: bool,
) -> None:
    """Quantize MODEL per a recipe and write a standard GGUF that llama.cpp runs.

    The file size is predicted to the byte before anything is written; the
    output appears atomically (written as a temporary file, then renamed).

    \b
    Examples:
      ramp-edge export smollm2-135m --recipe Q4_K_M --dry-run --json
      ramp-edge export smollm2-135m --recipe uniform:Q4_0 --out smol-q4_0.gguf
      ramp-edge export smollm2-135m --recipe recipe.json --out smol-mix.gguf
      ramp-edge export smollm2-135m --recipe IQ4_NL --gptq --out smol-iq4nl-gptq.gguf
      ramp-edge export ./my-llama-hf --recipe Q4_K_M --out my-llama-q4km.gguf
    """
    from ramp_edge import recipe as recipes
    from ramp_edge.errors import ConfigError
    from ramp_edge.quant.export import export_model, plan_export
    from ramp_edge.ui import out_console, progress

    if not dry_run and not out:
        raise click.UsageError("--out is required unless --dry-run is given")
    source = open_model(model, tokenizer_from)
    imat = load_imatrix(imatrix)
    recipe = recipes.build(source, recipe_spec, has_imatrix=imat is not None)
    if out and Path(out).suffix != ".gguf":
        raise ConfigError(f"output {out} must end in .gguf")
    overrides = None
    if fold:
        from ramp_edge.errors import require

        require("torch", "torch")
        from ramp_edge.features.folding import fold_for_export
        from ramp_edge.features.stats import collect_stats

        with progress("Scale Folding") as bar:
            folded = fold_for_export(
                source, collect_stats(source.model, progress=bar), recipe.types, progress=bar
            )
        overrides = dict(folded.tensors)
        if imat is not None:  # the folded weights see rescaled activations
            imat = folded.adjust_imatrix(imat)
    if gptq is None:
        gptq = recipe.encoding == "gptq"
    hessians = None
    if gptq and not dry_run:
        if fold:
            raise ConfigError("--gptq and --fold cannot be combined yet; choose one")
        from ramp_edge.features.calibration import calibrate_model

        with progress("Calibration statistics") as bar:
            calibration = calibrate_model(source.model, progress=bar, fisher=False)
        hessians = calibration.hessians
        if imat is None:
            imat = dict(calibration.imatrix)
    if tensor_type_file:
        recipe.save_tensor_type_file(tensor_type_file)
    if dry_run:
        plan = plan_export(source, recipe, overrides)
        if as_json:
            emit_json(plan.to_dict())
            return
        _print_plan(plan, out_console)
        return
    assert out is not None
    with progress("Exporting") as bar:
        result = export_model(
            source,
            recipe,
            out,
            imatrix=imat,
            overrides=overrides,
            progress=bar,
            hessians=hessians,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    _print_plan(result.plan, out_console)
    out_console.print(
        f"wrote {result.path} ({result.plan.size_bytes:,} bytes) in {result.seconds:.1f} s"
    )


def _print_plan(plan, console) -> None:
    from rich.table import Table

    table = Table(title=f"{plan.model_id} · {plan.method}")
    table.add_column("type")
    table.add_column("tensors", justify="right")
    table.add_column("params", justify="right")
    table.add_column("bytes", justify="right")
    by_type: dict[str, list[int]] = {}
    for t in plan.tensors:
        acc = by_type.setdefault(t.qtype, [0, 0, 0])
        acc[0] += 1
        acc[1] += t.n_params
        acc[2] += t.nbytes
    for qtype, (n, params, nbytes) in sorted(by_type.items(), key=lambda kv: -kv[1][2]):
        table.add_row(qtype, str(n), f"{params:,}", f"{nbytes:,}")
    table.add_row(
        "[bold]file",
        "",
        f"{plan.n_params:,}",
        f"[bold]{plan.size_bytes:,} ({human_bytes(plan.size_bytes)}, {plan.bpw:.3f} bpw)",
    )
    console.print(table)
