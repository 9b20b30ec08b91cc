"""`ramp-edge fleet bench`: one artifact, many devices over SSH, results into the store."""

from __future__ import annotations

import sys
import threading
from typing import Any

import click

from ramp_edge.cli._common import emit_json, human_bytes, json_option


@click.group()
def fleet() -> None:
    """Benchmark artifacts on a fleet of devices listed in an Ansible-style inventory."""


@fleet.command("bench")
@click.option(
    "-i",
    "--inventory",
    required=True,
    type=click.Path(dir_okay=False),
    help="Ansible-style YAML inventory (hosts, groups, ansible_host, device: ...).",
)
@click.option("--artifact", type=click.Path(dir_okay=False), help="A GGUF to benchmark.")
@click.option(
    "--recipe", "recipe_spec", help="Export this recipe of --model instead of --artifact."
)
@click.option("--model", "model_ref", help="Model reference for --recipe (e.g. smollm2-135m).")
@click.option(
    "--hosts",
    "pattern",
    default="all",
    show_default=True,
    help="Comma-separated host or group names from the inventory.",
)
@click.option("--forks", default=5, show_default=True, help="Hosts benchmarked in parallel.")
@click.option(
    "--threads", type=int, help="CPU threads on each device (default: its physical cores)."
)
@click.option("--reps", default=5, show_default=True, help="Timed repetitions per test.")
@click.option("--n-prompt", default=512, show_default=True, help="Prompt tokens (pp test).")
@click.option("--n-gen", default=128, show_default=True, help="Generated tokens (tg test).")
@click.option("--tasks", help="Also evaluate accuracy on these tasks, e.g. arc_easy,piqa.")
@click.option("--eval-limit", type=int, default=50, show_default=True, help="Items per task.")
@click.option("--trust-new-host", is_flag=True, help="Accept and save unknown host keys.")
@click.option(
    "--bootstrap",
    is_flag=True,
    help="Install llama-cpp-python and psutil into ~/.ramp-edge/venv where missing.",
)
@json_option
def bench(
    inventory: str,
    artifact: str | None,
    recipe_spec: str | None,
    model_ref: str | None,
    pattern: str,
    forks: int,
    threads: int | None,
    reps: int,
    n_prompt: int,
    n_gen: int,
    tasks: str | None,
    eval_limit: int,
    trust_new_host: bool,
    bootstrap: bool,
    as_json: bool,
) -> None:
    """Push ARTIFACT and the agent to every host, measure pp/tg t/s (and accuracy), store it.

    Hosts run in parallel (--forks); one dead host never stops the others, and each host's
    results are committed to the results database as soon as it finishes. Exit status 7 when
    any host failed (after printing every host's outcome).

    \b
    Example:
      ramp-edge fleet bench -i fleet.yml --artifact smol-q4.gguf
      ramp-edge fleet bench -i fleet.yml --recipe Q4_K_M --model smollm2-135m --forks 2 --json
      ramp-edge fleet bench -i fleet.yml --artifact smol-q4.gguf --tasks arc_easy --eval-limit 20
    """
    from pathlib import Path

    from ramp_edge.agent_client import BenchOptions
    from ramp_edge.errors import ConfigError, RampEdgeError
    from ramp_edge.fleet.group import FleetError
    from ramp_edge.fleet.inventory import load_inventory
    from ramp_edge.pipeline import bench_fleet
    from ramp_edge.store import Store

    if (artifact is None) == (recipe_spec is None):
        raise click.UsageError("give exactly one of --artifact or --recipe (with --model)")
    if recipe_spec is not None and model_ref is None:
        raise click.UsageError("--recipe needs --model")
    if forks < 1:
        raise click.UsageError("--forks must be at least 1")
    try:
        options = BenchOptions(threads=threads, n_prompt=n_prompt, n_gen=n_gen, reps=reps)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    inv = load_inventory(inventory)
    hosts = _canonical_devices(inv.select(pattern))
    if artifact is not None:
        path = Path(artifact)
        if not path.is_file():
            raise ConfigError(f"artifact not found: {path}")
    else:
        path = _export(model_ref, recipe_spec)  # type: ignore[arg-type]

    view = _LiveView(hosts, enabled=not as_json)
    with Store() as store, view:
        try:
            result = bench_fleet(
                hosts,
                path,
                tasks=tasks,
                limit=eval_limit,
                bench_opts=options,
                forks=forks,
                store=store,
                connect_options={"trust_new_host": trust_new_host},
                bootstrap_env=bootstrap,
                on_status=view.update,
                on_report=view.report,
            )
        except ValueError as err:
            raise RampEdgeError(str(err)) from None
    if as_json:
        emit_json({"artifact": str(path), **result.to_dict()})
    else:
        _print_table(path.name, result)
    if not result.ok:
        raise FleetError(result)


def _canonical_devices(hosts: Any) -> tuple[Any, ...]:
    """Each host's `device:` as its canonical profile id (ConfigError lists the known ones)."""
    import dataclasses

    from ramp_edge.cli._common import resolve_device

    return tuple(
        dataclasses.replace(h, device=resolve_device(h.device)) if h.device else h for h in hosts
    )


def _export(model_ref: str, recipe_spec: str) -> Any:
    """Export `recipe_spec` of `model_ref` into the artifacts dir (the lead's export path)."""
    from ramp_edge import paths
    from ramp_edge import recipe as recipes
    from ramp_edge.models import resolve
    from ramp_edge.quant.export import export_model
    from ramp_edge.source import open_source
    from ramp_edge.ui import progress

    resolved = resolve(model_ref)
    source = open_source(resolved)
    recipe = recipes.build(source, recipe_spec)
    label = recipe.method.split(":", 1)[-1] if getattr(recipe, "method", None) else recipe_spec
    target = paths.artifacts_dir() / f"{resolved.model_id}-{label}.gguf".replace("/", "_")
    with progress(f"export {label}") as bar:
        export_model(source, recipe, target, progress=bar)
    return target


class _LiveView:
    """A live per-host table on stderr (TTY only); plain log lines otherwise."""

    def __init__(self, hosts: Any, enabled: bool) -> None:
        from ramp_edge import ui

        self.rows: dict[str, dict[str, str]] = {
            h.name: {"device": h.device or "-", "status": "waiting", "pp": "", "tg": "", "acc": ""}
            for h in hosts
        }
        self.lock = threading.Lock()
        self.enabled = enabled and sys.stderr.isatty() and not ui._quiet
        self.live: Any = None

    def __enter__(self) -> _LiveView:
        if self.enabled:
            from rich.live import Live

            from ramp_edge.ui import err_console

            self.live = Live(
                get_renderable=self.render,
                console=err_console,
                refresh_per_second=4,
                transient=False,
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, host: str, text: str) -> None:
        with self.lock:
            if host in self.rows:
                self.rows[host]["status"] = text
        if not self.enabled and (text in ("done", "bench", "eval") or text.startswith("failed")):
            click.echo(f"{host}: {text}", err=True)

    def report(self, report: Any) -> None:
        with self.lock:
            row = self.rows.get(report.host)
            if row is None:
                return
            bench = report.bench
            if bench is not None and bench.ok:
                row["pp"] = f"{bench.pp_tps:.1f}" if bench.pp_tps is not None else "-"
                row["tg"] = f"{bench.tg_tps:.1f}" if bench.tg_tps is not None else "-"
            elif bench is not None:
                row["status"] = bench.status
            accs = [e.acc for e in report.evals if e.ok and e.acc is not None]
            row["acc"] = f"{sum(accs) / len(accs):.3f}" if accs else ""

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title="fleet bench", expand=False)
        for column in ("host", "device", "status", "pp t/s", "tg t/s", "acc"):
            table.add_column(
                column, justify="right" if "/" in column or column == "acc" else "left"
            )
        with self.lock:
            for host, row in self.rows.items():
                status = row["status"]
                style = (
                    "green"
                    if status == "done"
                    else "red"
                    if status.startswith(("failed", "oom", "error"))
                    else ""
                )
                table.add_row(
                    host,
                    row["device"],
                    f"[{style}]{status}[/]" if style else status,
                    row["pp"],
                    row["tg"],
                    row["acc"],
                )
        return table


def _print_table(artifact: str, result: Any) -> None:
    from rich.table import Table

    from ramp_edge.ui import out_console

    table = Table(title=f"ramp-edge fleet bench · {artifact}")
    for column in (
        "host",
        "device",
        "status",
        "pp t/s",
        "tg t/s",
        "load s",
        "peak RSS",
        "acc",
        "error",
    ):
        table.add_column(
            column,
            justify="right" if column not in ("host", "device", "status", "error") else "left",
        )
    for outcome in result.outcomes:
        if not outcome.ok:
            table.add_row(
                outcome.host, "-", "[red]failed[/]", "", "", "", "", "", outcome.error or ""
            )
            continue
        report = outcome.value
        bench = report.bench

        def fmt(mean: float | None, std: float | None) -> str:
            return "-" if mean is None else f"{mean:.1f} ± {std or 0:.1f}"

        accs = [e.acc for e in report.evals if e.ok and e.acc is not None]
        table.add_row(
            report.host,
            report.device or "-",
            report.status,
            fmt(bench.pp_tps, bench.pp_tps_std) if bench else "-",
            fmt(bench.tg_tps, bench.tg_tps_std) if bench else "-",
            f"{bench.load_time_s:.2f}" if bench and bench.load_time_s is not None else "-",
            human_bytes(bench.peak_rss_bytes) if bench and bench.peak_rss_bytes else "-",
            f"{sum(accs) / len(accs):.3f}" if accs else "-",
            (bench.error or "") if bench and not bench.ok else "",
        )
    out_console.print(table)
