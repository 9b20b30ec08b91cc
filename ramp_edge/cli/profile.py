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
    metavar="USER@ADDR[:PORT]",
    help="Measure this device over SSH through its agent (default: this machine, same agent).",
)
@click.option("--trust-new-host", is_flag=True, help="Accept and remember an unknown SSH host key.")
@click.option(
    "--bootstrap", is_flag=True, help="Create a venv on the device and install the agent's needs."
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
    trust_new_host: bool,
    bootstrap: bool,
    no_llama: bool,
    no_save: bool,
    as_json: bool,
) -> None:
    """Measure a device through its agent: RAM and cgroup cap, CPU and ISA flags, bandwidth,
    Python/llama.cpp versions, backends, loadable types, GPU or unified memory, free disk,
    thermal state, and llama.cpp pp/tg per quant type on probe models made here.

    The same agent runs on this machine (no --host) or over SSH (--host). The measurement is
    stored with its time and source, and wins over the published profile in `budget`,
    `deploy` and `devices`.

    \b
    Example:
      ramp-edge profile --device localhost
      ramp-edge profile --host pi@pi5.local --device raspberry-pi-5-8gb --json
    """
    from ramp_edge.device.budget import latency_model
    from ramp_edge.device.profiles import load_profile, resolve_name
    from ramp_edge.device.profiling import DEFAULT_OPTIONS, FAST_OPTIONS, profile_host
    from ramp_edge.errors import ConfigError
    from ramp_edge.store import Store
    from ramp_edge.ui import out_console, progress

    pid = resolve_name(device)
    static = load_profile(pid)
    type_list = tuple(t.strip().upper() for t in types.split(",") if t.strip())
    if not type_list and not no_llama:
        raise click.UsageError("--types needs at least one quant type")
    if host is None:
        from ramp_edge.fleet.local import LocalConnection

        conn_ctx = LocalConnection()
    else:
        from ramp_edge.fleet.group import connect_host
        from ramp_edge.fleet.hosts import parse_host

        conn_ctx = connect_host(
            parse_host(host, device=pid, name=pid), trust_new_host=trust_new_host
        )
    with progress(f"profiling {pid}") as update, conn_ctx as conn:
        measured = profile_host(
            conn,
            pid,
            model=model_ref,
            types=type_list,
            options=FAST_OPTIONS if fast else DEFAULT_OPTIONS,
            llama=not no_llama,
            n_threads=threads,
            bootstrap_env=bootstrap,
            progress=update,
        )
    if not static.auto and static.arch != measured.arch:
        raise ConfigError(
            f"{measured.host} is {measured.arch} but {pid} is {static.arch}: profile it as "
            "another device (--device NAME of a matching profile, or localhost)"
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
    llama = dict(measured.facts.get("llama_cpp") or {})
    facts.add_row(
        "agent",
        f"{measured.agent_version} ({measured.source}), python "
        f"{measured.facts.get('python', {}).get('version', '-')}, llama-cpp-python "
        f"{measured.llama_cpp_version or '-'}",
    )
    gpu = dict(measured.facts.get("gpu") or {})
    backends = ", ".join(llama.get("backends") or ["-"])
    offload = (
        "GPU offload" if llama.get("supports_gpu_offload") else "CPU-only build (no GPU offload)"
    )
    memory = " · unified memory" if gpu.get("unified_memory") else ""
    if gpu.get("memory_total_bytes"):
        memory += f" · GPU {gpu['memory_total_bytes'] / (1 << 30):.1f} GiB"
    facts.add_row("backends", f"{backends}: {offload}{memory}")
    if measured.facts.get("disk_free_bytes"):
        facts.add_row("disk free", f"{measured.facts['disk_free_bytes'] / (1 << 30):.1f} GiB")
    thermal = measured.facts.get("thermal") or {}
    if thermal:
        facts.add_row("thermal", " · ".join(f"{k} {v}" for k, v in thermal.items()))
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
