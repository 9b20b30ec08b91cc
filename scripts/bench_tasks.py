"""Throughput of `ramp-edge eval tasks`: items/s per task at a fixed limit.

Scores the first N documents of each task with LlamaCppScorer and writes bench/tasks.json
(a ramp-edge/bench document) and bench/tasks.md. The load average before and after is recorded
because timings on a shared machine are only comparable when nothing else ran.

    .venv/bin/python scripts/bench_tasks.py --limit 50
    .venv/bin/python scripts/bench_tasks.py --model out/smol-q8_0.gguf --tasks arc_easy,boolq
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

from ramp_edge.evaluate.loglik import LlamaCppScorer
from ramp_edge.evaluate.taskfile import evaluate_tasks, parse_task_names
from ramp_edge.fsutil import atomic_write_json, atomic_write_text
from ramp_edge.models import resolve
from ramp_edge.schema import wrap

logger = logging.getLogger("bench_tasks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="built-in name or .gguf path")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--out-dir", type=Path, default=Path("bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = resolve(args.model)
    names = parse_task_names(args.tasks)
    load_before = os.getloadavg()
    start = time.perf_counter()
    scorer = LlamaCppScorer(model.path, n_ctx=args.n_ctx, n_threads=args.threads)
    load_s = time.perf_counter() - start
    rows = []
    for name in names:
        tokens_before = scorer.n_evaluated_tokens
        t0 = time.perf_counter()
        [result] = evaluate_tasks(scorer, [name], args.limit)
        seconds = time.perf_counter() - t0
        tokens = scorer.n_evaluated_tokens - tokens_before
        rows.append(
            {
                **result.to_dict(),
                "seconds": seconds,
                "evaluated_tokens": tokens,
                "tokens_per_s": tokens / seconds,
            }
        )
        logger.info(
            "%-14s %6.2f items/s  %7.1f tok/s  acc %.3f",
            name,
            result.items_per_s,
            tokens / seconds,
            result.acc,
        )
    load_after = os.getloadavg()
    scorer.close()

    doc = wrap(
        "ramp-edge/bench",
        {
            "bench": "eval-tasks",
            "model": model.model_id,
            "model_path": str(model.path),
            "limit": args.limit,
            "n_ctx": args.n_ctx,
            "n_threads": scorer.n_threads,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "model_load_s": load_s,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "results": rows,
        },
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out_dir / "tasks.json", doc)
    lines = [
        f"# eval tasks throughput: {model.model_id}, first {args.limit} documents per task",
        "",
        f"{doc['provenance']['created_utc']}, host {doc['provenance']['host']}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}), n_threads {scorer.n_threads}, "
        f"n_ctx {args.n_ctx}; model load {load_s:.1f} s. Load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)}: above {os.cpu_count()} means other "
        "processes shared the CPUs and the numbers are pessimistic.",
        "",
        "| task | n | items/s | evaluated tok/s | acc | acc_norm |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        norm = f"{r['acc_norm']:.3f}" if r["acc_norm"] is not None else "-"
        lines.append(
            f"| {r['task']} | {r['n']} | {r['items_per_s']:.2f} | "
            f"{r['tokens_per_s']:.0f} | {r['acc']:.3f} | {norm} |"
        )
    lines += [
        "",
        "Evaluated tokens count what llama.cpp actually ran: each context once, then "
        "each continuation minus its last token (single-token answers cost nothing).",
        "",
    ]
    atomic_write_text(args.out_dir / "tasks.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
