"""`ramp-edge devices`: list device profiles, published against measured values."""

from __future__ import annotations

import json

import click


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print every profile (static, measured, latency model) as JSON.")
def devices(as_json: bool) -> None:
    """List device profiles with their published and measured values.

    Published: the profile's effective decode bandwidth and a reference generation speed with
    its source. Measured: the latest `ramp-edge profile` run stored for the device, if any.

    \b
    Example:
      ramp-edge devices
      ramp-edge devices --json
    """
    from ramp_edge.budget import latency_model
    from ramp_edge.devices import list_profiles
    from ramp_edge.store import Store
    from ramp_edge.ui import out_console

    with Store() as store:
        rows = []
        for static in list_profiles():
            measured = store.latest_measured_profile(static.id)
            merged = static.merged(measured) if measured else static
            rows.append((static, measured, merged, latency_model(merged)))

    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": static.id,
                        "profile": merged.to_dict(),
                        "latency_model": lm.to_dict(),
                    }
                    for static, _, merged, lm in rows
                ],
                indent=2,
            )
        )
        return

    from rich.table import Table

    table = Table(title="Device profiles")
    for col in ("device", "cpu", "accel", "RAM usable GiB", "decode GB/s", "reference tg", "measured"):
        table.add_column(col, overflow="fold")
    for static, measured, merged, lm in rows:
        name = static.id + (f"\n({', '.join(static.aliases)})" if static.aliases else "")
        cpu = f"{merged.arch}, {merged.cores} cores"
        ram = f"{static.ram_usable_bytes / (1 << 30):.1f}" if not static.auto else "-"
        if measured:
            ram += f" -> {merged.ram_usable_bytes / (1 << 30):.1f} measured"
        bw = f"{static.bandwidth_effective_bytes_per_s / 1e9:.1f} published" if not static.auto else "-"
        if lm.source in ("measured", "probe"):
            bw += f"\n{lm.reference_bandwidth_bytes_per_s / 1e9:.1f} {lm.source}"
        ref = next((r for r in static.references if r.is_generation), None)
        ref_text = f"{ref.tokens_per_s:g} t/s {ref.model} {ref.quant}" if ref else "-"
        if measured and measured.type_speeds:
            best = max(measured.type_speeds, key=lambda s: s.tg_tokens_per_s)
            meas = f"{best.tg_tokens_per_s:.1f} t/s {best.model} {best.qtype}\n{measured.created_utc}"
        elif measured:
            meas = f"host facts only\n{measured.created_utc}"
        else:
            meas = "not measured"
        table.add_row(name, cpu, static.accelerator, ram, bw, ref_text, meas)
    out_console.print(table)
