"""`ramp-edge eval compare CANDIDATE --reference REF`: how much quality a quantization keeps."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, json_option


@click.command("compare")
@click.argument("candidate")
@click.option("--reference", required=True, help="Reference model (built-in name or GGUF).")
@click.option(
    "--tasks",
    "task_spec",
    default="arc_easy,arc_challenge,piqa,hellaswag,winogrande,boolq",
    show_default=True,
    help="Comma-separated task names, or 'all'.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N items per task.")
@click.option(
    "--chunks",
    "n_chunks",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="KLD/perplexity windows (0 skips KLD).",
)
@json_option
def compare(
    candidate: str, reference: str, task_spec: str, limit: int | None, n_chunks: int, as_json: bool
) -> None:
    """Per-task accuracy of CANDIDATE and REFERENCE, their ratio, KLD and perplexity.

    \b
    Example:
      ramp-edge eval compare smol-q4_0.gguf --reference smollm2-135m --limit 200
    """
    from ramp_edge.cli.eval import gguf_path
    from ramp_edge.evaluate.compare import compare as run_compare
    from ramp_edge.ui import out_console, progress

    cand, ref = gguf_path(candidate), gguf_path(reference)
    with progress("Comparing") as bar:
        report = run_compare(cand, ref, task_spec, limit, n_chunks or None, bar)
    if as_json:
        emit_json(report.to_dict())
        return
    from rich.table import Table

    table = Table(title=f"Retention: {cand.name} vs {ref.name}")
    for col in ("task", "n", "reference", "candidate", "retention"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for t in report.tasks:
        norm = t.acc_norm_ref is not None
        r = t.acc_norm_ref if norm else t.acc_ref
        c = t.acc_norm_cand if norm else t.acc_cand
        table.add_row(
            t.task + (" (acc_norm)" if norm else " (acc)"),
            str(t.n),
            f"{100 * r:.1f}",
            f"{100 * c:.1f}",
            f"{100 * t.retention:.1f}%",
        )
    table.add_row("[bold]mean", "", "", "", f"[bold]{100 * report.mean_retention:.1f}%")
    if report.kld:
        k = report.kld
        table.add_row(
            "PPL ref / cand",
            "",
            f"{k.ppl_ref:.3f}",
            f"{k.ppl_cand:.3f}",
            f"{100 / k.ppl_ratio:.1f}%",
        )
        table.add_row("mean KLD", "", "", f"{k.mean_kld:.4f}", f"top-1 {100 * k.same_top_p:.1f}%")
    out_console.print(table)
