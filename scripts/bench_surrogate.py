"""How far can the knapsack's surrogate be trusted? Rank correlation with the measured KLD.

For each model: N random allocations spread over the budget range (the knapsack solved on the
calibrated error table with every tensor's errors multiplied by random log-normal noise, at a
random size between the smallest legal file and just below the source's size), each exported
to a real GGUF and measured with llama.cpp (mean KLD on WikiText-2 test windows, through the
assembled evaluator, which writes exactly the file `ramp-edge export` would). The surrogate is
the sum of the allocation's calibrated per-tensor errors, what the knapsack minimises. Writes
bench/surrogate.{json,md}: Spearman's rank correlation per budget band.

    .venv/bin/python scripts/bench_surrogate.py --model smollm2-135m --n 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ramp_edge import paths, schema
from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.api import _recipe_from_types
from ramp_edge.allocate.budget import parse_budget
from ramp_edge.allocate.sensitivity import (
    DEFAULT_CANDIDATES,
    SensitivityTable,
    TensorCosts,
    calibrate,
    measure_sensitivity,
)
from ramp_edge.evaluate.assembled import AssembledEvaluator, EvalSettings
from ramp_edge.features.imatrix import read_imatrix
from ramp_edge.models import resolve
from ramp_edge.quant.export import plan_export
from ramp_edge.source import open_source

BANDS = ((0.0, 4.5), (4.5, 5.0), (5.0, 5.5), (5.5, 6.5), (6.5, 99.0))


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def noisy(table: SensitivityTable, rng: np.random.Generator, sigma: float) -> SensitivityTable:
    return SensitivityTable(
        table.model_id,
        tuple(
            TensorCosts(
                t.name,
                t.shape,
                t.n_params,
                tuple((q, b, e * float(rng.lognormal(0, sigma))) for q, b, e in t.options),
            )
            for t in table.tensors
        ),
        table.fixed_bytes,
    )


def run_model(model_ref: str, n: int, chunks: int, seed: int) -> dict:
    model = resolve(model_ref)
    source = open_source(model)
    imatrix_path = paths.cache_dir("bench-imatrix") / f"{model_ref}.imatrix.gguf"
    imatrix = read_imatrix(imatrix_path) if imatrix_path.exists() else None
    table = measure_sensitivity(
        source,
        DEFAULT_CANDIDATES,
        imatrix=imatrix,
        imatrix_id=str(imatrix_path) if imatrix else None,
    )
    table = calibrate(
        source, table, imatrix=imatrix, imatrix_id=str(imatrix_path) if imatrix else None
    )
    evaluator = AssembledEvaluator(
        source,
        imatrix=imatrix,
        variant=f"imatrix={imatrix_path if imatrix else None}",
        settings=EvalSettings(data="wikitext2-test", n_chunks=chunks),
    )
    n_params = source.info.n_params
    source_bpw = Path(model.path).stat().st_size * 8 / n_params
    header = plan_export(
        source, _recipe_from_types(source, {}, "x", parse_budget("4bpw"))
    ).header_bytes
    lo, _ = ks.min_max_bytes(table)
    lo_bpw = (lo + header + table.fixed_bytes) * 8 / n_params
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        bpw = float(rng.uniform(max(lo_bpw + 0.05, 3.0), source_bpw - 0.05))
        sigma = float(rng.choice([0.5, 1.0, 2.0]))
        capacity = ks.capacity_for(table, int(bpw * n_params / 8), header)
        choice = ks.allocate_knapsack(noisy(table, rng, sigma), max(capacity, lo))
        start = time.perf_counter()
        ev = evaluator.evaluate(ks.choice_types(table, choice))
        row = {
            "bpw": round(ev.size_bytes * 8 / n_params, 4),
            "noise_sigma": sigma,
            "surrogate": ks.choice_error(table, choice),
            "kld": ev.mean_kld,
            "seconds": round(time.perf_counter() - start, 2),
        }
        print(json.dumps({"model": model_ref, "i": i, **row}), flush=True)
        rows.append(row)
    bands = []
    for a, b in BANDS:
        sel = [r for r in rows if a <= r["bpw"] < b]
        bands.append(
            {
                "band": f"{a:g}-{b:g} bpw" if b < 99 else f">= {a:g} bpw",
                "n": len(sel),
                "spearman": spearman([r["surrogate"] for r in sel], [r["kld"] for r in sel]),
            }
        )
    overall = spearman([r["surrogate"] for r in rows], [r["kld"] for r in rows])
    return {
        "model": model_ref,
        "source_bpw": round(source_bpw, 3),
        "tokens": f"wikitext2-test {chunks}x512",
        "overall_spearman": overall,
        "bands": bands,
        "rows": rows,
    }


def summarise(model_ref: str, source_bpw: float, chunks: int, rows: list[dict]) -> dict:
    bands = []
    for a, b in BANDS:
        sel = [r for r in rows if a <= r["bpw"] < b]
        bands.append(
            {
                "band": f"{a:g}-{b:g} bpw" if b < 99 else f">= {a:g} bpw",
                "n": len(sel),
                "spearman": spearman([r["surrogate"] for r in sel], [r["kld"] for r in sel]),
            }
        )
    return {
        "model": model_ref,
        "source_bpw": round(source_bpw, 3),
        "tokens": f"wikitext2-test {chunks}x512",
        "overall_spearman": spearman([r["surrogate"] for r in rows], [r["kld"] for r in rows]),
        "bands": bands,
        "rows": rows,
    }


def from_log(log: Path, model_ref: str, chunks: int) -> dict:
    rows = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and f'"model": "{model_ref}"' in line:
            r = json.loads(line)
            rows.append({k: r[k] for k in ("bpw", "noise_sigma", "surrogate", "kld", "seconds")})
    model = resolve(model_ref)
    source = open_source(model)
    source_bpw = Path(model.path).stat().st_size * 8 / source.info.n_params
    return summarise(model_ref, source_bpw, chunks, rows)


def write_report(doc: dict, out: Path) -> None:
    lines = [
        "# Surrogate fidelity: does the knapsack's objective rank allocations like the model does?",
        "",
        "Written by `scripts/bench_surrogate.py`. Random allocations (the knapsack on the "
        "calibrated error table with log-normal noise on every error, at random sizes below the "
        "source's) exported to GGUF and measured with llama.cpp: mean KLD against the "
        "dequantized source on WikiText-2 test windows. Surrogate = the summed calibrated "
        "per-tensor error the knapsack minimises. Spearman's rho = 1 means the surrogate ranks "
        "allocations exactly as the model does; within a band, it is what decides between "
        "allocations of similar size.",
        "",
    ]
    for m in doc["models"]:
        lines += [
            f"## {m['model']} (source {m['source_bpw']} bpw; {m['tokens']}; "
            f"{len(m['rows'])} allocations)",
            "",
            f"Overall Spearman rho: **{m['overall_spearman']:.3f}** (dominated by size).",
            "",
            "| band | allocations | Spearman rho |",
            "|---|---|---|",
        ]
        for b in m["bands"]:
            rho = "n/a" if b["spearman"] is None else f"{b['spearman']:.3f}"
            lines.append(f"| {b['band']} | {b['n']} | {rho} |")
        lines.append("")
    (out / "surrogate.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench")
    ap.add_argument(
        "--from-log",
        help="Summarise the per-allocation JSON lines a (possibly interrupted) run printed.",
    )
    args = ap.parse_args()
    out = Path(args.out)
    path = out / "surrogate.json"
    doc = (
        json.loads(path.read_text())
        if path.exists()
        else schema.wrap("ramp-edge/bench", {"benchmark": "surrogate", "models": []})
    )
    for model_ref in args.model or ["smollm2-135m"]:
        if args.from_log:
            result = from_log(Path(args.from_log), model_ref, args.chunks)
        else:
            result = run_model(model_ref, args.n, args.chunks, args.seed)
        doc["models"] = [m for m in doc["models"] if m["model"] != model_ref] + [result]
        tmp = path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(path)
    write_report(doc, out)


if __name__ == "__main__":
    main()
