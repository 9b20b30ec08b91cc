"""`ramp-edge deploy --device NAME`: budget -> allocate -> export -> measure -> report."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, human_bytes, json_option


@click.command()
@click.option("--device", default="localhost", show_default=True, help="Device profile name.")
@click.option("--model", "model_ref", default="smollm2-135m", show_default=True, help="Model reference.")
@click.option("--recipe", "recipe_spec", default="Q4_K_M", show_default=True,
              help="Preset, uniform:TYPE or recipe .json to deploy.")
@click.option("--chunks", "n_chunks", default=4, show_default=True,
              help="Perplexity/KLD windows of 512 tokens (more = slower, tighter numbers).")
@click.option("--out", type=click.Path(dir_okay=False), help="Where to keep the GGUF (default: artifacts dir).")
@json_option
def deploy(device: str, model_ref: str, recipe_spec: str, n_chunks: int, out: str | None,
           as_json: bool) -> None:
    """Export MODEL for DEVICE and measure it there: size, perplexity, KLD, speed.

    With --device localhost everything runs on this machine, without SSH.

    \b
    Example:
      ramp-edge deploy --device localhost
      ramp-edge deploy --device localhost --recipe uniform:Q4_0 --json
    """
    from ramp_edge.deploy import deploy_local
    from ramp_edge.errors import ConfigError
    from ramp_edge.ui import out_console, progress

    if device != "localhost":
        raise ConfigError(f"device {device!r}: only localhost is deployable in this version")
    with progress("Deploying") as bar:
        report = deploy_local(model_ref, recipe_spec, n_chunks=n_chunks, out=out, progress=bar)
    if as_json:
        emit_json(report.to_dict())
        return
    from rich.table import Table

    table = Table(title=f"ramp-edge deploy · {report.model_id} on {device}")
    table.add_column("artifact")
    table.add_column("size", justify="right")
    table.add_column("bpw", justify="right")
    table.add_column("PPL", justify="right")
    table.add_column("KLD", justify="right")
    table.add_column("same top p", justify="right")
    table.add_column("tg t/s", justify="right")
    for row in report.rows:
        table.add_row(row.label, human_bytes(row.size_bytes), f"{row.bpw:.2f}", f"{row.ppl:.3f}",
                      "-" if row.kld is None else f"{row.kld:.4f}",
                      "-" if row.same_top_p is None else f"{100 * row.same_top_p:.1f}%",
                      f"{row.tg_tps:.1f}")
    out_console.print(table)
    out_console.print(f"artifact: {report.artifact}")
