"""Wall time and peak RSS of allocate, export and the measured search per model size.

For each synthetic llama GGUF (scripts/make_synthetic_gguf.py; 0.1B-3B, F16 random weights)
each step runs in its own process under /usr/bin/time (peak RSS = the process's max resident
set, llama.cpp included, as it runs in-process), with an empty ramp-edge cache per size:

- allocate: the knapsack from a cold cache (`ramp-edge allocate --types ... --no-calibrate`);
- allocate-ray: the same on a local Ray with 2 CPUs (table cache emptied first), optional;
- export: `ramp-edge export --recipe` of that recipe;
- search: the measured-quality search on the cached table (`--max-evals`, EvalSettings
  n_ctx x n_chunks below, the quantized-tensor cache limited to --encoded-limit bytes).

Writes bench/scale.json and bench/scale.md.

    nice -n 10 .venv/bin/python scripts/bench_scale.py --models /tmp/rampscale/synth-{0.1,0.5}b.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / "ramp-edge"), "-q"]


def _timed(cmd: list[str], env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        peak_kb = int(tf.read().strip().splitlines()[-1])
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "stdout": done.stdout,
    }


def _child_search(args: argparse.Namespace) -> None:
    """In-process: the measured search with a small evaluation budget and a bounded cache."""
    from ramp_edge.allocate import knapsack as ks
    from ramp_edge.allocate.api import _recipe_from_types, check_types
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.allocate.search import SearchSettings, measured_search
    from ramp_edge.allocate.sensitivity import measure_sensitivity
    from ramp_edge.evaluate.assembled import AssembledEvaluator, EncodedTensors, EvalSettings
    from ramp_edge.models import resolve
    from ramp_edge.quant.export import plan_export
    from ramp_edge.source import open_source

    source = open_source(resolve(args.model))
    budget = parse_budget(args.budget)
    table = measure_sensitivity(source, check_types(tuple(args.types.split(","))))
    header = plan_export(source, _recipe_from_types(source, {}, "measured", budget)).header_bytes
    capacity = ks.capacity_for(table, budget.target_bytes(source.info.n_params), header)
    evaluator = AssembledEvaluator(
        source,
        settings=EvalSettings(n_ctx=args.n_ctx, n_chunks=args.n_chunks),
        cache=EncodedTensors(limit_bytes=args.encoded_limit),
        use_disk_cache=False,
    )
    result = measured_search(table, capacity, evaluator, settings=SearchSettings(args.max_evals))
    print(json.dumps({"evaluations": len(result.steps), "model_runs": evaluator.model_runs}))


def _child_ray(args: argparse.Namespace) -> None:
    """In-process: a local Ray with 2 CPUs, then the allocate CLI joins it (--ray-address)."""
    import ray

    from ramp_edge.cli import cli

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    try:
        cli.main(
            [
                "allocate",
                args.model,
                "--budget",
                args.budget,
                "--types",
                args.types,
                "--no-calibrate",
                "--json",
                "--out",
                str(args.out),
                "--ray-address",
                "auto",
            ],
            standalone_mode=False,
        )
    finally:
        # the last stdout line: the allocation alone, without Ray's start (~8 s here)
        print("\n" + json.dumps({"allocate_s": round(time.perf_counter() - start, 1)}))
        ray.shutdown()


def run(model: Path, args: argparse.Namespace, tmp: Path) -> dict:
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    info = open_source(resolve(str(model))).info
    cache = tmp / f"cache-{model.stem}"
    env = dict(os.environ, RAMP_EDGE_CACHE=str(cache), RAMP_EDGE_HOME=str(tmp / "home"))
    row: dict = {"model": model.name, "n_params": info.n_params, "file_bytes": model.stat().st_size}
    recipe = tmp / f"{model.stem}.json"
    base = ["--budget", args.budget, "--types", args.types, "--no-calibrate"]
    print(f"{model.name}: allocate", file=sys.stderr)
    row["allocate"] = _timed([*CLI, "allocate", str(model), *base, "--out", str(recipe)], env)
    if args.ray:
        shutil.rmtree(cache / "sensitivity", ignore_errors=True)
        print(f"{model.name}: allocate on Ray", file=sys.stderr)
        ray_recipe = tmp / f"{model.stem}-ray.json"
        me = [sys.executable, __file__, "--child", "ray", "--model", str(model), *_common(args)]
        row["allocate_ray"] = _timed([*me, "--out", str(ray_recipe)], env)
        row["ray_recipe_identical"] = _body(ray_recipe) == _body(recipe)
        last = row["allocate_ray"].pop("stdout").strip().splitlines()[-1]
        row["allocate_ray"].update(json.loads(last))
    print(f"{model.name}: export", file=sys.stderr)
    out = tmp / f"{model.stem}-mix.gguf"
    row["export"] = _timed(
        [*CLI, "export", str(model), "--recipe", str(recipe), "--out", str(out)], env
    )
    row["export_bytes"] = out.stat().st_size
    out.unlink()
    if args.max_evals:
        print(f"{model.name}: search", file=sys.stderr)
        me = [sys.executable, __file__, "--child", "search", "--model", str(model), *_common(args)]
        row["search"] = _timed(me, env)
        row["search"].update(json.loads(row["search"].pop("stdout").strip().splitlines()[-1]))
    for step in ("allocate", "allocate_ray", "export"):
        if step in row:
            row[step].pop("stdout", None)
    shutil.rmtree(cache, ignore_errors=True)
    return row


def _body(recipe: Path) -> dict:
    """The recipe without its provenance (creation time)."""
    doc = json.loads(recipe.read_text())
    doc.pop("provenance", None)
    return doc


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--budget", args.budget, "--types", args.types, "--max-evals", str(args.max_evals),
        "--n-ctx", str(args.n_ctx), "--n-chunks", str(args.n_chunks),
        "--encoded-limit", str(args.encoded_limit),
    ]  # fmt: skip


def write(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    from ramp_edge import schema

    settings = {k: getattr(args, k) for k in ("budget", "types", "max_evals", "n_ctx", "n_chunks")}
    settings["encoded_limit_bytes"] = args.encoded_limit
    settings["cpus"] = os.cpu_count()
    doc = schema.wrap("ramp-edge/bench", {"benchmark": "scale", "settings": settings, "rows": rows})
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = out / "scale.md"
    # the hand-written "## Notes" section (analysis, Ray scaling) survives regeneration
    old = md.read_text() if md.exists() else ""
    notes = old[old.index("## Notes") :] if "## Notes" in old else ""
    md.write_text(markdown(rows, settings) + ("\n" + notes if notes else ""))


def _cell(row: dict, step: str) -> str:
    got = row.get(step)
    if not got:
        return "-"
    inner = f" ({got['allocate_s']:.0f} s after start)" if "allocate_s" in got else ""
    return f"{got['wall_s']:.0f} s{inner} / {got['peak_rss_mb']:,.0f} MB"


def markdown(rows: list[dict], settings: dict) -> str:
    """The table part of bench/scale.md (write() keeps the hand-written "## Notes" after it)."""
    lines = [
        "# Scale: wall time and peak RSS per model size (issue 18)",
        "",
        "Written by `scripts/bench_scale.py` (see its docstring for the exact steps). Settings: "
        f"budget {settings['budget']}, candidate types {settings['types']}, no role "
        f"calibration, search --max-evals {settings['max_evals']} on {settings['n_chunks']} x "
        f"{settings['n_ctx']} tokens with the quantized-tensor cache limited to "
        f"{settings['encoded_limit_bytes'] / 2**30:.0f} GiB; {settings['cpus']} CPU cores shared "
        "with other jobs (`nice -n 10`). Peak RSS is /usr/bin/time's maximum resident set of "
        "the step's process (llama.cpp runs in it). Each cell: wall time / peak RSS.",
        "",
        "| model | params | F16 file | allocate (knapsack, cold) | allocate on Ray (2 CPUs) "
        "| export | search | allocate MB per 1e9 params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_b = r["allocate"]["peak_rss_mb"] / (r["n_params"] / 1e9)
        lines.append(
            f"| {r['model']} | {r['n_params'] / 1e9:.2f}B | {r['file_bytes'] / 2**30:.2f} GiB "
            f"| {_cell(r, 'allocate')} | {_cell(r, 'allocate_ray')} | {_cell(r, 'export')} "
            f"| {_cell(r, 'search')} | {per_b:,.0f} |"
        )
    same = [r["ray_recipe_identical"] for r in rows if "ray_recipe_identical" in r]
    if same:
        lines += ["", f"Ray recipe identical to the local one (provenance aside): {all(same)}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", type=Path, default=[])
    parser.add_argument("--budget", default="5bpw")
    parser.add_argument("--types", default="Q8_0,Q4_0")
    parser.add_argument("--max-evals", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=128)
    parser.add_argument("--n-chunks", type=int, default=1)
    parser.add_argument("--encoded-limit", type=int, default=1 << 30)
    parser.add_argument("--ray", action="store_true", help="also allocate on a local 2-CPU Ray")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--child", choices=("search", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--append", action="store_true", help="add rows to bench/scale.json")
    args = parser.parse_args()
    if args.child == "search":
        _child_search(args)
        return 0
    if args.child == "ray":
        _child_ray(args)
        return 0
    rows: list[dict] = []
    if args.append and (args.out / "scale.json").exists():
        rows = json.loads((args.out / "scale.json").read_text())["rows"]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        for model in args.models:
            rows = [r for r in rows if r["model"] != model.name]
            rows.append(run(model, args, Path(tmp)))
            rows.sort(key=lambda r: r["n_params"])
            write(rows, args, args.out)
            print(json.dumps(rows[-1]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
