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
@click.option(
    "--forks",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Hosts benchmarked in parallel.",
)
@click.option(
    "--host-deadline",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Stop a host still running this long after its connect (it fails with exit 7).",
)
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
    host_deadline: float | None,
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
    any host failed or its benchmark/eval failed (after printing every host's outcome); 3 for
    bad arguments or inventory, before any work; 130 on Ctrl-C (in-flight hosts are stopped on
    the device, finished hosts are already stored).

    \b
    Example:
      ramp-edge fleet bench -i fleet.yml --artifact smol-q4.gguf
      ramp-edge fleet bench -i fleet.yml --recipe Q4_K_M --model smollm2-135m --forks 2 --json
      ramp-edge fleet bench -i fleet.yml --artifact smol-q4.gguf --tasks arc_easy --eval-limit 20
    """
    from pathlib import Path

    from ramp_edge.agent_client import BenchOptions
    from ramp_edge.errors import ConfigError, RampEdgeError, RemoteError
    from ramp_edge.fleet.group import FleetError
    from ramp_edge.fleet.inventory import load_inventory
    from ramp_edge.pipeline import bench_fleet
    from ramp_edge.store import Store

    if (artifact is None) == (recipe_spec is None):
        raise click.UsageError("give exactly one of --artifact or --recipe (with --model)")
    if recipe_spec is not None and model_ref is None:
        raise click.UsageError("--recipe needs --model")
    # Every argument is checked before any slow step (export, connections).
    try:
        options = BenchOptions(threads=threads, n_prompt=n_prompt, n_gen=n_gen, reps=reps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if eval_limit < 1:
        raise ConfigError(f"--eval-limit must be at least 1, got {eval_limit}")
    if tasks:
        check_tasks(tasks)
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
                deadline_s=host_deadline,
            )
        except ValueError as err:
            raise RampEdgeError(str(err)) from None
    failed = failed_hosts(result)
    if as_json:
        emit_json({"artifact": str(path), **result.to_dict(), "ok": not failed})
    else:
        _print_table(path.name, result)
    if failed:
        if not result.ok and len(failed) == len(result.failed):
            raise FleetError(result)
        raise RemoteError(
            f"{len(failed)} of {len(result.outcomes)} hosts failed: "
            + "; ".join(f"{host} ({why})" for host, why in failed[:3])
            + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        )


def failed_hosts(result: Any) -> list[tuple[str, str]]:
    """(host, why) for every host that failed: its connection, its push, or its bench/eval."""
    out = []
    for outcome in result.outcomes:
        if not outcome.ok:
            out.append((outcome.host, outcome.error or "failed"))
            continue
        report = outcome.value
        if report.status != "ok":
            bench = report.bench
            why = bench.error if bench is not None and bench.status != "ok" else None
            why = why or next((e.error for e in report.evals if e.status != "ok"), None)
            out.append((outcome.host, f"{report.status}: {why or 'failed'}"))
    return out


def check_tasks(spec: str) -> None:
    """ConfigError for an unknown task name, before any slow step."""
    from ramp_edge.evaluate import taskfile as task_mod

    for name in task_mod.parse_task_names(spec):
        task_mod.get_task(name)


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


@fleet.command("clean")
@click.option(
    "-i",
    "--inventory",
    required=True,
    type=click.Path(dir_okay=False),
    help="Ansible-style YAML inventory.",
)
@click.option("--hosts", "pattern", default="all", show_default=True, help="Hosts or groups.")
@click.option(
    "--keep", multiple=True, help="Artifact file name to keep (repeatable); others are removed."
)
@click.option(
    "--older-than",
    "older_than_days",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Only remove files older than this many days (partial uploads always go).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--trust-new-host", is_flag=True, help="Accept and save unknown host keys.")
@json_option
def clean(
    inventory: str,
    pattern: str,
    keep: tuple[str, ...],
    older_than_days: float,
    dry_run: bool,
    trust_new_host: bool,
    as_json: bool,
) -> None:
    """Remove old artifacts, task files and partial uploads from devices' ~/.ramp-edge.

    Only ~/.ramp-edge/artifacts and ~/.ramp-edge/tasks are touched; the agent and its venv
    stay. Exit status 7 when a host could not be cleaned.

    \b
    Example:
      ramp-edge fleet clean -i fleet.yml --dry-run
      ramp-edge fleet clean -i fleet.yml --keep smol-q4.gguf --older-than 7
    """
    from ramp_edge.agent_client import ARTIFACT_DIR, TASK_DIR
    from ramp_edge.fleet.clean import clean_remote
    from ramp_edge.fleet.group import FleetError, connect_host, run_on_hosts
    from ramp_edge.fleet.inventory import load_inventory

    hosts = load_inventory(inventory).select(pattern)
    result = run_on_hosts(
        hosts,
        lambda conn: clean_remote(
            conn,
            [ARTIFACT_DIR, TASK_DIR],
            keep=keep,
            older_than_s=older_than_days * 86400,
            dry_run=dry_run,
        ),
        connect=lambda host: connect_host(host, trust_new_host=trust_new_host),
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        for outcome in result.outcomes:
            if not outcome.ok:
                click.echo(f"{outcome.host}: failed: {outcome.error}")
                continue
            report = outcome.value
            gone = [f for f in report.files if not f["kept"]]
            verb = "would remove" if dry_run else "removed"
            size = human_bytes(sum(f["bytes"] for f in gone))
            click.echo(f"{outcome.host}: {verb} {len(gone)} file(s), {size}")
            for f in gone:
                click.echo(f"  {f['path']}")
    if not result.ok:
        raise FleetError(result)
