"""Benchmark Scale Folding: KLD and perplexity with and without folding, per quant type family.

For each type family the block weights get that type and everything else Q8_0 (so the
measurement isolates the tensors folding touches):

- Q4_0, IQ4_NL, Q4_1, Q5_0: every block matmul;
- Q2_K, Q3_K, Q4_K: the block matmuls whose rows allow K-quants (row length % 256 == 0),
  the other block matmuls Q8_0.

Three variants per family: no folding; folding every group at its best alpha
(`per_tensor_decide=False`); and the exporter's default, folding only the groups where the
measured layer error drops (`per_tensor_decide=True`). Each variant is exported as a stock GGUF
(ramp_edge.quant.export) and evaluated in llama.cpp against the source model
(ramp_edge.evaluate.perplexity.kl_divergence: KL(reference || candidate) over WikiText-2 test
windows, as llama-perplexity --kl-divergence).

Usage:
    python scripts/bench_folding.py --model smollm2-135m --chunks 10
    python scripts/bench_folding.py --model gemma3-270m --chunks 10 --families Q4_0,IQ4_NL

Writes bench/folding.json (all numbers, per-group reports) and bench/folding.md (tables);
rows already measured with the same settings are kept (resumable; --force re-measures).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ramp_edge import schema  # noqa: E402
from ramp_edge.evaluate.perplexity import kl_divergence  # noqa: E402
from ramp_edge.features.folding import DEFAULT_ALPHAS, fold_for_export  # noqa: E402
from ramp_edge.features.imatrix import importance  # noqa: E402
from ramp_edge.features.naming import block_index  # noqa: E402
from ramp_edge.features.stats import collect_stats  # noqa: E402
from ramp_edge.models import resolve  # noqa: E402
from ramp_edge.quant.catalogue import get, resolve_fallback  # noqa: E402
from ramp_edge.quant.export import export_model  # noqa: E402
from ramp_edge.quant.presets import allows_quantization  # noqa: E402
from ramp_edge.recipe import Recipe  # noqa: E402
from ramp_edge.source import open_source  # noqa: E402

logger = logging.getLogger("bench_folding")

ALL_TENSOR_FAMILIES = ("Q4_0", "IQ4_NL", "Q4_1", "Q5_0")
K_FAMILIES = ("Q2_K", "Q3_K", "Q4_K")
VARIANTS = ("none", "all", "decided")


def assignment_for(source: Any, family: str) -> dict[str, str]:
    qt = get(family)
    types = {}
    for s in source.specs:
        if not allows_quantization(s.name, s.shape):
            types[s.name] = s.source_type
        elif block_index(s.name) >= 0 and (qt.fits(s.row_length) or qt.block_size == 32):
            types[s.name] = resolve_fallback(qt, s.row_length).name
        else:
            types[s.name] = resolve_fallback(get("Q8_0"), s.row_length).name
    return types


def _compact(group: dict[str, Any]) -> dict[str, Any]:
    """A group report with floats to 4 significant digits (keeps the JSON small)."""

    def r(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.4g}")
        if isinstance(v, list):
            return [r(x) for x in v]
        return v

    # "tensors" follows from layer + group; dropped to keep the file small
    return {k: r(v) for k, v in group.items() if k != "tensors"}


def run_variant(source, stats, family, types, variant, args, ref_path, workdir) -> dict[str, Any]:
    start = time.perf_counter()
    overrides = None
    imat = importance(stats) if args.imatrix else None
    row: dict[str, Any] = {"family": family, "variant": variant}
    if variant != "none":
        res = fold_for_export(
            source,
            stats,
            types,
            alphas=args.alphas,
            per_tensor_decide=variant == "decided",
            use_imatrix=args.imatrix,
        )
        overrides = res.tensors
        if args.imatrix:
            imat = dict(res.importance)
        row["fold_seconds"] = time.perf_counter() - start
        if variant == "decided":  # per-group detail only where the decision is the point
            row["groups"] = [_compact(r.to_dict()) for r in res.reports]
        row["n_groups"] = len(res.reports)
        row["n_folded"] = res.n_folded
        row["folded_by_group"] = dict(Counter(r.group for r in res.reports if r.folded))
        row["alphas_chosen"] = dict(Counter(str(r.alpha) for r in res.reports if r.folded))
        measured = [r for r in res.reports if r.error_before > 0]
        row["layer_error_before"] = (
            float(np.mean([r.error_before for r in measured])) if measured else 0.0
        )
        row["layer_error_after"] = (
            float(np.mean([r.error_after for r in measured])) if measured else 0.0
        )
    recipe = Recipe(
        source.model.model_id,
        tuple((s.name, types[s.name]) for s in source.specs),
        f"bench:{family}:{variant}",
    )
    out = Path(workdir) / f"{family}-{variant}.gguf"
    result = export_model(source, recipe, out, imatrix=imat, overrides=overrides)
    row["size_bytes"] = result.plan.size_bytes
    row["bpw"] = result.plan.bpw
    kld = kl_divergence(out, ref_path, data=args.data, n_ctx=args.n_ctx, n_chunks=args.chunks)
    row.update({k: v for k, v in kld.to_dict().items() if k != "seconds"})
    row["seconds"] = time.perf_counter() - start
    out.unlink()
    logger.info(
        "%s %-7s KLD %.5f +- %.5f  PPL %.3f  (%.0f s)",
        family,
        variant,
        kld.mean_kld,
        kld.kld_stderr,
        kld.ppl_cand,
        row["seconds"],
    )
    return row


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Scale Folding: KLD and perplexity with and without folding",
        "",
        "Generated by `scripts/bench_folding.py`; numbers in `bench/folding.json`.",
        "",
        "Block weights at the family's type (K-quant families: only tensors whose rows are a "
        "multiple of 256; the other block tensors Q8_0), token_embd/output Q8_0. Variants: "
        "**none** (no folding), **all** (every group folded at its best alpha), **decided** "
        "(the exporter's default: a group is folded only where its measured layer error "
        "drops). KLD = mean KL(reference || candidate) per token in llama.cpp, reference = "
        "the source GGUF; lower is better. The verdict names the variant with the lowest "
        "mean KLD; differences within about two standard errors are noise. Re-quantizing to "
        "the source's own grid (SmolLM2: Q4_1) is lossless, which any folding breaks.",
        "",
    ]
    for model, entry in doc["models"].items():
        s = entry["settings"]
        lines += [
            f"## {model}",
            "",
            f"{s['chunks']} windows of {s['n_ctx']} tokens of {s['data']} (second half of each "
            f"window scored: {entry.get('n_tokens', '?')} tokens); calibration "
            f"{entry['calibration']['n_tokens']} tokens of {entry['calibration']['data']}; "
            f"alphas {s['alphas']}; imatrix {'yes' if s['imatrix'] else 'no'}; "
            f"reference PPL {entry.get('ppl_ref', float('nan')):.3f}.",
            "",
            "| family | BPW | KLD none | KLD all | KLD decided | decided vs none | PPL none | "
            "PPL all | PPL decided | groups folded (decided) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        by = {(r["family"], r["variant"]): r for r in entry["rows"]}
        for fam in entry["families"]:
            n, a, d = by.get((fam, "none")), by.get((fam, "all")), by.get((fam, "decided"))
            if not (n and a and d):
                continue

            def k(r):
                return f"{r['mean_kld']:.5f} ± {r['kld_stderr']:.5f}"

            rel = (
                (d["mean_kld"] - n["mean_kld"]) / n["mean_kld"] * 100 if n["mean_kld"] > 0 else 0.0
            )
            best = min((n, "none"), (a, "all"), (d, "decided"), key=lambda p: p[0]["mean_kld"])[1]
            verdict = {
                "none": "folding off",
                "all": "fold everywhere",
                "decided": "fold per group",
            }[best]
            lines.append(
                f"| {fam} | {n['bpw']:.2f} | {k(n)} | {k(a)} | {k(d)} | {rel:+.1f}% | "
                f"{n['ppl_cand']:.3f} | {a['ppl_cand']:.3f} | {d['ppl_cand']:.3f} | "
                f"{d['n_folded']}/{d['n_groups']} | {verdict} |"
            )
        lines += [
            "",
            "Groups folded by the per-group decision, by kind (of the groups measured):",
            "",
            "| family | attn_in | attn_out | ffn_in | ffn_out | output_in | alphas chosen |",
            "|---|---|---|---|---|---|---|",
        ]
        for fam in entry["families"]:
            d = by.get((fam, "decided"))
            if not d:
                continue
            total = Counter(g["group"] for g in d["groups"] if g["types"])
            folded = d["folded_by_group"]
            cells = [
                f"{folded.get(g, 0)}/{total.get(g, 0)}"
                for g in ("attn_in", "attn_out", "ffn_in", "ffn_out", "output_in")
            ]
            lines.append(f"| {fam} | {' | '.join(cells)} | {d['alphas_chosen']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--families", default=",".join(ALL_TENSOR_FAMILIES + K_FAMILIES))
    p.add_argument("--chunks", type=int, default=10, help="KLD windows (of --n-ctx tokens)")
    p.add_argument("--n-ctx", type=int, default=512)
    p.add_argument("--data", default="wikitext2-test")
    p.add_argument(
        "--alphas", type=lambda s: tuple(float(x) for x in s.split(",")), default=DEFAULT_ALPHAS
    )
    p.add_argument("--imatrix", action="store_true", help="quantize with the (folded) imatrix")
    p.add_argument("--out", default=str(REPO / "bench" / "folding"))
    p.add_argument("--force", action="store_true", help="re-measure rows already in the JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("gguf").setLevel(logging.WARNING)

    resolved = resolve(args.model)
    source = open_source(resolved)
    stats = collect_stats(resolved)
    families = [f.strip().upper() for f in args.families.split(",") if f.strip()]
    out_json = Path(args.out).with_suffix(".json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"models": {}}
    if out_json.exists():
        old = json.loads(out_json.read_text())
        doc["models"] = old.get("models", {})
    key = args.model + (" +imatrix" if args.imatrix else "")
    entry = doc["models"].get(key, {"rows": []})
    settings = {
        "chunks": args.chunks,
        "n_ctx": args.n_ctx,
        "data": args.data,
        "alphas": list(args.alphas),
        "imatrix": args.imatrix,
    }
    if entry.get("settings") != settings:
        entry["rows"] = []  # other settings: earlier rows are not comparable
    entry["settings"] = settings
    entry["calibration"] = {
        "data": stats.data,
        "n_tokens": stats.n_tokens,
        "n_seq": stats.n_seq,
        "seq_len": stats.seq_len,
    }
    entry["families"] = list(dict.fromkeys([*entry.get("families", []), *families]))
    rows = [r for r in entry["rows"] if args.force is False or r["family"] not in families]
    done = {(r["family"], r["variant"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="bench-folding-") as workdir:
        for family in families:
            types = assignment_for(source, family)
            if not any(t == get(family).name for t in types.values()):
                logger.warning("%s: no tensor of %s fits; skipped", family, args.model)
                continue
            for variant in VARIANTS:
                if (family, variant) in done:
                    logger.info("%s %s: already measured (use --force to redo)", family, variant)
                    continue
                row = run_variant(
                    source, stats, family, types, variant, args, resolved.path, workdir
                )
                rows.append(row)
                entry["ppl_ref"] = row["ppl_ref"]
                entry["n_tokens"] = row["n_tokens"]
                entry["rows"] = rows
                doc["models"][key] = entry
                doc.update(
                    {
                        "schema": "ramp-edge/bench-folding",
                        "schema_version": 1,
                        "provenance": schema.provenance(),
                    }
                )
                out_json.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
                Path(args.out).with_suffix(".md").write_text(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
