"""`ramp-edge profile`: measure a host and store it as a device's measured profile."""

from __future__ import annotations

import json

import click


@click.command("profile")
@click.option(
    "--device",
    default="localhost",
    show_default=True,
    help="Profile id or alias to store the measurement under.",
)
@click.option(
    "--host",
    default=None,
    metavar="USER@ADDR",
    help="Measure a remote host over SSH (arrives with deploy).",
)
@click.option(
    "--model",
    "model_ref",
    default="smollm2-135m",
    show_default=True,
    help="Reference GGUF to time.",
)
@click.option(
    "--types",
    default="Q8_0,Q5_0,Q4_1,Q4_0",
    show_default=True,
    help="Comma-separated quant types to time the reference model at.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="llama.cpp threads (default: physical cores).",
)
@click.option("--fast", is_flag=True, help="Short runs (seconds): for tests and smoke checks.")
@click.option(
    "--no-llama", is_flag=True, help="Skip llama.cpp speeds; host facts and bandwidth only."
)
@click.option("--no-save", is_flag=True, help="Do not store the measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
def profile(
    device: str,
    host: str | None,
    model_ref: str,
    types: str,
    threads: int | None,
    fast: bool,
    no_llama: bool,
    no_save: bool,
    as_json: bool,
) -> None:
    """Measure this machine: RAM, cores, CPU flags, memory bandwidth, llama.cpp speed per type.

    The measurement is stored in the results database and overrides the static profile in
    `budget` and `devices`. Run it on the device itself (SSH via --host arrives with deploy).

    \b
    Example:
      ramp-edge profile --device localhost
      ramp-edge profile --device raspberry-pi-5-8gb --types Q4_0,Q8_0 --json   # on the Pi
    """
    from ramp_edge.device.budget import latency_model
    from ramp_edge.device.profiles import load_profile, normalize_arch, resolve_name
    from ramp_edge.errors import ConfigError, RampEdgeError
    from ramp_edge.device.profiling import host_facts, profile_localhost
    from ramp_edge.store import Store
    from ramp_edge.ui import out_console, progress

    if host is not None:
        raise RampEdgeError(
            f"measuring over SSH (--host {host}) arrives with the deploy layer; for now run "
            f"`ramp-edge profile --device {device}` on that device itself"
        )
    pid = resolve_name(device)
    static = load_profile(pid)
    here = normalize_arch(str(host_facts()["arch"]))
    if not static.auto and static.arch != here:
        raise ConfigError(
            f"this host is {here} but {pid} is {static.arch}: run the profile on the device "
            "itself, or use --device localhost"
        )
    type_list = tuple(t.strip().upper() for t in types.split(",") if t.strip())
    if not type_list and not no_llama:
        raise click.UsageError("--types needs at least one quant type")
    with progress(f"profiling {pid}") as update:
        measured = profile_localhost(
            pid,
            model=model_ref,
            types=type_list,
            fast=fast,
            llama=not no_llama,
            n_threads=threads,
            progress=update,
        )
    if not no_save:
        with Store() as store:
            store.save_measured_profile(measured)
    merged = static.merged(measured)
    lm = latency_model(merged)
    if as_json:
        click.echo(
            json.dumps({"measured": measured.to_dict(), "latency_model": lm.to_dict()}, indent=2)
        )
        return

    from rich.table import Table

    facts = Table(
        title=f"{pid}: measured on {measured.host} at {measured.created_utc}", show_header=False
    )
    facts.add_column("quantity", style="bold")
    facts.add_column("value")
    facts.add_row(
        "cpu",
        f"{measured.cpu} ({measured.arch}), {measured.cores} cores, "
        f"{measured.logical_cpus} logical CPUs",
    )
    facts.add_row("features", " ".join(measured.cpu_features) or "-")
    facts.add_row(
        "RAM",
        f"{measured.ram_available_bytes / (1 << 30):.2f} GiB available of "
        f"{measured.ram_total_bytes / (1 << 30):.2f} GiB",
    )
    if measured.load_avg_1m is not None:
        facts.add_row("load average", f"{measured.load_avg_1m:.2f} (1 min) while measuring")
    if measured.bandwidth_copy_bytes_per_s:
        facts.add_row("copy bandwidth", f"{measured.bandwidth_copy_bytes_per_s / 1e9:.1f} GB/s")
    facts.add_row(
        "decode bandwidth",
        f"{lm.reference_bandwidth_bytes_per_s / 1e9:.1f} GB/s for Q4_0 ({lm.source})",
    )
    facts.add_row(
        "agent", f"{measured.agent_version}, llama-cpp-python {measured.llama_cpp_version or '-'}"
    )
    out_console.print(facts)
    if measured.type_speeds:
        speeds = Table(title=f"llama.cpp speed (threads: {measured.type_speeds[0].n_threads})")
        for col in ("type", "model", "MiB read/token", "pp t/s", "tg t/s", "effective GB/s"):
            speeds.add_column(col, justify="right" if col != "model" else "left")
        for s in measured.type_speeds:
            speeds.add_row(
                s.qtype,
                s.model,
                f"{s.read_bytes / (1 << 20):.1f}",
                f"{s.pp_tokens_per_s:.1f}",
                f"{s.tg_tokens_per_s:.1f}",
                f"{s.read_bytes * s.tg_tokens_per_s / 1e9:.2f}",
            )
        out_console.print(speeds)
    if no_save:
        out_console.print("[dim]not stored (--no-save)[/dim]")
