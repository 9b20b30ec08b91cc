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
from collections.abc import Callable
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
    emit: Callable[[dict], None],
    anchor_set: str = "all",
    policies: dict[str, str] | None = None,
) -> None:
    """Measure the anchors and allocations of one model; every row (or skip) goes to `emit`."""
    model = resolve(model_ref)
    source = open_source(model)
    imatrix = None
    if imatrix_path:
        from ramp_edge.features.imatrix import read_imatrix

        imatrix = read_imatrix(imatrix_path)
    with tempfile.TemporaryDirectory() as tmp:
        anchor_specs = [
            *[(p, False) for p in PRESETS],
            *[(f"uniform:{u}", False) for u in UNIFORM],
        ]
        if imatrix is not None:
            anchor_specs += [
                (p, True)
                for p in (
                    "Q4_0",
                    "Q4_K_M",
                    "Q3_K_M",
                    "Q2_K",
                    "IQ4_NL",
                    "IQ4_XS",
                    "uniform:Q4_0",
                    "uniform:IQ4_NL",
                    "uniform:Q5_0",
                )
            ]
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
            method = spec + (" +imatrix" if with_imat else "")
            emit({"model": model_ref, "kind": "anchor", "method": method, **m})
        runs = [(m, m, None) for m in methods]
        runs += [(f"sac[{label}]", "sac", path) for label, path in (policies or {}).items()]
        for budget in budgets:
            b = parse_budget(budget)
            for label, method, policy in runs:
                if imatrix is not None and method in ("greedy", "knapsack", "sac"):
                    label += " +imatrix"
                row = {"model": model_ref, "kind": "allocation", "method": label, "budget": budget}
                start = time.perf_counter()
                try:
                    recipe = allocate(
                        source, b, method, policy=policy, imatrix=imatrix, imatrix_id=imatrix_path
                    )
                    search_s = time.perf_counter() - start
                    m = measure(
                        source, recipe, model.path, chunks, imatrix, tmp, f"{method}-{budget}"
                    )
                except (RampEdgeError, ImportError, FileNotFoundError) as err:
                    emit({**row, "skipped": str(err)})  # a row from an earlier run no longer holds
                    continue
                row["target_bytes"] = b.target_bytes(source.info.n_params)
                row["search_s"] = round(search_s, 2)
                row.update(m)
                for k in ("policy_size_ratio", "repaired_tensors"):
                    if k in recipe.notes:  # how far the repair had to move a policy's choice
                        row[k] = recipe.notes[k]
                emit(row)


# Anchors within this factor above our size count as "the same size class" (see below).
SIZE_CLASS = 1.05
GOAL_KLD = 0.15  # the goal: >= 15% lower mean KLD than the best anchor of that class
OURS = ("greedy", "knapsack", "sac")  # methods of ours (any suffix: +imatrix, [policy])


def best_anchor_at_or_above(anchors: list[dict], size: int) -> dict | None:
    """The yardstick: the best anchor (lowest KLD) at or above our size, within its size class.

    The class is [size, max(nearest larger anchor, size * SIZE_CLASS)]: the files a user would
    pick instead of ours. The best of *all* larger anchors is always Q8_0, twice the size,
    which compares nothing; the nearest alone can be a poor preset beside a good one of the
    same size (Gemma's Q3_K_S vs IQ4_NL+imatrix, both 7.2 bpw). An anchor with KLD 0 is the
    source file itself (a preset equal to the source's own types): every quantization loses
    to it, so it is listed but never the yardstick.
    """
    eligible = [a for a in anchors if a["size_bytes"] >= size and a["mean_kld"] > 0]
    if not eligible:
        return None
    nearest = min(a["size_bytes"] for a in eligible)
    limit = max(nearest, size * SIZE_CLASS)
    return min((a for a in eligible if a["size_bytes"] <= limit), key=lambda a: a["mean_kld"])


def _ours(method: str) -> bool:
    return method.split()[0].split("[")[0] in OURS


def _rel(ours: float, theirs: dict | None) -> str:
    if theirs is None:
        return "n/a"
    return f"{100 * (ours / theirs['mean_kld'] - 1):+.1f}%"


def _model_sections(model: str, res: dict) -> list[str]:
    anchors = res["anchors"]
    rows = sorted(res["allocations"], key=lambda r: (r["target_bytes"], r["method"]))
    lines = [
        f"## {model}",
        "",
        "### Anchors (llama.cpp presets and uniform types)",
        "",
        "| recipe | bytes | bpw | PPL | mean KLD | same top p |",
        "|---|---|---|---|---|---|",
    ]
    for a in sorted(anchors, key=lambda r: (r["size_bytes"], r["method"])):
        lines.append(
            f"| {a['method']} | {a['size_bytes']:,} | {a['bpw']:.3f} | {a['ppl']:.3f} | "
            f"{a['mean_kld']:.4f} | {100 * a['same_top_p']:.1f}% |"
        )
    lines += [
        "",
        "### Allocations",
        "",
        "'policy size' is a SAC policy's own choice against the bytes it had, before the repair "
        "to the budget (> 1: the repair had to downgrade tensors).",
        "",
        "| budget | method | bytes | bpw | PPL | mean KLD | search s | policy size "
        "| best anchor ≥ size | KLD vs it |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = best_anchor_at_or_above(anchors, r["size_bytes"])
        ratio = r.get("policy_size_ratio")
        lines.append(
            f"| {r['budget']} | {r['method']} | {r['size_bytes']:,} | {r['bpw']:.3f} | "
            f"{r['ppl']:.3f} | {r['mean_kld']:.4f} | {r['search_s']:.1f} | "
            f"{'' if ratio is None else f'{ratio:.3f}'} | "
            f"{best['method'] if best else '-'} | {_rel(r['mean_kld'], best)} |"
        )
    # Goals: the best of our methods at each budget against its yardstick.
    lines += [
        "",
        "### Goals",
        "",
        f"Goal 1: at each budget, >= {100 * GOAL_KLD:.0f}% lower mean KLD than the best anchor "
        f"of equal or larger size (size class: up to {100 * (SIZE_CLASS - 1):.0f}% larger, "
        "or the nearest larger anchor).",
        "",
        "| budget | ours (best) | bytes | mean KLD | yardstick | its bytes | its KLD "
        "| KLD vs it | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    met = total = 0
    for budget in dict.fromkeys(r["budget"] for r in rows):
        mine = [r for r in rows if r["budget"] == budget and _ours(r["method"])]
        if not mine:
            continue
        r = min(mine, key=lambda r: (r["mean_kld"], not r["method"].startswith("knapsack")))
        best = best_anchor_at_or_above(anchors, r["size_bytes"])
        ok = best is not None and r["mean_kld"] <= (1 - GOAL_KLD) * best["mean_kld"]
        met += ok
        total += best is not None
        lines.append(
            f"| {budget} | {r['method']} | {r['size_bytes']:,} | {r['mean_kld']:.4f} | "
            + (
                f"{best['method']} | {best['size_bytes']:,} | {best['mean_kld']:.4f} | "
                if best
                else "- | - | - | "
            )
            + f"{_rel(r['mean_kld'], best)} | {'yes' if ok else 'no' if best else 'n/a'} |"
        )
    lines += ["", f"Met at {met} of {total} budgets with a yardstick.", ""]
    q4km = [a for a in anchors if a["method"] == "Q4_K_M"]
    if q4km and q4km[0]["mean_kld"] > 0:
        ref = q4km[0]
        reach = [r for r in rows if _ours(r["method"]) and r["ppl"] <= ref["ppl"]]
        if reach:
            r = min(reach, key=lambda r: (r["size_bytes"], not r["method"].startswith("knapsack")))
            lines.append(
                f"Goal 2: Q4_K_M's perplexity ({ref['ppl']:.3f} at {ref['size_bytes']:,} B) is "
                f"reached by {r['method']} at {r['budget']} (PPL {r['ppl']:.3f}, "
                f"{r['size_bytes']:,} B): **{100 * r['size_bytes'] / ref['size_bytes']:.0f}% of "
                "Q4_K_M's bytes** (goal <= 94%)."
            )
        else:
            lines.append("Goal 2: no allocation in this sweep reaches Q4_K_M's perplexity.")
    elif q4km:
        lines.append(
            "Goal 2: Q4_K_M is this model's source format (KLD 0, the reference itself): "
            "its perplexity is the reference's and cannot be reached by a smaller file."
        )
    lines.append("")
    return lines


def _transfer_section(doc: dict) -> list[str]:
    """SAC policies applied to each model: trained on it vs zero-shot from the other."""
    lines = [
        "## Zero-shot transfer",
        "",
        "`sac` is the shipped policy (its training models: the policies section below); "
        "`sac[NAME]` is bench/policies/sac-NAME.zip. Where a policy was not trained on the "
        "model, its row is zero-shot (bench/transfer.md is the leave-one-family-out table). "
        "Every row is the real exported file; knapsack is the exact optimum of the "
        "surrogate both policies were trained on.",
        "",
        "| model | budget | knapsack KLD | sac (SmolLM2) KLD | policy size | "
        "sac[gemma3-270m] KLD | policy size |",
        "|---|---|---|---|---|---|---|",
    ]
    any_row = False
    for model, res in doc["results"].items():
        by = {(r["budget"], r["method"]): r for r in res["allocations"]}
        for budget in dict.fromkeys(r["budget"] for r in res["allocations"]):
            ks_, a, b = (by.get((budget, m)) for m in ("knapsack", "sac", "sac[gemma3-270m]"))
            if not (a and b):
                continue
            any_row = True

            def cell(r):
                ratio = r.get("policy_size_ratio")
                return f"{r['mean_kld']:.4f} | {'' if ratio is None else f'{ratio:.3f}'}"

            lines.append(
                f"| {model} | {budget} | {ks_['mean_kld'] if ks_ else float('nan'):.4f} | "
                f"{cell(a)} | {cell(b)} |"
            )
    return [*lines, ""] if any_row else []


def _policies_section(out: Path) -> list[str]:
    """How each SAC policy in the table was trained, from the metadata inside its zip."""
    import zipfile

    from ramp_edge import paths

    found = [("sac", paths.data_dir() / "policies" / "default.zip")]
    found += [
        (f"sac[{p.stem.removeprefix('sac-')}]", p)
        for p in sorted((out / "policies").glob("*.zip"))
        if not p.name.endswith(".ckpt.zip")
    ]
    lines = [
        "## SAC policies",
        "",
        "Training: knapsack demonstrations (the DP optimum of each training model at budgets "
        "every 0.1 bpw) fill the replay buffer, the actor is behaviour-cloned on them, the "
        "critic warms up, then SAC fine-tunes on the reward; the policy kept is the best of "
        "periodic deterministic evaluations (mean episode return over the training budgets; "
        "step 0 = the cloned policy).",
        "",
        "| policy | trained on | budgets (bpw) | SAC steps | demo transitions | BC mse | "
        "return at step 0 | best return | at step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, path in found:
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("ramp_edge.json"))
        except (OSError, KeyError, zipfile.BadZipFile):
            continue
        demo, ev = meta.get("demonstrations", {}), meta.get("evaluation", {})
        hist = ev.get("history") or [[0, float("nan")]]
        lines.append(
            f"| {label} | {', '.join(meta.get('models', []))} | "
            f"{', '.join(str(b) for b in meta.get('budgets_bpw', []))} | {meta.get('steps')} | "
            f"{demo.get('transitions', '-')} | {demo.get('bc_mse', '-')} | {hist[0][1]} | "
            f"{ev.get('best_return', '-')} | {ev.get('best_step', '-')} |"
        )
    return [*lines, ""]


def write_report(doc: dict, out: Path) -> None:
    lines = [
        "# Allocation benchmark",
        "",
        f"WikiText-2 test, ctx 512, {doc['chunks']} chunks of 512 tokens per file; every number "
        "is measured on the exported GGUF with llama.cpp. Reference = the dequantized source "
        "model. Written by `scripts/bench_allocation.py` from bench/allocation.json.",
        "",
        "The built-in models ship already quantized (SmolLM2-135M as Q4_1, Gemma-3-270M as "
        "Q4_K_M), so the reference is their dequantized weights and a tensor kept at its source "
        "type costs nothing: an allocation at or above the source's size can be lossless (KLD "
        "0), and so is llama.cpp's preset of the source's own type. Methods marked +imatrix "
        "quantize with an importance matrix from `ramp-edge features --imatrix` (WikiText-2 "
        "validation), as careful llama.cpp users do.",
        "",
    ]
    for model, res in doc["results"].items():
        lines += _model_sections(model, res)
    lines += _transfer_section(doc)
    lines += _policies_section(out)
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
    ap.add_argument(
        "--report-only", action="store_true", help="Rewrite the .md/.png from the JSON."
    )
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
        if "skipped" in row:
            print(f"skip {row['method']}@{row['budget']}: {row['skipped']}", flush=True)
        else:
            print(json.dumps(row), flush=True)
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
            emit,
            anchor_set=args.anchors,
            policies=policies,
        )
    write_report(doc, out)
    plot(doc, out)


if __name__ == "__main__":
    main()
