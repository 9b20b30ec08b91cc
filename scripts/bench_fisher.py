"""Where the output Fisher puts a model's sensitivity, and what the knapsack does with it.

For each model: every weight's output Fisher sensitivity (KLD per unit of relative output
error, ramp_edge/features/fisher.py, from the calibration `allocate --method measured` uses),
summarised per role, the most sensitive tensors, and the types the GPTQ knapsack gives those
tensors at each budget when its error table is scaled by role probes and by the Fisher. The
KLD of those allocations on WikiText-2 test is in bench/search.md (`knapsack +imatrix +gptq`
and `... (role probes)` rows). Writes bench/fisher.{json,md}.

    .venv/bin/python scripts/bench_fisher.py --model smollm2-135m --budgets 4.4,4.8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ramp_edge import schema
from ramp_edge.allocate.api import allocate
from ramp_edge.allocate.budget import parse_budget
from ramp_edge.features.calibration import calibrate_model
from ramp_edge.fsutil import atomic_write_json, atomic_write_text
from ramp_edge.models import resolve
from ramp_edge.quant.presets import category
from ramp_edge.source import open_source

TOP = 8


def run_model(model_ref: str, budgets: list[str]) -> dict:
    model = resolve(model_ref)
    source = open_source(model)
    cal = calibrate_model(model)
    sens = dict(cal.sensitivity)
    roles: dict[str, list[tuple[str, float]]] = {}
    for name, value in sens.items():
        roles.setdefault(category(name), []).append((name, value))
    role_rows = []
    for role, items in sorted(roles.items()):
        values = [v for _, v in items]
        top = max(items, key=lambda x: x[1])
        role_rows.append(
            {
                "role": role,
                "tensors": len(items),
                "median": statistics.median(values),
                "min": min(values),
                "max": top[1],
                "max_tensor": top[0],
            }
        )
    medians = {r["role"]: r["median"] for r in role_rows}
    top = sorted(sens.items(), key=lambda x: -x[1] / medians[category(x[0])])[:TOP]
    allocations = {}
    for budget in budgets:
        b = parse_budget(budget if budget[-1].isalpha() else budget + "bpw")
        common = dict(imatrix=dict(cal.imatrix), imatrix_id=cal.id, hessians=cal.hessians)
        probes = allocate(source, b, "knapsack", **common)
        fisher = allocate(source, b, "knapsack", sensitivity=sens, **common)
        allocations[str(b)] = {
            "role probes": {n: probes.types[n] for n, _ in top},
            "fisher": {n: fisher.types[n] for n, _ in top},
        }
    return {
        "model": model_ref,
        "calibration": cal.id,
        "roles": role_rows,
        "top": [
            {"tensor": n, "sensitivity": v, "x_role_median": v / medians[category(n)]}
            for n, v in top
        ],
        "allocations": allocations,
        "sensitivity": sens,
    }


def write_report(doc: dict, out: Path) -> None:
    lines = [
        "# Output Fisher sensitivity",
        "",
        "Written by `scripts/bench_fisher.py`. Sensitivity = KLD per unit of relative output "
        "error, 1/2 sum_c F_cc E[o_c^2] (ramp_edge/features/fisher.py), from 8x512 WikiText-2 "
        "validation tokens with labels drawn from the model. The knapsack columns are the types "
        "the GPTQ knapsack gives the most sensitive tensors when its error table is scaled by "
        "one KLD probe per role and by the Fisher; their KLD on WikiText-2 test is in "
        "bench/search.md.",
        "",
    ]
    for m in doc["models"]:
        lines += [
            f"## {m['model']}",
            "",
            "| role | tensors | median | min | max | most sensitive |",
            "|---|---|---|---|---|---|",
        ]
        for r in m["roles"]:
            lines.append(
                f"| {r['role']} | {r['tensors']} | {r['median']:.4g} | {r['min']:.4g} | "
                f"{r['max']:.4g} | {r['max_tensor']} |"
            )
        budgets = list(m["allocations"])
        head = " | ".join(f"{b} probes | {b} Fisher" for b in budgets)
        lines += [
            "",
            f"The {TOP} tensors most sensitive relative to their role's median:",
            "",
            f"| tensor | sensitivity | x role median | {head} |",
            "|---|---|---|" + "---|---|" * len(budgets),
        ]
        for t in m["top"]:
            cells = " | ".join(
                f"{m['allocations'][b]['role probes'][t['tensor']]} | "
                f"{m['allocations'][b]['fisher'][t['tensor']]}"
                for b in budgets
            )
            lines.append(
                f"| {t['tensor']} | {t['sensitivity']:.4g} | {t['x_role_median']:.0f} | {cells} |"
            )
        lines.append("")
    atomic_write_text(out / "fisher.md", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--budgets", default="4.4,4.8")
    ap.add_argument("--out", default="bench")
    args = ap.parse_args()
    out = Path(args.out)
    models = [run_model(m, args.budgets.split(",")) for m in args.model or ["smollm2-135m"]]
    doc = schema.wrap("ramp-edge/bench", {"benchmark": "fisher", "models": models})
    atomic_write_json(out / "fisher.json", doc)
    write_report(doc, out)


if __name__ == "__main__":
    main()
