"""`ramp-edge devices`: list device profiles, published against measured values."""

from __future__ import annotations

import json
from typing import Any

import click


def measured_summary(measured: Any, latency_source: str) -> dict[str, Any] | None:
    """Which of a profile's numbers are measured, by what and when (None: all published)."""
    if measured is None:
        return None
    numbers = ["RAM", "cores"]
    if latency_source == "measured" or measured.bandwidth_copy_bytes_per_s:
        numbers.append("bandwidth")
    if measured.type_speeds:
        types = ",".join(s.qtype for s in measured.type_speeds)
        numbers.append(f"pp/tg speeds ({types})")
    return {
        "source": measured.source or f"host {measured.host}",
        "host": measured.host,
        "created_utc": measured.created_utc,
        "numbers": numbers,
    }


@click.command("devices")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print every profile (static, measured, latency model) as JSON.",
)
def devices(as_json: bool) -> None:
    """List device profiles with their published and measured values.

    Published: the profile's effective decode bandwidth and a reference generation speed with
    its source. Measured: the latest `ramp-edge profile` run stored for the device, if any; the
    last column says which numbers it measured, how (agent over SSH or local) and when.

    \b
    Example:
      ramp-edge devices
      ramp-edge devices --json
    """
    from ramp_edge.device.budget import latency_model
    from ramp_edge.device.profiles import list_profiles
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
                        "measured": measured_summary(measured, lm.source),
                    }
                    for static, measured, merged, lm in rows
                ],
                indent=2,
            )
        )
        return

    from rich.table import Table

    table = Table(title="Device profiles (published -> measured); aliases in --json")
    table.add_column("device", no_wrap=True)
    for col in (
        "hardware",
        "RAM GiB",
        "decode GB/s",
        "reference tg",
        "measured tg",
        "measured: what, by, when (UTC)",
    ):
        table.add_column(col, overflow="fold")
    for static, measured, merged, lm in rows:
        name = static.id
        hw = f"{merged.cores}c" + ("" if static.accelerator == "none" else f" {static.accelerator}")
        ram = "-" if static.auto else f"{static.ram_usable_bytes / (1 << 30):.1f}"
        if measured:
            ram += f" -> {merged.ram_usable_bytes / (1 << 30):.1f}"
        bw = "-" if static.auto else f"{static.bandwidth_effective_bytes_per_s / 1e9:.1f}"
        if lm.source in ("measured", "probe"):
            bw += f" -> {lm.reference_bandwidth_bytes_per_s / 1e9:.1f} {lm.source}"
        ref = next((r for r in static.references if r.is_generation), None)
        ref_text = f"{ref.tokens_per_s:g} {ref.quant} {ref.model}" if ref else "-"
        if measured and measured.type_speeds:
            best = max(measured.type_speeds, key=lambda s: s.tg_tokens_per_s)
            meas = (
                f"{best.tg_tokens_per_s:.1f} {best.qtype} {best.model} {measured.created_utc[:10]}"
            )
        elif measured:
            meas = f"host only {measured.created_utc[:10]}"
        else:
            meas = "-"
        summary = measured_summary(measured, lm.source)
        by = (
            "- (published)"
            if summary is None
            else f"{', '.join(summary['numbers'])}; {summary['source']}; "
            f"{summary['created_utc'].replace('T', ' ').rstrip('Z')}"
        )
        table.add_row(name, hw, ram, bw, ref_text, meas, by)
    out_console.print(table)
