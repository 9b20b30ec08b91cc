"""One self-contained HTML report from the results database: plots inline, no network.

Sections, each drawn from `ramp_edge.store.Store` rows (the store is read, never changed):

- quality: size vs mean KLD and vs perplexity, one colour per model, with each model's Pareto
  frontier (smaller and better), from ``quality`` rows (written by ``ramp-edge deploy``);
- speed: per device and artifact, the latest ok ``bench`` row (prompt and generation t/s,
  load time, peak RSS);
- fleet: every ``bench`` and ``eval`` row per host, failures first, with their error;
- tasks: the latest ok ``eval`` row per device, artifact and task;
- allocations: for each recipe found beside a ``quality`` row's artifact
  (``<artifact>.recipe.json``) or passed in, a heat map of bits per weight by layer and role.

Images are matplotlib PNGs embedded as base64 ``data:`` URIs; the page has no scripts and no
external references, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge import __version__
from ramp_edge.errors import ArtifactError, require
from ramp_edge.fsutil import atomic_write_text
from ramp_edge.store import ResultRow, Store

logger = logging.getLogger(__name__)

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+?)(?:\.weight)?$")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr.fail td{background:#fde8e8}.muted{color:#777}img{max-width:100%;height:auto}
"""


@dataclass(frozen=True, slots=True)
class ReportData:
    """What the report shows, read from a store: rows by kind and the recipes found."""

    db_path: str
    quality: tuple[ResultRow, ...]
    bench: tuple[ResultRow, ...]
    evals: tuple[ResultRow, ...]
    recipes: tuple[tuple[str, Any], ...]  # (label, ramp_edge.recipe.Recipe)


def collect(store: Store, recipe_paths: Iterable[str | Path] = ()) -> ReportData:
    """Read everything the report needs from `store` (and recipe files) once."""
    from ramp_edge.recipe import Recipe

    quality = tuple(store.results("quality"))
    recipes: list[tuple[str, Any]] = []
    seen: set[Path] = set()
    candidates = [Path(p) for p in recipe_paths]
    candidates += [Path(row.artifact).with_suffix(".recipe.json") for row in quality]
    for path in candidates:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            recipes.append((path.name.removesuffix(".recipe.json"), Recipe.load(path)))
        except ArtifactError as err:
            logger.warning("skipping recipe %s: %s", path, err)
    return ReportData(
        db_path=str(store.path),
        quality=quality,
        bench=tuple(store.results("bench")),
        evals=tuple(store.results("eval")),
        recipes=tuple(recipes),
    )


# --------------------------------------------------------------------------- figures


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def model_of(row: ResultRow) -> str:
    """The model a quality row belongs to: its payload's ``model``, else the artifact name up to
    the method (deploy names artifacts ``<model>-<method>-<budget>k.gguf``)."""
    if row.payload.get("model"):
        return str(row.payload["model"])
    stem = Path(row.artifact).name.removesuffix(".gguf")
    method = str(row.payload.get("recipe", ""))
    if method and f"-{method}-" in stem:
        return stem.split(f"-{method}-")[0]
    return re.sub(r"-\d+k$", "", stem)


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both size and error (lower is better), by size."""
    front: list[tuple[float, float]] = []
    for size, err in sorted(points):
        if not front or err < front[-1][1]:
            front.append((size, err))
    return front


def quality_figure(rows: Sequence[ResultRow]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    by_model: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_model.setdefault(model_of(row), []).append(row)
    for metric, ax, label in (
        ("mean_kld", axes[0], "mean KLD vs the reference (nats)"),
        ("ppl", axes[1], "perplexity"),
    ):
        for model, model_rows in sorted(by_model.items()):
            pts = [
                (float(r.payload["bytes"]) / 1e6, float(r.payload[metric]))
                for r in model_rows
                if r.payload.get("bytes") is not None and r.payload.get(metric) is not None
            ]
            if not pts:
                continue
            (line,) = ax.plot(*zip(*pts, strict=True), "o", alpha=0.7, label=model)
            front = pareto(pts)
            ax.plot(*zip(*front, strict=True), "-", color=line.get_color(), alpha=0.8)
            for r in model_rows:
                if r.payload.get("bytes") is not None and r.payload.get(metric) is not None:
                    ax.annotate(
                        str(r.payload.get("recipe", "")),
                        (float(r.payload["bytes"]) / 1e6, float(r.payload[metric])),
                        fontsize=7,
                        alpha=0.7,
                    )
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(label)
        if metric == "mean_kld":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Size vs quality; lines: Pareto frontier per model")
    return _png(fig)


def type_map(recipe: Any) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(layers, roles, bits per weight [layer][role] or None) of a recipe's allocation; tensors
    outside ``blk.N`` form the layer ``other``."""
    from ramp_edge.quant.catalogue import CATALOGUE

    cells: dict[tuple[str, str], float] = {}
    for name, qtype in recipe.allocation:
        match = _BLOCK.match(name)
        layer, role = (match.group(1), match.group(2)) if match else ("other", name)
        role = role.removesuffix(".weight")
        cells[(layer, role)] = CATALOGUE[qtype.upper()].bits_per_weight
    numeric = sorted({lay for lay, _ in cells if lay != "other"}, key=int)
    layers = numeric + (["other"] if any(lay == "other" for lay, _ in cells) else [])
    roles = sorted({role for _, role in cells})
    grid = [[cells.get((lay, role)) for role in roles] for lay in layers]
    return layers, roles, grid


def type_map_figure(label: str, recipe: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers, roles, grid = type_map(recipe)
    values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(roles) + 2), max(2.5, 0.28 * len(layers))))
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(roles)), roles, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label="bits per weight")
    ax.set_title(f"{label}: {recipe.method}", fontsize=9)
    return _png(fig)


# --------------------------------------------------------------------------- tables


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    """An HTML table; the first `left` columns align left. Cells are escaped."""
    out = ["<table><tr>"]
    out += [
        f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(head)
    ]
    out.append("</tr>")
    count = 0
    for row in rows:
        count += 1
        *cells, css = row if len(row) == len(head) + 1 else (*row, "")
        out.append(f'<tr class="{css}">')
        out += [
            f'<td class="{"l" if i < left else ""}">{html.escape(_fmt(c))}</td>'
            for i, c in enumerate(cells)
        ]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out) if count else '<p class="muted">No rows.</p>'


def _latest(rows: Iterable[ResultRow], key: Any) -> list[ResultRow]:
    chosen: dict[Any, ResultRow] = {}
    for row in rows:  # oldest first: later rows replace earlier ones
        chosen[key(row)] = row
    return list(chosen.values())


def speed_table(bench: Sequence[ResultRow]) -> str:
    ok = [r for r in bench if r.payload.get("status", "ok") == "ok"]
    rows = []
    for r in sorted(
        _latest(ok, lambda r: (r.device, r.host, r.artifact_key)),
        key=lambda r: (r.device, r.artifact),
    ):
        p = r.payload
        rows.append(
            (
                r.device,
                r.host,
                r.artifact,
                (p.get("artifact_bytes") or 0) / 1e6 or None,
                p.get("pp_tps"),
                p.get("tg_tps"),
                p.get("threads"),
                p.get("load_time_s"),
                (p.get("peak_rss_bytes") or 0) / 2**20 or None,
                r.created_utc,
            )
        )
    head = ("device", "host", "artifact", "size MB", "prompt t/s", "gen t/s", "threads",
            "load s", "peak RSS MiB", "measured (UTC)")  # fmt: skip
    return _table(head, rows, left=3)


def fleet_table(bench: Sequence[ResultRow], evals: Sequence[ResultRow]) -> str:
    rows = []
    for r in list(bench) + list(evals):
        status = str(r.payload.get("status", "ok"))
        what = "bench" if r.kind == "bench" else f"eval {r.payload.get('task', '')}"
        rows.append(
            (r.host, r.device, r.artifact, what, status, r.payload.get("error") or "",
             r.created_utc, "fail" if status != "ok" else "")
        )  # fmt: skip
    rows.sort(key=lambda row: (row[4] == "ok", row[0], row[6]))
    head = ("host", "device", "artifact", "what", "status", "error", "when (UTC)")
    return _table(head, rows, left=6)


def tasks_table(evals: Sequence[ResultRow]) -> str:
    ok = [r for r in evals if r.payload.get("status", "ok") == "ok"]
    latest = _latest(ok, lambda r: (r.device, r.artifact_key, r.payload.get("task")))
    rows = [
        (r.device, r.artifact, r.payload.get("task"), r.payload.get("n"),
         r.payload.get("acc"), r.payload.get("acc_norm"), r.payload.get("items_per_s"))
        for r in sorted(latest, key=lambda r: (r.device, r.artifact, str(r.payload.get("task"))))
    ]  # fmt: skip
    return _table(("device", "artifact", "task", "n", "acc", "acc_norm", "items/s"), rows, left=3)


def quality_table(rows: Sequence[ResultRow]) -> str:
    table = [
        (model_of(r), r.payload.get("recipe"), Path(r.artifact).name,
         (r.payload.get("bytes") or 0) / 1e6 or None, r.payload.get("mean_kld"),
         r.payload.get("ppl"), r.payload.get("ppl_ref"), r.device)
        for r in sorted(rows, key=lambda r: (model_of(r), r.payload.get("bytes") or 0))
    ]  # fmt: skip
    head = ("model", "method", "artifact", "size MB", "mean KLD", "PPL", "ref PPL", "device")
    return _table(head, table, left=3)


# --------------------------------------------------------------------------- page


def render_html(data: ReportData, title: str = "ramp-edge report") -> str:
    """The whole report as one HTML string."""
    require("matplotlib", "plot")
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">From {html.escape(data.db_path)}: {len(data.quality)} quality, '
        f"{len(data.bench)} bench and {len(data.evals)} eval results. Generated {now} by "
        f"ramp-edge {html.escape(__version__)}.</p>",
        '<h2 id="quality">Size vs quality</h2>',
    ]
    if data.quality:
        parts += [quality_figure(data.quality), quality_table(data.quality)]
    else:
        parts.append('<p class="muted">No quality results yet (ramp-edge deploy stores them).</p>')
    parts += ['<h2 id="speed">Speed per device</h2>', speed_table(data.bench)]
    parts += ['<h2 id="fleet">Fleet: every run, failures first</h2>']
    parts.append(fleet_table(data.bench, data.evals))
    parts += ['<h2 id="tasks">Task accuracy</h2>', tasks_table(data.evals)]
    parts.append('<h2 id="allocations">Allocations: bits per weight by layer and role</h2>')
    if data.recipes:
        for label, recipe in data.recipes:
            counts = ", ".join(f"{t} x{n}" for t, n in sorted(recipe.type_counts().items()))
            parts += [
                f"<h3>{html.escape(label)}</h3>",
                f'<p class="muted">{html.escape(recipe.model_id)}; {html.escape(counts)}</p>',
                type_map_figure(label, recipe),
            ]
    else:
        parts.append('<p class="muted">No recipes found (pass --recipe FILE.recipe.json).</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out: str | Path,
    store: Store,
    recipe_paths: Iterable[str | Path] = (),
    title: str = "ramp-edge report",
) -> Path:
    """Render the report for `store` and write it atomically to `out`."""
    data = collect(store, recipe_paths)
    return atomic_write_text(Path(out), render_html(data, title))
