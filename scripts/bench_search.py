"""Benchmark the measured-quality search against llama.cpp presets and the knapsack.

For each model and budget (strictly below the source file's size): the knapsack (+imatrix) and
the measured search (+imatrix, evaluations on WikiText-2 *validation* tokens) are exported to
real GGUFs and measured on WikiText-2 *test* tokens the search never saw (same 6x512 windows
as bench/allocation.md), beside every llama.cpp preset and uniform type, with and without the
importance matrix. Each row names the best anchor of equal or larger size. Anchors are
measured once and kept in the JSON (a re-run reuses them). Writes bench/search.{json,md}.

    .venv/bin/python scripts/bench_search.py --model smollm2-135m --budgets 4.0,4.4,4.6,5.0,5.5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ramp_edge import paths, schema
from ramp_edge.allocate.api import allocate
from ramp_edge.allocate.budget import parse_budget
from ramp_edge.allocate.search import SearchSettings
from ramp_edge.errors import RampEdgeError
from ramp_edge.evaluate.perplexity import kl_divergence
from ramp_edge.features.imatrix import read_imatrix
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
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "IQ4_NL",
    "IQ4_XS",
    "IQ3_M",
    "IQ3_S",
    "IQ3_XS",
    "IQ3_XXS",
    "IQ2_M",
    "IQ2_S",
]
# Presets whose i-quants llama.cpp advises (or requires) an imatrix for: measured with it only.
IMATRIX_ONLY = {"IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S"}
UNIFORM = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "MXFP4"]
CHUNKS = 6  # WikiText-2 test windows of 512 tokens, as bench/allocation


def imatrix_for(model_ref: str) -> Path:
    """The model's importance matrix from WikiText-2 validation (`ramp-edge features`), cached."""
    path = paths.cache_dir("bench-imatrix") / f"{model_ref}.imatrix.gguf"
    if not path.exists():
        exe = Path(sys.executable).with_name("ramp-edge")
        subprocess.run(
            [str(exe), "features", model_ref, "--imatrix", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def measure(source, recipe, model_path, imatrix, tmp, hessians=None) -> dict:
    out = Path(tmp) / "candidate.gguf"
    export_model(source, recipe, out, imatrix=imatrix, hessians=hessians)
    kld = kl_divergence(out, model_path, n_chunks=CHUNKS)
    size = out.stat().st_size
    out.unlink()
    return {
        "bytes": size,
        "bpw": round(size * 8 / source.info.n_params, 4),
        "kld": round(kld.mean_kld, 6),
        "ppl": round(kld.ppl_cand, 4),
        "same_top_p": round(kld.same_top_p, 4),
    }


def measure_anchors(model_ref, source, model_path, imatrix, known: list[dict]) -> list[dict]:
    have = {a["method"] for a in known}
    out = list(known)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [(p, False) for p in PRESETS if p not in IMATRIX_ONLY]
        specs += [(f"uniform:{u}", False) for u in UNIFORM]
        specs += [(p, True) for p in PRESETS] + [(f"uniform:{u}", True) for u in UNIFORM]
        for spec, with_imat in specs:
            label = spec + (" +imatrix" if with_imat else "")
            if label in have:
                continue
            try:
                recipe = build(source, spec, has_imatrix=with_imat)
                m = measure(source, recipe, model_path, imatrix if with_imat else None, tmp)
            except RampEdgeError as err:
                print(f"skip anchor {label}: {err}", flush=True)
                continue
            row = {"model": model_ref, "method": label, **m}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


SIZE_CLASS = 1.05  # anchors up to 5% larger than ours are "the same size" (bench/allocation)


def best_anchor(anchors: list[dict], size: int, source_bytes: int) -> dict | None:
    """The anchor to beat: the lowest-KLD anchor of equal or larger size within the size class
    (up to 5% larger; where no anchor is that close, up to 5% above the nearest larger one).
    Anchors at or above the source's size are
    excluded: there a preset of the source's type is the source written back (KLD 0)."""
    larger = [a for a in anchors if size <= a["bytes"] < source_bytes and a["kld"] > 0]
    if not larger:
        return None
    # The class starts at our size, or at the nearest larger anchor where none is within 5%.
    base = max(size, min(a["bytes"] for a in larger))
    return min((a for a in larger if a["bytes"] <= base * SIZE_CLASS), key=lambda a: a["kld"])


def refresh_anchors(doc: dict) -> None:
    """Recompute every row's best anchor (rows and anchors may come from separate runs)."""
    for r in doc.get("rows", []):
        source_bytes = doc.get("source_bytes", {}).get(r["model"], 1 << 62)
        a = best_anchor(doc["anchors"].get(r["model"], []), r["bytes"], source_bytes)
        r["best_anchor"] = a["method"] if a else None
        r["best_anchor_bytes"] = a["bytes"] if a else None
        r["best_anchor_kld"] = a["kld"] if a else None
        r["kld_vs_anchor"] = round(r["kld"] / a["kld"] - 1, 4) if a else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--budgets", default="4.0,4.4,4.6,5.0,5.5")
    ap.add_argument(
        "--methods",
        default="knapsack,measured,knapsack+gptq,measured+gptq",
        help="Allocation methods; a +gptq suffix encodes with GPTQ error compensation "
        "(+gptq-probes: and scales the error table by role probes instead of the Fisher).",
    )
    ap.add_argument("--max-evals", type=int, default=80)
    ap.add_argument(
        "--gptq-uniform",
        default="",
        help="Also measure these uniform types GPTQ-encoded (e.g. IQ4_NL,Q4_0): what the "
        "encoding alone gains over llama.cpp's, beside the anchors (not anchors themselves).",
    )
    ap.add_argument("--out", default="bench")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--anchors-from",
        help="Take anchors from bench/allocation.json (same files, same test windows) instead "
        "of measuring them again.",
    )
    args = ap.parse_args()
    out = Path(args.out)
    path = out / "search.json"
    doc = (
        json.loads(path.read_text())
        if path.exists()
        else schema.wrap("ramp-edge/bench", {"benchmark": "search", "chunks": CHUNKS})
    )
    doc.setdefault("anchors", {})
    doc.setdefault("rows", [])
    if args.anchors_from:
        old = json.loads(Path(args.anchors_from).read_text())["results"]
        for model_ref in args.model or ["smollm2-135m"]:
            if doc["anchors"].get(model_ref) or model_ref not in old:
                continue
            doc["anchors"][model_ref] = [
                {
                    "model": model_ref,
                    "method": a["method"],
                    "bytes": a["size_bytes"],
                    "bpw": a["bpw"],
                    "kld": a["mean_kld"],
                    "ppl": a["ppl"],
                    "same_top_p": a.get("same_top_p"),
                    "from": args.anchors_from,
                }
                for a in old[model_ref]["anchors"]
            ]
    if not args.report_only:
        for model_ref in args.model or ["smollm2-135m"]:
            run_model(model_ref, args, doc, path)
            if args.gptq_uniform:
                run_gptq_uniform(model_ref, args.gptq_uniform.split(","), doc, path)
    refresh_anchors(doc)
    save(doc, path)
    write_report(doc, out)


def save(doc: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def run_model(model_ref: str, args, doc: dict, path: Path) -> None:
    model = resolve(model_ref)
    source = open_source(model)
    source_bytes = Path(model.path).stat().st_size
    imatrix_path = imatrix_for(model_ref)
    imatrix = read_imatrix(imatrix_path)
    known = doc["anchors"].get(model_ref, [])
    if not any("from" in a for a in known):  # anchors taken from another bench stay as they are
        doc["anchors"][model_ref] = measure_anchors(model_ref, source, model.path, imatrix, known)
    doc.setdefault("source_bytes", {})[model_ref] = source_bytes
    save(doc, path)
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets.split(","):
            b = parse_budget(budget if budget[-1].isalpha() else budget + "bpw")
            if b.target_bytes(source.info.n_params) >= source_bytes:
                print(f"skip {budget}: not below the source file's size", flush=True)
                continue
            for label in args.methods.split(","):
                method, _, encoding = label.partition("+")
                imat, imat_id, hessians, sensitivity = imatrix, str(imatrix_path), None, None
                start = time.perf_counter()
                if encoding.startswith("gptq"):  # exactly what `allocate --method measured` does
                    from ramp_edge.features.calibration import calibrate_model

                    cal = calibrate_model(model)
                    imat, imat_id, hessians = dict(cal.imatrix), cal.id, cal.hessians
                    # "gptq-probes": the error table scaled by role probes, not the Fisher
                    sensitivity = None if encoding == "gptq-probes" else cal.sensitivity or None
                try:
                    recipe = allocate(
                        source,
                        b,
                        method,
                        imatrix=imat,
                        imatrix_id=imat_id,
                        search=SearchSettings(max_evals=args.max_evals),
                        hessians=hessians,
                        sensitivity=sensitivity,
                    )
                    seconds = time.perf_counter() - start
                    m = measure(source, recipe, model.path, imat, tmp, hessians)
                except RampEdgeError as err:
                    print(f"skip {method}@{budget}: {err}", flush=True)
                    continue
                anchor = best_anchor(doc["anchors"][model_ref], m["bytes"], source_bytes)
                kept = sum(
                    1
                    for s in source.specs
                    if recipe.types[s.name] == s.source_type
                    and s.n_params > 1 << 16
                    and len(s.shape) > 1
                )
                row = {
                    "model": model_ref,
                    "budget_bpw": b.value if b.kind == "bpw" else None,
                    "bytes": m["bytes"],
                    "method": method
                    + " +imatrix"
                    + (" +gptq" if hessians else "")
                    + (" (role probes)" if encoding == "gptq-probes" else ""),
                    "kld": m["kld"],
                    "ppl": m["ppl"],
                    "best_anchor": anchor["method"] if anchor else None,
                    "best_anchor_bytes": anchor["bytes"] if anchor else None,
                    "best_anchor_kld": anchor["kld"] if anchor else None,
                    "kld_vs_anchor": round(m["kld"] / anchor["kld"] - 1, 4) if anchor else None,
                    "evaluations": recipe.notes.get("evaluations", 0),
                    # evaluations that ran the model (the rest came from the on-disk cache)
                    "model_runs": recipe.notes.get("model_runs"),
                    "calibration_kld": recipe.notes.get("best_kld"),
                    "calibration_start_kld": recipe.notes.get("start_kld"),
                    "tensors_at_source_type": kept,
                    "seconds": round(seconds, 1),
                }
                print(json.dumps(row), flush=True)
                doc["rows"] = [
                    r
                    for r in doc["rows"]
                    if (r["model"], r["budget_bpw"], r["method"])
                    != (row["model"], row["budget_bpw"], row["method"])
                ] + [row]
                save(doc, path)


def run_gptq_uniform(model_ref: str, types: list[str], doc: dict, path: Path) -> None:
    from ramp_edge.features.calibration import calibrate_model

    model = resolve(model_ref)
    source = open_source(model)
    cal = calibrate_model(model, fisher=False)
    rows = doc.setdefault("gptq_uniform", {}).setdefault(model_ref, [])
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in types:
            recipe = build(source, f"uniform:{qtype}", has_imatrix=True)
            m = measure(source, recipe, model.path, dict(cal.imatrix), tmp, cal.hessians)
            row = {"model": model_ref, "method": f"uniform:{qtype} +gptq", **m}
            print(json.dumps(row), flush=True)
            rows[:] = [r for r in rows if r["method"] != row["method"]] + [row]
            save(doc, path)


def write_report(doc: dict, out: Path) -> None:
    lines = [
        "# Measured-quality search",
        "",
        "Written by `scripts/bench_search.py` from bench/search.json. Every number is measured "
        "on the exported GGUF with llama.cpp on WikiText-2 **test** "
        f"({doc.get('chunks', CHUNKS)} windows of 512 tokens, the tokens bench/allocation.md "
        "uses); the search itself only ever evaluated WikiText-2 **validation** tokens. "
        "Reference = the dequantized source. Both methods use the "
        "importance matrix from `ramp-edge features --imatrix` (WikiText-2 validation). The best "
        "anchor is the lowest-KLD llama.cpp preset or uniform type, with or without that imatrix, "
        "whose file is **at least as large** as ours and at most 5% larger (the size class; where "
        "no anchor is that close, up to 5% above the nearest larger one), and **smaller than "
        "the source file** (at the source's size a "
        "preset is the source written back, KLD 0). `kept` counts weight tensors "
        "left at the source's own type (copied bytes, no requantization error). "
        "`+gptq` rows encode the same types with GPTQ error compensation "
        "(ramp_edge/quant/compensate.py: each block range is quantized by ggml, and its error "
        "is folded into the columns not yet quantized, weighted by the input Hessian from "
        "48x512 WikiText-2 *validation* tokens); the anchors are llama.cpp's own quantizer, "
        "as llama-quantize writes them. The files are standard GGUFs either way. The `+gptq` "
        "rows use `allocate --method measured`'s own calibration (imatrix and Hessians from "
        "48x512 validation tokens, and each tensor's output Fisher sensitivity from 8x512, "
        "which scales the error table tensor by tensor: ramp_edge/features/fisher.py); "
        "`+gptq (role probes)` rows scale it by one KLD probe per tensor role instead, as "
        "before the Fisher; the others use the 16x512 imatrix. `evals (run)`: evaluations, "
        "and in brackets those that ran the model rather than the on-disk cache. `seconds`: the "
        "allocation, with the per-model error table and statistics already cached.",
        "",
        *[f"- {note}" for note in doc.get("notes", [])],
        "",
    ]
    for model in sorted({r["model"] for r in doc.get("rows", [])}):
        rows = sorted(
            (r for r in doc["rows"] if r["model"] == model),
            key=lambda r: (r["budget_bpw"] or 0, r["method"]),
        )
        lines += [
            f"## {model}",
            "",
            f"Source file: {doc.get('source_bytes', {}).get(model, 0):,} bytes.",
            "",
            "| budget | method | bytes | KLD (test) | PPL | best anchor ≥ size | its bytes "
            "| its KLD | KLD vs anchor | KLD (calib.) start → end | evals (run) | kept | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            vs = "" if r["kld_vs_anchor"] is None else f"{100 * r['kld_vs_anchor']:+.1f}%"
            calib = (
                f"{r['calibration_start_kld']:.4f} → {r['calibration_kld']:.4f}"
                if r.get("calibration_kld") is not None
                else ""
            )
            lines.append(
                f"| {r['budget_bpw']}bpw | {r['method']} | {r['bytes']:,} | {r['kld']:.4f} | "
                f"{r['ppl']:.3f} | {r['best_anchor'] or '-'} | "
                f"{(r['best_anchor_bytes'] or 0):,} | "
                f"{'' if r['best_anchor_kld'] is None else format(r['best_anchor_kld'], '.4f')} | "
                f"{vs} | {calib} | {r['evaluations']}"
                f"{'' if r.get('model_runs') is None else ' (' + str(r['model_runs']) + ')'} | "
                f"{r['tensors_at_source_type']} | "
                f"{r['seconds']} |"
            )
        lines += [
            "",
            "Anchors measured:",
            "",
            "| anchor | bytes | KLD (test) | PPL |",
            "|---|---|---|---|",
        ]
        for a in sorted(doc["anchors"].get(model, []), key=lambda a: a["bytes"]):
            lines.append(f"| {a['method']} | {a['bytes']:,} | {a['kld']:.4f} | {a['ppl']:.3f} |")
        lines.append("")
        encoded = doc.get("gptq_uniform", {}).get(model, [])
        if encoded:
            lines += [
                "The GPTQ encoding alone (ramp-edge's, not an anchor): uniform types, the same "
                "bytes as the anchor of that name, levels chosen with error compensation.",
                "",
                "| uniform type | bytes | KLD (test) | PPL |",
                "|---|---|---|---|",
            ]
            for a in sorted(encoded, key=lambda a: a["bytes"]):
                lines.append(
                    f"| {a['method']} | {a['bytes']:,} | {a['kld']:.4f} | {a['ppl']:.3f} |"
                )
            lines.append("")
    (out / "search.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
