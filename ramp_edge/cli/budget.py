"""`ramp-edge budget`: the largest model a device can hold and run at a target speed."""

from __future__ import annotations

import json

import click


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):,.1f} MiB"


@click.command("budget")
@click.option(
    "--device",
    "device",
    required=True,
    help="Device profile id or alias (see `ramp-edge devices`).",
)
@click.option(
    "--model", "model_ref", required=True, help="Built-in model name, .gguf file or HF directory."
)
@click.option(
    "--ctx",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="Context length to reserve KV cache for.",
)
@click.option(
    "--min-tps",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Required generation speed in tokens/s; 0 for no latency target.",
)
@click.option(
    "--headroom",
    default=0.85,
    show_default=True,
    type=click.FloatRange(min=0, max=1, min_open=True),
    help="Fraction of usable RAM the model process may fill.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the budget as JSON.")
def budget(
    device: str, model_ref: str, ctx: int, min_tps: float, headroom: float, as_json: bool
) -> None:
    """Compute a weight budget (bytes and bits per weight) for MODEL on DEVICE.

    Memory: usable RAM x headroom minus the KV cache for --ctx, llama.cpp's compute buffers and
    the runtime. Latency: bytes read per token over the device's effective decode bandwidth
    (measured by `ramp-edge profile`, else published). Says which limit binds; an infeasible
    request exits 4 with the nearest feasible option.

    \b
    Example:
      ramp-edge budget --device raspberry-pi-5-8gb --model smollm2-135m --min-tps 20
      ramp-edge budget --device localhost --model smollm2-135m --ctx 4096 --json
    """
    from ramp_edge.device.budget import compute_budget, geometry_from_specs
    from ramp_edge.device.profiling import ensure_measured
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source
    from ramp_edge.store import Store
    from ramp_edge.ui import out_console, progress

    with Store() as store:
        profile = store.profile(device)
    with progress("probing host") as update:
        profile = ensure_measured(profile, progress=update)
    resolved = resolve(model_ref)
    source = open_source(resolved)
    result = compute_budget(
        profile,
        source.info,
        geometry_from_specs(source.specs),
        n_ctx=ctx,
        min_tps=min_tps or None,
        headroom=headroom,
        model=resolved.model_id,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return

    from rich.table import Table

    d = result.to_dict()
    table = Table(title=f"Budget for {result.model} on {result.device}", show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("usable RAM", _mib(result.ram_usable_bytes), f"x headroom {headroom}")
    table.add_row("KV cache", _mib(result.kv_cache_bytes), f"F16 K and V at ctx {ctx}")
    table.add_row(
        "compute buffers", _mib(result.compute_buffer_bytes), "llama.cpp graph, n_ubatch 512"
    )
    table.add_row("runtime", _mib(result.runtime_overhead_bytes), "python + llama.cpp + vocabulary")
    table.add_row(
        "memory limit", _mib(result.memory_limit_bytes), f"{d['memory_limit_bpw']:.2f} bpw"
    )
    lat_note = (
        "no latency target"
        if result.latency_limit_bytes is None
        else f"{d['latency_limit_bpw']:.2f} bpw for {min_tps:g} tok/s"
    )
    table.add_row("latency limit", _mib(result.latency_limit_bytes), lat_note)
    table.add_row(
        "decode bandwidth",
        f"{result.bandwidth_effective_bytes_per_s / 1e9:.1f} GB/s",
        f"{result.bandwidth_source}: {result.bandwidth_note}",
    )
    table.add_row(
        "[bold green]budget",
        f"[bold green]{_mib(result.budget_bytes)}",
        f"[bold green]{result.budget_bpw:.2f} bpw",
    )
    table.add_row(
        "binds",
        result.binding,
        f"predicted {result.predicted_tokens_per_s:.1f} tok/s at the budget",
    )
    out_console.print(table)
    out_console.print(result.explanation, soft_wrap=True)
