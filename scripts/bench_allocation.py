"""Benchmark the allocators against llama.cpp presets and uniform types at equal size.

For each model and budget: every method's recipe is exported to a real GGUF and measured
(WikiText-2 test perplexity and mean KLD against the dequantized source). Writes
bench/allocation.json, bench/allocation.md and bench/allocation_pareto.png.

    .venv/bin/python scripts/bench_allocation.py --model smollm2-135m --chunks 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ramp_edge import schema
from ramp_edge.allocate.api import allocate
from ramp_edge.allocate.budget import parse_budget
from ramp_edge.errors import RampEdgeError
from ramp_edge.evaluate.perplexity import kl_divergence
from ramp_edge.models import resolve
from ramp_edge.quant.export import export_model
from ramp_edge.recipe import build
from ramp_edge.source import open_source

PRESETS = [
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_0",
    "Q4_1",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "IQ4_NL",
    "IQ4_XS",
]
UNIFORM = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q8_0"]


def measure(source, recipe, model_path, chunks, imatrix, tmp, label) -> dict:
    out = Path(tmp) / f"{label.replace(':', '_').replace('/', '_')}.gguf"
    export_model(source, recipe, out, imatrix=imatrix)
    kld = kl_divergence(out, model_path, n_chunks=chunks)
    size = out.stat().st_size
    out.unlink()
    return {
        "size_bytes": size,
        "bpw": round(size * 8 / source.info.n_params, 4),
        "ppl": round(kld.ppl_cand, 4),
        "mean_kld": round(kld.mean_kld, 6),
        "kld_p99": round(kld.kld_p99, 5),
        "same_top_p": round(kld.same_top_p, 4),
        "ppl_ref": round(kld.ppl_ref, 4),
    }


def run_model(
    model_ref: str,
    budgets: list[str],
    methods: list[str],
    chunks: int,
    imatrix_path: str | None,
    anchor_set: str = "all",
    policies: dict[str, str] | None = None,
    emit=None,
) -> dict:
    model = resolve(model_ref)
    source = open_source(model)
    imatrix = None
    if imatrix_path:
        from ramp_edge.features.imatrix import read_imatrix

        imatrix = read_imatrix(imatrix_path)
    anchors, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        anchor_specs = [(p, False) for p in PRESETS] + [(f"uniform:{u}", False) for u in UNIFORM]
        if imatrix is not None:
            anchor_specs += [(p, True) for p in ("Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_NL")]
        wanted = {"all": anchor_specs, "none": [], "imatrix": [a for a in anchor_specs if a[1]]}
        for spec, with_imat in wanted[anchor_set]:
            try:
                recipe = build(source, spec, has_imatrix=with_imat)
                m = measure(
                    source, recipe, model.path, chunks, imatrix if with_imat else None, tmp, spec
                )
            except RampEdgeError as err:
                print(f"skip {spec}: {err}", flush=True)
                continue
            row = {
                "model": model_ref,
                "kind": "anchor",
                "method": spec + (" +imatrix" if with_imat else ""),
                **m,
            }
            anchors.append(row)
            print(json.dumps(row), flush=True)
            if emit:
                emit(row)
        runs = [(m, m, None) for m in methods]
        runs += [(f"sac[{label}]", "sac", path) for label, path in (policies or {}).items()]
        for budget in budgets:
            b = parse_budget(budget)
            for label, method, policy in runs:
                start = time.perf_counter()
                try:
                    recipe = allocate(
                        source, b, method, policy=policy, imatrix=imatrix, imatrix_id=imatrix_path
                    )
                except (RampEdgeError, ImportError, FileNotFoundError) as err:
                    print(f"skip {label}@{budget}: {err}", flush=True)
                    if emit:  # a row from an earlier run no longer holds
                        emit({"model": model_ref, "kind": "allocation", "method": label,
                              "budget": budget, "skipped": str(err)})
                    continue
                search_s = time.perf_counter() - start
                try:
                    m = measure(
                        source, recipe, model.path, chunks, imatrix, tmp, f"{method}-{budget}"
                    )
                except RampEdgeError as err:
                    print(f"skip {method}@{budget}: {err}", flush=True)
                    continue
                row = {
                    "model": model_ref,
                    "kind": "allocation",
                    "method": label,
                    "budget": budget,
                    "target_bytes": b.target_bytes(source.info.n_params),
                    "search_s": round(search_s, 2),
                    **m,
                }
                if imatrix is not None and method in ("greedy", "knapsack", "sac"):
                    row["method"] = label + " +imatrix"
                rows.append(row)
                print(json.dumps(row), flush=True)
                if emit:
                    emit(row)
    return {"anchors": anchors, "allocations": rows}


def best_anchor_at_or_above(anchors: list[dict], size: int) -> dict | None:
    # An anchor with KLD 0 is the source file itself (e.g. llama.cpp's Q4_1 preset of a Q4_1
    # source): every quantization loses to it, so it is listed but not used as the yardstick.
    eligible = [a for a in anchors if a["size_bytes"] >= size and a["mean_kld"] > 0]
    # The nearest anchor at or above our size: the file a user would otherwise pick. (The best
    # of *all* larger anchors is always Q8_0, twice the size, which compares nothing.)
    return min(eligible, key=lambda a: (a["size_bytes"], a["mean_kld"])) if eligible else None


def write_report(doc: dict, out: Path) -> None:
    lines = [
        "# Allocation benchmark",
        "",
        f"WikiText-2 test, ctx 512, {doc['chunks']} chunks per file; every number is measured on the "
        "exported GGUF. Reference = the dequantized source model. 'vs best anchor' compares the mean KLD "
        "with the best llama.cpp preset or uniform type (imatrix or not) whose file is at least as large.",
        "",
    ]
    for model, res in doc["results"].items():
        lines += [
            f"## {model}",
            "",
            "### Anchors (llama.cpp presets and uniform types)",
            "",
            "| recipe | bytes | bpw | PPL | mean KLD | same top p |",
            "|---|---|---|---|---|---|",
        ]
        for a in sorted(res["anchors"], key=lambda r: r["size_bytes"]):
            lines.append(
                f"| {a['method']} | {a['size_bytes']:,} | {a['bpw']:.3f} | {a['ppl']:.3f} | "
                f"{a['mean_kld']:.4f} | {100 * a['same_top_p']:.1f}% |"
            )
        lines += [
            "",
            "### Allocations",
            "",
            "| budget | method | bytes | bpw | PPL | mean KLD | search s | best anchor ≥ size | KLD vs it |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(res["allocations"], key=lambda r: (r["target_bytes"], r["method"])):
            best = best_anchor_at_or_above(res["anchors"], r["size_bytes"])
            if best is None:
                rel = "n/a"
            elif best["mean_kld"] == 0:
                rel = "anchor lossless"
            else:
                rel = f"{100 * (r['mean_kld'] / best['mean_kld'] - 1):+.1f}%"
            lines.append(
                f"| {r['budget']} | {r['method']} | {r['size_bytes']:,} | {r['bpw']:.3f} | "
                f"{r['ppl']:.3f} | {r['mean_kld']:.4f} | {r['search_s']:.1f} | "
                f"{best['method'] if best else '-'} | {rel} |"
            )
        lines.append("")
    (out / "allocation.md").write_text("\n".join(lines) + "\n")


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(doc["results"])
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.5 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        res = doc["results"][model]
        for col, metric in enumerate(("mean_kld", "ppl")):
            ax = axes[row][col]
            a = res["anchors"]
            ax.scatter(
                [x["size_bytes"] / 2**20 for x in a],
                [x[metric] for x in a],
                marker="x",
                color="gray",
                label="llama.cpp presets / uniform",
            )
            for x in a:
                ax.annotate(
                    x["method"], (x["size_bytes"] / 2**20, x[metric]), fontsize=6, color="gray"
                )
            for method in sorted({r["method"] for r in res["allocations"]}):
                pts = sorted(
                    (r["size_bytes"] / 2**20, r[metric])
                    for r in res["allocations"]
                    if r["method"] == method
                )
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            ax.set_xlabel("file size (MiB)")
            ax.set_ylabel("mean KLD" if metric == "mean_kld" else "WikiText-2 PPL")
            ax.set_yscale("log")
            ax.set_title(f"{model}: size vs {metric}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "allocation_pareto.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--budgets", default="4.2bpw,4.6bpw,5.0bpw,5.5bpw,6.5bpw")
    ap.add_argument("--methods", default="uniform,preset,greedy,knapsack,sac")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument(
        "--imatrix", default=None, help="imatrix GGUF for the +imatrix anchors and methods"
    )
    ap.add_argument(
        "--anchors",
        choices=("all", "none", "imatrix"),
        default="all",
        help="Which presets/uniform anchors to measure (imatrix: only the +imatrix ones).",
    )
    ap.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="Also allocate with this SAC policy, reported as sac[LABEL]; repeatable.",
    )
    ap.add_argument("--out", default="bench")
    ap.add_argument("--report-only", action="store_true", help="Rewrite the .md/.png from the JSON.")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    if args.report_only:
        doc = json.loads((out / "allocation.json").read_text())
        write_report(doc, out)
        plot(doc, out)
        return
    # Results merge into the existing JSON: a row replaces the row of the same model, kind,
    # method and budget, so models, methods and policies can be measured in separate runs.
    path = out / "allocation.json"
    doc = (
        json.loads(path.read_text())
        if path.exists()
        else schema.wrap("ramp-edge/bench", {"benchmark": "allocation", "chunks": args.chunks})
    )
    doc.setdefault("results", {})
    policies = dict(p.split("=", 1) for p in args.policy)

    def emit(row: dict) -> None:
        res = doc["results"].setdefault(row["model"], {"anchors": [], "allocations": []})
        key = "anchors" if row["kind"] == "anchor" else "allocations"
        same = ("kind", "method", "budget")
        res[key] = [r for r in res[key] if any(r.get(k) != row.get(k) for k in same)]
        if "skipped" not in row:
            res[key].append(row)
        tmp = path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(path)

    methods = [m for m in args.methods.split(",") if m]
    for model in args.model or ["smollm2-135m"]:
        run_model(
            model,
            args.budgets.split(","),
            methods,
            args.chunks,
            args.imatrix,
            anchor_set=args.anchors,
            policies=policies,
            emit=emit,
        )
    write_report(doc, out)
    plot(doc, out)


if __name__ == "__main__":
    main()
