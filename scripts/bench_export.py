"""Benchmark: export time vs llama.cpp's quantizer, and size / perplexity / KLD per recipe.

Writes bench/export.json and bench/export.md. Usage:
    .venv/bin/python scripts/bench_export.py [--model smollm2-135m] [--chunks 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from ramp_edge import schema
from ramp_edge.evaluate.perplexity import kl_divergence
from ramp_edge.models import resolve
from ramp_edge.quant.catalogue import get
from ramp_edge.quant.export import export_model
from ramp_edge.quant.llamacpp import llama_quantize
from ramp_edge.quant.presets import FTYPE_NAMES
from ramp_edge.recipe import build
from ramp_edge.source import open_source

RECIPES = [
    "uniform:Q4_0",
    "uniform:Q4_1",
    "uniform:Q5_0",
    "uniform:Q8_0",
    "uniform:IQ4_NL",
    "Q3_K_M",
    "Q4_K_M",
    "Q5_K_M",
]


def _llama_args(spec: str) -> tuple[str, bool]:
    if spec.startswith("uniform:"):
        return FTYPE_NAMES[get(spec.split(":")[1]).ftype], True
    return spec, False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench")
    args = ap.parse_args()
    model = resolve(args.model)
    source = open_source(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in RECIPES:
            recipe = build(source, spec)
            ours_t, theirs_t = [], []
            ours = Path(tmp) / "ours.gguf"
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = export_model(source, recipe, ours)
                ours_t.append(time.perf_counter() - start)
                preset, pure = _llama_args(spec)
                start = time.perf_counter()
                llama_quantize(model.path, Path(tmp) / "theirs.gguf", preset, pure=pure)
                theirs_t.append(time.perf_counter() - start)
            kld = kl_divergence(ours, model.path, n_chunks=args.chunks)
            row = {
                "recipe": spec,
                "size_bytes": result.plan.size_bytes,
                "bpw": round(result.plan.bpw, 4),
                "ppl": round(kld.ppl_cand, 4),
                "ppl_ref": round(kld.ppl_ref, 4),
                "mean_kld": round(kld.mean_kld, 6),
                "same_top_p": round(kld.same_top_p, 4),
                "export_s": round(statistics.median(ours_t), 3),
                "llama_quantize_s": round(statistics.median(theirs_t), 3),
            }
            row["time_ratio"] = round(row["export_s"] / row["llama_quantize_s"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = schema.wrap(
        "ramp-edge/bench",
        {
            "benchmark": "export",
            "model": args.model,
            "chunks": args.chunks,
            "ctx": 512,
            "data": "wikitext2-test",
            "machine": f"{platform.machine()} {platform.processor()}",
            "rows": rows,
        },
    )
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "export.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# Export benchmark: {args.model}",
        "",
        f"WikiText-2 test, ctx 512, {args.chunks} chunks; reference = the dequantized source. "
        "Times: median of {0} runs, llama.cpp = `llama_model_quantize` on the same recipe.".format(
            args.repeats
        ),
        "",
        "| recipe | size (bytes) | bpw | PPL | mean KLD | same top p | export s | llama.cpp s "
        "| ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['size_bytes']:,} | {r['bpw']:.3f} | {r['ppl']:.3f} | "
            f"{r['mean_kld']:.4f} | {100 * r['same_top_p']:.1f}% | {r['export_s']:.2f} | "
            f"{r['llama_quantize_s']:.2f} | {r['time_ratio']:.2f} |"
        )
    lines.append("")
    lines.append(f"Reference (source) PPL: {rows[0]['ppl_ref']:.3f}")
    (out / "export.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
