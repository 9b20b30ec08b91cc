"""`ramp-edge inspect MODEL`: every weight tensor and the quant types legal for it."""

from __future__ import annotations

import click

from ramp_edge.cli._common import emit_json, json_option, open_model


@click.command("inspect")
@click.argument("model")
@json_option
def inspect_cmd(model: str, as_json: bool) -> None:
    """Show every tensor of MODEL: GGUF name, shape, parameters, legal quant types.

    Legality follows llama.cpp: K-quants and 256-block IQ types need a row length
    divisible by 256; where a type does not fit, llama.cpp substitutes its
    fallback (Q4_K -> Q5_0, Q6_K -> Q8_0, IQ* -> IQ4_NL, ...), shown here too.

    \b
    Example:
      ramp-edge inspect smollm2-135m --json
    """
    from ramp_edge.quant.catalogue import CATALOGUE, legal_types, resolve_fallback
    from ramp_edge.quant.presets import allows_quantization

    source = open_model(model)
    rows = []
    for s in source.specs:
        quantizable = allows_quantization(s.name, s.shape)
        legal = [t.name for t in legal_types(s.row_length)] if quantizable else [s.source_type]
        fallbacks = {
            t.name: resolve_fallback(t, s.row_length).name
            for t in CATALOGUE.values()
            if quantizable and t.allocatable and not t.fits(s.row_length)
        }
        rows.append(
            {
                "name": s.name,
                "shape": list(s.shape),
                "params": s.n_params,
                "source_type": s.source_type,
                "quantizable": quantizable,
                "legal_types": legal,
                "fallbacks": fallbacks,
            }
        )
    if as_json:
        emit_json({"model": source.model.model_id, "info": source.info.to_dict(), "tensors": rows})
        return
    from rich.table import Table

    from ramp_edge.ui import out_console

    info = source.info
    table = Table(
        title=f"{source.model.model_id}: {info.arch}, {info.n_layer} layers, "
        f"{info.n_params:,} parameters"
    )
    for col in ("tensor", "shape", "params", "source", "legal types"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            "x".join(map(str, r["shape"])),
            f"{r['params']:,}",
            r["source_type"],
            " ".join(r["legal_types"]) if r["quantizable"] else "(kept)",
        )
    out_console.print(table)
