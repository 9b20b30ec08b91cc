"""`ramp-edge results`: list stored benchmark and accuracy results; `results plot` draws them."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from ramp_edge.cli._common import emit_json

# CSV / table columns taken from each row's payload (bench and eval records).
PAYLOAD_COLUMNS = (
    "status",
    "threads",
    "n_prompt",
    "n_gen",
    "reps",
    "pp_tps",
    "pp_tps_std",
    "tg_tps",
    "tg_tps_std",
    "load_time_s",
    "peak_rss_bytes",
    "task",
    "n",
    "acc",
    "acc_stderr",
    "acc_norm",
    "error",
)
ROW_COLUMNS = ("id", "created_utc", "kind", "device", "host", "artifact", "artifact_sha256")
KINDS = ("bench", "eval")


def _rows(device: str | None, kind: str | None, host: str | None) -> list[Any]:
    from ramp_edge.cli._common import device_or_host_name
    from ramp_edge.store import Store

    if device is not None:
        device = device_or_host_name(device)
    with Store() as store:
        rows = store.results(kind=kind, device=device)
    if kind is None:
        rows = [r for r in rows if r.kind in KINDS]
    if host is not None:
        rows = [r for r in rows if r.host == host]
    return rows


def _flat(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in ROW_COLUMNS}
    out.update({name: row.payload.get(name) for name in PAYLOAD_COLUMNS})
    return out


@click.group(invoke_without_command=True)
@click.option("--device", help="Only this device (profile id or host name).")
@click.option("--host", help="Only this host.")
@click.option("--kind", type=click.Choice(KINDS), help="Only bench or eval results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV on stdout.")
@click.pass_context
def results(
    ctx: click.Context,
    device: str | None,
    host: str | None,
    kind: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Show stored fleet and deploy results (tokens/s, memory, accuracy), oldest first.

    \b
    Example:
      ramp-edge results
      ramp-edge results --device raspberry-pi-5-8gb --csv > pi5.csv
      ramp-edge results plot --out fleet.png
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"device": device, "host": host}
        return
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are exclusive")
    rows = _rows(device, kind, host)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if as_csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=[*ROW_COLUMNS, *PAYLOAD_COLUMNS], lineterminator="\n"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(_flat(row))
        return
    _print_table(rows)


def _artifact_label(row: Any) -> str:
    """The file name with the start of its sha256: two files called model.gguf stay apart."""
    sha = getattr(row, "artifact_sha256", "")
    return f"{row.artifact} ({sha[:8]})" if sha else row.artifact


def _print_table(rows: list[Any]) -> None:
    from rich.table import Table

    from ramp_edge.cli._common import human_bytes
    from ramp_edge.ui import err_console, out_console

    if not rows:
        err_console.print(
            "no results stored yet; run `ramp-edge fleet bench` or `ramp-edge deploy`"
        )
        return
    table = Table(title="ramp-edge results")
    for column in (
        "id",
        "time (UTC)",
        "device",
        "host",
        "artifact",
        "kind",
        "status",
        "pp t/s",
        "tg t/s",
        "peak RSS",
        "task",
        "acc",
    ):
        table.add_column(
            column,
            justify="right" if column in ("id", "pp t/s", "tg t/s", "peak RSS", "acc") else "left",
        )

    def num(p: dict[str, Any], name: str, digits: int = 1) -> str:
        value = p.get(name)
        return "-" if value is None else f"{value:.{digits}f}"

    for row in rows:
        p = row.payload

        status = p.get("status", "ok")
        table.add_row(
            str(row.id),
            row.created_utc.replace("T", " ").rstrip("Z"),
            row.device,
            row.host,
            _artifact_label(row),
            row.kind,
            status if status == "ok" else f"[red]{status}[/]",
            num(p, "pp_tps"),
            num(p, "tg_tps"),
            human_bytes(p["peak_rss_bytes"]) if p.get("peak_rss_bytes") else "-",
            p.get("task") or "-",
            num(p, "acc", 3),
        )
    out_console.print(table)


@results.command("plot")
@click.option(
    "--out",
    "out_path",
    default="results.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="PNG file to write.",
)
@click.pass_obj
def plot(obj: dict[str, Any] | None, out_path: str) -> None:
    """Draw tokens/s and accuracy per device and artifact (latest result of each) as a PNG.

    \b
    Example:
      ramp-edge results plot --out fleet.png
      ramp-edge results --device raspberry-pi-5-8gb plot
    """
    from ramp_edge.errors import RampEdgeError, require

    require("matplotlib", "plot")
    obj = obj or {}
    rows = _rows(obj.get("device"), None, obj.get("host"))
    ok = [r for r in rows if r.payload.get("status", "ok") == "ok"]
    if not ok:
        raise RampEdgeError("no successful results to plot; run `ramp-edge fleet bench` first")
    path = draw(ok, out_path)
    click.echo(str(path))


def draw(rows: list[Any], out_path: str) -> Any:
    """Grouped bars: generation and prompt t/s (left), mean accuracy over tasks (right)."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ramp_edge.fsutil import atomic_path

    speed: dict[tuple[str, str], dict[str, Any]] = {}
    accuracy: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:  # oldest first: later rows replace earlier ones
        # by content: two different files with one name are two bars
        key = (row.device, _artifact_label(row))
        if row.kind == "bench":
            speed[key] = row.payload
        elif row.kind == "eval" and row.payload.get("acc") is not None:
            accuracy.setdefault(key, {})[row.payload.get("task", "?")] = float(row.payload["acc"])
    devices = sorted({d for d, _ in speed} | {d for d, _ in accuracy})
    artifacts = sorted({a for _, a in speed} | {a for _, a in accuracy})
    width = 0.8 / max(1, len(artifacts))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 2.5 * len(devices) + 4), 4.5))
    for i, artifact in enumerate(artifacts):
        xs = [d + (i - (len(artifacts) - 1) / 2) * width for d in range(len(devices))]
        tg = [speed.get((dev, artifact), {}).get("tg_tps") or 0.0 for dev in devices]
        err = [speed.get((dev, artifact), {}).get("tg_tps_std") or 0.0 for dev in devices]
        left.bar(xs, tg, width, yerr=err, capsize=3, label=artifact)
        acc = [
            sum(accuracy[(dev, artifact)].values()) / len(accuracy[(dev, artifact)])
            if (dev, artifact) in accuracy
            else 0.0
            for dev in devices
        ]
        right.bar(xs, acc, width, label=artifact)
    for ax, title, ylabel in (
        (left, "generation speed (tg, mean ± sd)", "tokens/s"),
        (right, "accuracy (mean over tasks)", "acc"),
    ):
        ax.set_xticks(range(len(devices)))
        ax.set_xticklabels(devices, rotation=20, ha="right")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    right.set_ylim(0, 1)
    left.legend(fontsize="small")
    fig.tight_layout()
    target = Path(out_path)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return target
