"""Leave-one-family-out transfer benchmark (issue 13) -> bench/transfer.json + bench/transfer.md.

For each held-out family (the policy and the error regression are trained without it) and
budgets from 4.0 bpw to just below the source file's size, starting just above the smallest
legal file without an importance matrix (SmolLM2-135M: 4.03 bpw, so 4.1; Gemma-3-270M: 4.23 bpw,
its 262k-row token_embd being large, so 4.3):

  (a) kld_preset: the best llama.cpp preset or uniform type, with or without imatrix, whose
      file is at least as large as every allocation of the row, in its size class (up to 5%
      larger, or up to 5% above the nearest larger one) and smaller than the source file
      (bench_search.best_anchor; anchors of bench/allocation.json: same data, WikiText-2
      test, 6 x 512 tokens, same reference);
  (b) kld_zero_shot: `allocate --method sac` with a policy trained without the family:
      measurement-free (target_measurements 0), repaired by the policy's own preferences;
  (c) kld_predicted_knapsack: `allocate --method predicted` with the same policy: the
      knapsack over an error table predicted from the same features by its prior, a ridge
      regression fitted on the training families' measured tables (`rl.prior`); the policy
      with every action 0;
  (d) kld_oracle: the knapsack over the target's measured, KLD-calibrated table.

Every KLD is measured on the exported GGUF with llama.cpp against the source model on
WikiText-2 *test* tokens (`kl_divergence(out, model.path, n_chunks=6)`'s windows and
reference, computed by `AssembledEvaluator` on the test setting, which writes the same file);
training, the measured reward and the activation statistics use WikiText-2 validation only.

apply_seconds: the feature statistics measured cold (a fresh cache directory, in a subprocess
running the real CLI `ramp-edge allocate PATH --method sac --json`) plus that row's policy and
repair seconds. The learning curve section reads the training records of the policies
(`--curve POLICY.zip`, written by `ramp-edge train --reward kld`).

    nice -n 10 .venv/bin/python scripts/bench_transfer.py [--steps 3000] [--cold] [--curve p.zip]
    .venv/bin/python scripts/bench_transfer.py --md-only --curve bench/policies/kld-curve.zip \
        --curve ramp_edge/data/policies/default.zip
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_search import best_anchor  # the size-class rule every bench table uses

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"smollm2-135m": "llama", "gemma3-270m": "gemma3"}
BUDGETS = {"smollm2-135m": (4.1, 4.4, 4.8, 5.2, 5.6), "gemma3-270m": (4.3, 4.6, 5.2, 6.0, 7.0)}
TRAIN_BUDGETS = (4.0, 4.4, 4.8, 5.2, 5.6, 6.0, 6.5, 7.0)
KEYS = (
    "model",
    "held_out_family",
    "train_families",
    "budget_bpw",
    "bytes",
    "kld_preset",
    "kld_zero_shot",
    "kld_predicted_knapsack",
    "kld_oracle",
    "gap_closed",
    "apply_seconds",
    "target_measurements",
    "repair_changed",
)
logger = logging.getLogger("bench_transfer")


def prepare(name: str):
    from ramp_edge.allocate.sensitivity import calibrate, measure_sensitivity
    from ramp_edge.models import resolve
    from ramp_edge.rl.env import make_task
    from ramp_edge.source import open_source

    source = open_source(resolve(name))
    t0 = time.perf_counter()
    table = calibrate(source, measure_sensitivity(source))
    logger.info("%s: measured table in %.0f s", name, time.perf_counter() - t0)
    return {"name": name, "source": source, "table": table, "task": make_task(source, table)}


def train_policy(models: list[dict], out: Path, steps: int, seed: int = 0) -> Path:
    from ramp_edge.rl import sac

    if out.is_file():
        return out
    t0 = time.perf_counter()
    sac.train(
        [m["task"] for m in models],
        out,
        steps=steps,
        budgets_bpw=TRAIN_BUDGETS,
        seed=seed,
        checkpoint_every=0,
    )
    logger.info("policy %s in %.0f s", out.name, time.perf_counter() - t0)
    return out


_EVALUATORS: dict = {}


def kld_of(source, recipe) -> float:
    """Mean KLD of the exported file on WikiText-2 test, 6 x 512 tokens, against the source.

    `AssembledEvaluator` with the test setting writes the same GGUF export_model writes and
    scores the same windows as `kl_divergence(out, source.path, n_chunks=6)` (same reference
    cache), keeping quantized tensors in memory between the rows of a model.
    """
    from ramp_edge.evaluate.assembled import AssembledEvaluator, EvalSettings

    key = source.model.model_id
    if key not in _EVALUATORS:
        _EVALUATORS[key] = AssembledEvaluator(
            source, variant="bench-transfer", settings=EvalSettings("wikitext2-test", 512, 6)
        )
    return _EVALUATORS[key].evaluate(dict(recipe.allocation)).mean_kld


def cold_apply(path: Path, policy: Path, budget: float) -> dict:
    """The real CLI in a subprocess with an empty cache: what a first apply costs."""
    env = dict(os.environ, RAMP_EDGE_CACHE=tempfile.mkdtemp(prefix="ramp-cold-"))
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ramp_edge",
            "allocate",
            str(path),
            "--method",
            "sac",
            "--policy",
            str(policy),
            "--budget",
            f"{budget}bpw",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - t0
    doc = json.loads(out.stdout)
    notes = doc["recipe"]["notes"]
    return {
        "wall_seconds": round(wall, 1),
        **notes,
        "predicted_bytes": doc["predicted_bytes"],
        "target_bytes": doc["target_bytes"],
    }


def anchors(name: str) -> list[dict]:
    """bench/allocation.json's anchors in bench_search's shape (bytes, kld)."""
    doc = json.loads((ROOT / "bench" / "allocation.json").read_text())
    return [
        {**a, "bytes": a["size_bytes"], "kld": a["mean_kld"]}
        for a in doc["results"][name]["anchors"]
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--curve", action="append", default=[], help="policy zip with a KLD curve")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "ramp-edge" / "bench-transfer"))
    ap.add_argument("--only", help="held-out model to run (default: all)")
    ap.add_argument("--cold", action="store_true", help="run the cold CLI apply per family")
    ap.add_argument(
        "--cold-features",
        help="without --cold: cold feature seconds measured elsewhere, e.g. gemma3-270m=810",
    )
    ap.add_argument(
        "--md-only",
        action="store_true",
        help="rewrite bench/transfer.md from the JSON (and --curve)",
    )
    args = ap.parse_args()
    if args.md_only:
        extra = Path(args.work) / "extra.json"
        write_md(
            json.loads((ROOT / "bench" / "transfer.json").read_text()),
            json.loads(extra.read_text()) if extra.exists() else {},
            args.curve,
        )
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ramp_edge.allocate.api import allocate
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.allocate.repair import allocate_with_policy
    from ramp_edge.quant.export import plan_export
    from ramp_edge.rl.sac import read_metadata

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = {n: prepare(n) for n in FAMILIES}
    rows, extra = [], {"cold_apply": {}, "regression_r2": {}, "policies": {}}
    for held in FAMILIES:
        if args.only and held != args.only:
            continue
        train = [m for n, m in models.items() if n != held]
        target = models[held]
        policy = train_policy(train, work / f"policy-without-{held}.zip", args.steps)
        extra["policies"][held] = str(policy)
        # (c) is `allocate --method predicted` with the same policy: its prior's regression,
        # fitted on the training families' measured tables, alone.
        extra["regression_r2"][held] = round(read_metadata(policy)["prior"]["r2"], 4)
        source = target["source"]
        if args.cold:
            cold = cold_apply(source.path, policy, 5.0)
            extra["cold_apply"][held] = cold
            logger.info("%s cold apply: %s", held, cold)
            cold_features = cold["features_seconds"]
        else:
            cold_features = dict(
                kv.split("=") for kv in (args.cold_features or "").split(",") if kv
            ).get(held)
            cold_features = float(cold_features) if cold_features is not None else float("nan")
            extra["cold_apply"].setdefault(held, {})["standalone_features_seconds"] = cold_features
        for bpw in BUDGETS[held]:
            budget = parse_budget(f"{bpw}bpw")
            zs = allocate_with_policy(source, budget, str(policy))
            pk = allocate(source, budget, "predicted", policy=str(policy))
            oracle = allocate(source, budget, "knapsack")
            sizes_b = {
                k: plan_export(source, r).size_bytes
                for k, r in (("zs", zs), ("pk", pk), ("or", oracle))
            }
            k_zs, k_pk, k_or = (kld_of(source, r) for r in (zs, pk, oracle))
            best = best_anchor(
                anchors(held), max(sizes_b.values()), Path(source.path).stat().st_size
            )
            k_pre = best["kld"] if best else None
            gap = None
            if k_pre is not None and k_or < k_pre:
                gap = round((k_pre - k_zs) / (k_pre - k_or), 3)
            n = zs.notes
            row = {
                "model": held,
                "held_out_family": FAMILIES[held],
                "train_families": [FAMILIES[m["name"]] for m in train],
                "budget_bpw": bpw,
                "bytes": sizes_b["zs"],
                "kld_preset": k_pre,
                "kld_zero_shot": round(k_zs, 5),
                "kld_predicted_knapsack": round(k_pk, 5),
                "kld_oracle": round(k_or, 5),
                "gap_closed": gap,
                "apply_seconds": round(
                    cold_features + n["policy_seconds"] + n["repair_seconds"], 2
                ),
                "target_measurements": n["target_measurements"],
                "repair_changed": n["repair_changed"],
            }
            assert tuple(row) == KEYS
            extra.setdefault("details", []).append(
                {
                    "model": held,
                    "budget_bpw": bpw,
                    "preset": best and best["method"],
                    "preset_bytes": best and best["bytes"],
                    "bytes_predicted": sizes_b["pk"],
                    "bytes_oracle": sizes_b["or"],
                    "policy_size_ratio": n["policy_size_ratio"],
                }
            )
            logger.info("row %s", row)
            rows.append(row)
            save(rows, extra, args, work)  # after every row: a long run keeps what it measured


def save(rows: list[dict], extra: dict, args, work: Path) -> None:
    out = ROOT / "bench" / "transfer.json"
    if args.only and out.exists():
        rows = [r for r in json.loads(out.read_text()) if r["model"] != args.only] + rows
    out.write_text(json.dumps(rows, indent=1) + "\n")
    old = json.loads((work / "extra.json").read_text()) if (work / "extra.json").exists() else {}
    for key, value in extra.items():
        if isinstance(value, dict):
            old.setdefault(key, {}).update(value)
        else:
            new = {(d["model"], d["budget_bpw"]) for d in value}
            old[key] = [d for d in old.get(key, []) if (d["model"], d["budget_bpw"]) not in new]
            old[key] += value
    (work / "extra.json").write_text(json.dumps(old, indent=1))
    write_md(rows, old, args.curve)


def write_md(rows: list[dict], extra: dict, curves: list[str]) -> None:
    from ramp_edge.rl.sac import read_metadata

    lines = [
        "# Zero-shot transfer (leave one family out)",
        "",
        "Written by `scripts/bench_transfer.py` from bench/transfer.json. KLD: mean KL divergence "
        "of the exported GGUF against the source model, llama.cpp, WikiText-2 **test**, 6 x 512 "
        "tokens (no calibration, training or reward used these tokens). preset = best llama.cpp "
        "preset or uniform type (with or without imatrix) at least as large as every allocation "
        "of the row, at most 5% larger (or 5% above the nearest larger one) and smaller than the "
        "source file (bench/allocation.json anchors). zero-shot = `allocate --method sac` with a "
        "policy trained without the family (target_measurements 0). predicted = `allocate --method "
        "predicted` with that policy: the knapsack over the error table its prior (a ridge "
        "regression on the same features, fitted on the training families' measured tables) "
        "predicts; the policy with every action 0. oracle = knapsack over the target's "
        "measured table. gap_closed = "
        "(preset - zero-shot) / (preset - oracle), empty where the oracle does not beat the "
        "preset.",
        "",
        "| model | held out | trained on | budget | bytes | preset | zero-shot | predicted | "
        "oracle | gap closed | apply s | measurements | repair changed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['held_out_family']} | {', '.join(r['train_families'])} | "
            f"{r['budget_bpw']} | {r['bytes']:,} | "
            + " | ".join(
                "" if r[k] is None else f"{r[k]:.4f}"
                for k in ("kld_preset", "kld_zero_shot", "kld_predicted_knapsack", "kld_oracle")
            )
            + f" | {'' if r['gap_closed'] is None else r['gap_closed']} | {r['apply_seconds']} | "
            f"{r['target_measurements']} | {r['repair_changed']} |"
        )
    lines += ["", "## Means over the budgets", ""]
    lines.append("| model | preset | zero-shot | predicted | oracle |")
    lines.append("|---|---|---|---|---|")
    for m in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == m]

        def mean(k, sub=sub):
            vals = [r[k] for r in sub if r[k] is not None]
            return f"{np.mean(vals):.4f}" if vals else ""

        lines.append(
            f"| {m} | {mean('kld_preset')} | {mean('kld_zero_shot')} | "
            f"{mean('kld_predicted_knapsack')} | {mean('kld_oracle')} |"
        )
    lines += ["", "## Apply time (what apply_seconds counts)", ""]
    for m, c in extra.get("cold_apply", {}).items():
        if "wall_seconds" not in c:
            lines.append(
                f"- {m}: not run here; apply_seconds uses {c.get('standalone_features_seconds')} s "
                "of feature statistics measured by a standalone cold `tensor_features` run "
                "(empty feature and statistics caches) on the same shared 2-core machine."
            )
            continue
        lines.append(
            f"- {m}: {c['wall_seconds']} s wall for the whole command (interpreter and imports "
            f"included); features {c['features_seconds']} s, policy {c['policy_seconds']} s, "
            f"repair {c['repair_seconds']} s; target_measurements {c['target_measurements']}; "
            f"{c['predicted_bytes']:,} bytes for a budget of {c['target_bytes']:,}."
        )
    lines += [
        "",
        "Regression fit (R^2 of log error on its training rows): "
        + ", ".join(f"without {k}: {v}" for k, v in extra.get("regression_r2", {}).items()),
    ]
    lines += ["", "## Learning curves (SAC fine-tuning after behaviour cloning)", ""]
    if not curves:
        lines.append("(no curve given)")
    for path in curves:
        meta = read_metadata(path)
        ev = meta.get("evaluation", {})
        reward = "kld" if meta.get("quality") == "measured KLD" else "surrogate"
        quality = (
            "KLD/KLD(uniform Q4_0), KLD on WikiText-2 validation, 4 x 512 tokens"
            if reward == "kld"
            else "the summed table error / that of uniform Q4_0"
        )
        lines.append(
            f"`{Path(path).name}`: trained on {', '.join(meta.get('models', []))}, reward "
            f"{meta.get('quality', '?')}, {meta.get('steps')} steps, budgets "
            f"{meta.get('budgets_bpw')}. Evaluation points: deterministic policy, mean return "
            f"over the evaluation budgets (return = -({quality}) - budget penalty); step 0 = "
            "the behaviour-cloned start."
        )
        lines.append(
            "\nCommand: `ramp-edge train "
            + " ".join(f"--model {m}" for m in meta.get("models", []))
            + f" --reward {reward} "
            + " ".join(f"--budget {b}bpw" for b in meta.get("budgets_bpw", []))
            + f" --steps {meta.get('steps')} --eval-every 1000 --out {Path(path).name}`."
        )
        lines += ["", "| step | mean return |", "|---|---|"]
        lines += [f"| {s} | {v} |" for s, v in ev.get("history", [])]
        lines.append(f"\nbest step {ev.get('best_step')} (return {ev.get('best_return')}).\n")
    (ROOT / "bench" / "transfer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
