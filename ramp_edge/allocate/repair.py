"""Budget repair by a policy's own preferences: exact sizes, no measured errors.

A policy (`ramp_edge.rl.sac.policy_choices`) returns, per tensor, the bits per weight it asked
for (`target_bpw`) and how many bits above or below par that was (`score`, its action). Its
episode tracks the budget, but it can end a few percent off it. `repair_to_budget` moves the
allocation to the largest file at or under the budget using only those numbers and the exact
byte sizes of every legal candidate type:

1. shift every target by one common offset (bisection over bpw) and give each tensor the
   candidate nearest its shifted target: the largest offset whose file fits. A common shift
   keeps the policy's ranking of tensors; where the policy overshot, tensors it wanted low go
   lower, the ones it wanted high stay highest;
2. spend what is left by upgrading, one candidate step at a time, the tensors with the highest
   score first (where the policy wanted the most bits relative to par).

`size_table` gives the candidates and their bytes without quantizing anything: the error
column of the `SensitivityTable` it returns is 0 (unmeasured). The search never reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ramp_edge.allocate.budget import below_smallest_file
from ramp_edge.allocate.sensitivity import (
    DEFAULT_CANDIDATES,
    SensitivityTable,
    TensorCosts,
    candidates_for,
)
from ramp_edge.errors import BudgetError
from ramp_edge.quant.catalogue import CATALOGUE
from ramp_edge.quant.presets import allows_quantization

logger = logging.getLogger(__name__)

_ALIGN = 32


def _pad(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def size_table(
    source, types: tuple[str, ...] = DEFAULT_CANDIDATES, has_imatrix: bool = False
) -> SensitivityTable:
    """Legal candidate types and their exact bytes per quantizable tensor; errors 0 (unmeasured).

    Same tensors, candidates and order (bytes descending) as `measure_sensitivity`, in
    milliseconds: nothing is quantized.
    """
    rows = []
    fixed = 0
    for s in source.specs:
        if not allows_quantization(s.name, s.shape):
            fixed += CATALOGUE[s.source_type].tensor_bytes(s.shape)
            continue
        options = [
            (qt.name, qt.tensor_bytes(s.shape), 0.0)
            for qt in candidates_for(s.row_length, s.source_type, types)
            if has_imatrix or not qt.needs_imatrix or qt.name == s.source_type
        ]
        options.sort(key=lambda o: (-o[1], o[0]))
        rows.append(TensorCosts(s.name, s.shape, s.n_params, tuple(options)))
    return SensitivityTable(source.model.model_id, tuple(rows), fixed)


def _nearest(t: TensorCosts, bpw: float) -> int:
    """Index of the option whose bits per weight are nearest `bpw` (ties: fewer bytes)."""
    return min(
        range(len(t.options)),
        key=lambda i: (abs(t.options[i][1] * 8 / t.n_params - bpw), -i),
    )


def _bytes(table: SensitivityTable, choice: Mapping[str, int]) -> int:
    return sum(_pad(t.options[choice[t.name]][1]) for t in table.tensors)


def repair_to_budget(
    table: SensitivityTable,
    target_bpw: Mapping[str, float],
    score: Mapping[str, float],
    capacity: int,
) -> dict[str, int]:
    """The policy's allocation moved to at most `capacity` bytes of chosen tensors.

    Args:
        table: candidates per tensor (`size_table`; errors are ignored).
        target_bpw: tensor -> bits per weight the policy asked for.
        score: tensor -> the policy's preference relative to par (its action, [-1, 1]).
        capacity: bytes the chosen tensors may take (file budget - header - fixed tensors).

    Returns:
        tensor -> option index (0 = most bytes).

    Raises:
        BudgetError: when even the smallest candidate of every tensor exceeds `capacity`.
    """
    smallest = {t.name: len(t.options) - 1 for t in table.tensors}
    if _bytes(table, smallest) > capacity:
        raise BudgetError(
            f"capacity {capacity:,} bytes is below the smallest allocation "
            f"({_bytes(table, smallest):,} bytes)"
        )

    def shifted(delta: float) -> dict[str, int]:
        return {t.name: _nearest(t, target_bpw[t.name] + delta) for t in table.tensors}

    choice = shifted(0.0)
    if _bytes(table, choice) > capacity:
        lo, hi = -40.0, 0.0  # lo always fits: every tensor at its smallest candidate
        for _ in range(40):
            mid = (lo + hi) / 2
            if _bytes(table, shifted(mid)) <= capacity:
                lo = mid
            else:
                hi = mid
        choice = shifted(lo)
    # Upgrade by preference: highest score first, one candidate step each pass, while it fits.
    room = capacity - _bytes(table, choice)
    order = sorted(table.tensors, key=lambda t: (-score.get(t.name, 0.0), t.name))
    changed = True
    while changed and room > 0:
        changed = False
        for t in order:
            i = choice[t.name]
            if i == 0:
                continue
            extra = _pad(t.options[i - 1][1]) - _pad(t.options[i][1])
            if 0 < extra <= room:
                choice[t.name] = i - 1
                room -= extra
                changed = True
    return choice


def allocate_with_policy(
    source,
    budget,
    policy_path: str,
    types: tuple[str, ...] = DEFAULT_CANDIDATES,
    has_imatrix: bool = False,
):
    """`allocate --method sac`: the policy's choices, repaired to the budget; nothing measured.

    Computes only what the policy observes (weight statistics and one calibration pass for the
    activation statistics, cached per model), the exact header size and every candidate's
    bytes. Notes: target_measurements 0 (no quantize-and-measure table, no KLD probe, no
    candidate evaluation), features_seconds, policy_seconds, repair_seconds, repair_changed.
    """
    import time

    from ramp_edge.quant.export import plan_export
    from ramp_edge.recipe import Recipe
    from ramp_edge.rl.sac import policy_choices

    start = time.perf_counter()
    table = size_table(source, types, has_imatrix)
    target = budget.target_bytes(source.info.n_params)
    empty = Recipe(
        source.model.model_id, tuple((s.name, s.source_type) for s in source.specs), "sac"
    )
    header = plan_export(source, empty).header_bytes  # does not depend on the types chosen
    capacity = target - header - _pad(table.fixed_bytes)
    lo = sum(_pad(t.options[-1][1]) for t in table.tensors)
    if capacity < lo:
        smallest = lo + header + _pad(table.fixed_bytes)
        raise below_smallest_file(budget, target, smallest, source.info.n_params)
    picked = policy_choices(source, table, capacity, policy_path)
    repair_start = time.perf_counter()
    choice = repair_to_budget(table, picked.target_bpw, picked.score, capacity)
    chosen = {t.name: t.options[choice[t.name]][0] for t in table.tensors}
    allocation = tuple((s.name, chosen.get(s.name, s.source_type)) for s in source.specs)
    recipe = Recipe(source.model.model_id, allocation, "sac", str(budget))
    size = plan_export(source, recipe).size_bytes
    if size > target:  # cannot happen with the exact header; refuse rather than mislead
        raise BudgetError(f"repaired allocation is {size:,} bytes, over {target:,}")
    meta = picked.meta
    notes = {
        "predicted_bytes": size,
        "target_bytes": target,
        "target_measurements": 0,
        "policy": str(policy_path),
        "policy_models": list(meta.get("models", [])),
        "policy_steps": meta.get("steps"),
        "policy_bytes_before_repair": picked.policy_bytes,
        # the policy's own choice against the bytes it had: > 1 means repair had to shrink
        "policy_size_ratio": round(picked.policy_bytes / max(picked.capacity, 1), 4),
        "repair_changed": sum(1 for n, q in chosen.items() if picked.types.get(n) != q),
        "features_seconds": round(picked.features_seconds, 3),
        "policy_seconds": round(picked.policy_seconds, 3),
        "repair_seconds": round(time.perf_counter() - repair_start, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return Recipe(recipe.model_id, recipe.allocation, "sac", str(budget), notes)
