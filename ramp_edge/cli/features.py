"""`ramp-edge features MODEL`: the 11-dim layer embedding of every quantizable tensor."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, json_option

_SHORT = {
    "act_log_mean_abs": "a.mean",
    "act_outlier_ratio": "a.outl",
    "act_kurtosis": "a.kurt",
    "w_log_std": "w.std",
    "w_kurtosis": "w.kurt",
    "w_max_over_std": "w.max",
    "w_q4_error": "w.q4err",
    "rel_depth": "depth",
    "role_code": "role",
    "log_fan_in": "fan_in",
    "log_rel_size": "size",
}


@click.command("features")
@click.argument("model")
@click.option(
    "--data",
    default="wikitext2-valid",
    show_default=True,
    help="Calibration text: a shipped set or a UTF-8 text file.",
)
@click.option(
    "--n-seq",
    default=16,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Calibration windows.",
)
@click.option(
    "--seq-len",
    default=512,
    show_default=True,
    type=click.IntRange(8, 32768),
    help="Tokens per window.",
)
@click.option(
    "--imatrix",
    "imatrix_out",
    type=click.Path(dir_okay=False),
    help="Also write the llama.cpp importance matrix (imatrix GGUF) to this path.",
)
@click.option("--no-cache", is_flag=True, help="Recompute the calibration statistics.")
@json_option
def features(
    model: str,
    data: str,
    n_seq: int,
    seq_len: int,
    imatrix_out: str | None,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Compute the 11-dimensional embedding the policy sees for each tensor of MODEL.

    Runs calibration text through the model in torch (cached per model, data and
    settings), then derives per tensor: activation statistics (log mean |x|,
    outlier ratio, kurtosis), weight properties (log std, kurtosis, max/std,
    Q4_0 error) and structure (depth, role, fan-in, size), normalised per model.
    Needs the torch extra: pip install 'ramp-edge[torch]'.

    \b
    Example:
      ramp-edge features smollm2-135m --json
      ramp-edge features model.gguf --n-seq 32 --imatrix model.imatrix.gguf
    """
    from ramp_edge import schema
    from ramp_edge.errors import require
    from ramp_edge.features.embed import FEATURE_NAMES, compute_features
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source
    from ramp_edge.ui import out_console, progress

    resolved = resolve(model)
    source = open_source(resolved)
    require("torch", "torch")
    require("transformers", "torch")
    from ramp_edge.features.stats import collect_stats

    with progress("Calibration") as bar:
        stats = collect_stats(
            resolved, data=data, n_seq=n_seq, seq_len=seq_len, use_cache=not no_cache, progress=bar
        )
    with progress("Features") as bar:
        result = compute_features(source, stats, progress=bar)
    if imatrix_out:
        from ramp_edge.features.imatrix import write_imatrix

        names = [s.name for s in source.specs]
        write_imatrix(imatrix_out, stats, names=names)
    if as_json:
        emit_json(
            {
                "schema": "ramp-edge/features",
                "schema_version": 1,
                "provenance": schema.provenance(),
                "calibration": {
                    "data": stats.data,
                    "n_seq": stats.n_seq,
                    "seq_len": stats.seq_len,
                    "n_tokens": stats.n_tokens,
                },
                "imatrix": imatrix_out,
                **result.to_dict(),
            }
        )
        return
    from rich.table import Table

    table = Table(
        title=f"{resolved.model_id}: {len(result.tensors)} tensors x {len(FEATURE_NAMES)} "
        f"features ({stats.n_tokens:,} calibration tokens)"
    )
    table.add_column("tensor", no_wrap=True)
    for name in FEATURE_NAMES:
        table.add_column(_SHORT[name], justify="right", no_wrap=True)
    for t in result.tensors:
        table.add_row(t.name, *(f"{v:.2f}" for v in t.values))
    console = out_console
    if not console.is_terminal:  # piped: do not squeeze 12 columns into 80 characters
        from rich.console import Console

        console = Console(width=160)
    console.print(table)
    if imatrix_out:
        out_console.print(f"wrote {imatrix_out}")
