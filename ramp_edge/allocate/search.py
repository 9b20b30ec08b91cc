"""Measured-quality search: start from the knapsack, then lower the model's *true* KLD.

The knapsack is exact on an additive surrogate (a sum of per-tensor output errors, scaled per
role by one KLD probe each). Below ~5 bpw errors of different tensors interact and the probe's
scale is measured at the wrong operating point, so the surrogate's optimum is not the model's.
This search keeps the knapsack's per-tensor resolution but re-measures what the surrogate gets
wrong, at the allocation being improved, with the real model (ramp_edge.evaluate.assembled):

1. Group tensors by role and depth band (attn_v of the first third, ffn_down of the last, ...).
2. Linearise: for every group, evaluate the current allocation with that group one step down
   the type ladder and one step up. The measured KLD change over the surrogate's predicted
   change is the group's local correction (interactions included, since everything else stays
   at the current, already quantized, allocation).
3. Re-solve the knapsack on the corrected table at the same byte capacity; evaluate it.
4. Exchange: from the same measurements, pair the upgrades with the best measured KLD gain per
   byte with the downgrades of least measured loss per byte that pay for them; evaluate the
   best few pairs.
5. Keep whatever measured best; repeat from 2 around it until the evaluation budget is spent.

Every accepted allocation was measured end to end, and every candidate fits the byte capacity.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.sensitivity import SensitivityTable, TensorCosts
from ramp_edge.quant.presets import category, layer_index

logger = logging.getLogger(__name__)
ProgressFn = Callable[[float, float, str], None]

CORRECTION_RANGE = (1 / 30, 30.0)  # a group's measured/surrogate ratio is clipped to this
EPSILON_KLD = 1e-6  # measured changes below this count as "no change"


class QualityEvaluator(Protocol):
    """Anything that measures an allocation's end-to-end KLD (ramp_edge.evaluate.assembled)."""

    def evaluate(self, types: Mapping[str, str]) -> Any: ...  # returns .mean_kld


@dataclass(frozen=True, slots=True)
class SearchSettings:
    max_evals: int = 120  # model evaluations, cached ones included
    bands: int = 3  # depth bands per role
    exchanges: int = 4  # exchange candidates evaluated per round

    def __post_init__(self) -> None:
        if not 1 <= self.max_evals <= 10_000:
            raise ValueError("max_evals must be in 1..10000")
        if self.bands < 1:
            raise ValueError("bands must be >= 1")


@dataclass(frozen=True, slots=True)
class Step:
    """One evaluation of the search, for the record."""

    index: int
    kind: str  # start | probe-down | probe-up | resolve | exchange
    group: str
    mean_kld: float
    tensor_bytes: int
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "group": self.group,
            "mean_kld": self.mean_kld,
            "tensor_bytes": self.tensor_bytes,
            "accepted": self.accepted,
        }


@dataclass(slots=True)
class SearchResult:
    choice: ks.Choice
    start_kld: float
    best_kld: float
    evaluations: int
    rounds: int
    steps: list[Step] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        gain = 1 - self.best_kld / self.start_kld if self.start_kld > 0 else 0.0
        return {
            "start_kld": round(self.start_kld, 6),
            "best_kld": round(self.best_kld, 6),
            "calibration_kld_reduction": round(gain, 4),
            "evaluations": self.evaluations,
            "rounds": self.rounds,
            "accepted_steps": sum(1 for s in self.steps if s.accepted and s.kind != "start"),
        }


def groups_of(table: SensitivityTable, bands: int) -> dict[str, list[str]]:
    """Tensor names by role and depth band, e.g. 'ffn_down@2/3' (non-layer tensors: by role)."""
    n_layers = 1 + max((layer_index(t.name) for t in table.tensors), default=0)
    out: dict[str, list[str]] = {}
    for t in table.tensors:
        li = layer_index(t.name)
        role = category(t.name)
        key = role if li < 0 else f"{role}@{min(bands - 1, li * bands // n_layers) + 1}/{bands}"
        out.setdefault(key, []).append(t.name)
    return out


def _step(t: TensorCosts, idx: int, direction: int) -> int | None:
    """The next option with strictly fewer (direction +1) or more (-1) bytes, least error first."""
    here = t.options[idx][1]
    if direction > 0:
        cands = [j for j in range(len(t.options)) if t.options[j][1] < here]
        if not cands:
            return None
        top = max(t.options[j][1] for j in cands)
    else:
        cands = [j for j in range(len(t.options)) if t.options[j][1] > here]
        if not cands:
            return None
        top = min(t.options[j][1] for j in cands)
    level = [j for j in cands if t.options[j][1] == top]
    return min(level, key=lambda j: t.options[j][2])


@dataclass(frozen=True, slots=True)
class _Probe:
    group: str
    direction: int  # +1 down (fewer bytes), -1 up
    moves: dict[str, int]
    d_bytes: int  # bytes change (negative for a downgrade)
    d_surrogate: float  # surrogate error change
    d_kld: float  # measured KLD change


def _scaled(table: SensitivityTable, scale: Mapping[str, float]) -> SensitivityTable:
    return SensitivityTable(
        table.model_id,
        tuple(
            TensorCosts(
                t.name, t.shape, t.n_params,
                tuple((q, b, e * scale.get(t.name, 1.0)) for q, b, e in t.options),
            )
            for t in table.tensors
        ),
        table.fixed_bytes,
    )


def measured_search(
    table: SensitivityTable,
    capacity: int,
    evaluator: QualityEvaluator,
    start: ks.Choice | None = None,
    settings: SearchSettings = SearchSettings(),
    progress: ProgressFn | None = None,
) -> SearchResult:
    """Lower the measured KLD of a knapsack allocation within `capacity` tensor bytes.

    Args:
        table: the calibrated error table (the knapsack's input); corrected as measured.
        capacity: bytes the chosen tensors may take (ks.capacity_for).
        evaluator: measures an allocation (tensor -> type) end to end.
        start: the starting allocation (default: the knapsack's on `table`).
        settings: evaluation budget and grouping.
        progress: callback(done_evals, max_evals, description).

    Returns:
        The best measured allocation, its KLD on the evaluator's tokens, and every step.
    """
    by_name = table.by_name()
    groups = groups_of(table, settings.bands)
    used = 0
    steps: list[Step] = []

    def measure(choice: ks.Choice, kind: str, group: str) -> float | None:
        nonlocal used
        if used >= settings.max_evals:
            return None
        if progress:
            progress(used, settings.max_evals, f"{kind} {group}".strip())
        used += 1
        kld = float(evaluator.evaluate(ks.choice_types(table, choice)).mean_kld)
        steps.append(Step(len(steps), kind, group, kld, ks.choice_bytes(table, choice), False))
        return kld

    def accept() -> None:
        s = steps[-1]
        steps[-1] = Step(s.index, s.kind, s.group, s.mean_kld, s.tensor_bytes, True)

    current = dict(start) if start is not None else ks.allocate_knapsack(table, capacity)
    if ks.choice_bytes(table, current) > capacity:
        current = ks.shrink(table, current, capacity)
    first = measure(current, "start", "")
    assert first is not None
    accept()
    best = first
    working = table  # the table with the corrections learnt so far
    rounds = 0
    while used < settings.max_evals:
        rounds += 1
        probes: list[_Probe] = []
        for name, members in sorted(groups.items()):
            for direction in (+1, -1):
                moves = {}
                for n in members:
                    j = _step(by_name[n], current[n], direction)
                    if j is not None:
                        moves[n] = j
                if not moves:
                    continue
                trial = {**current, **moves}
                kld = measure(trial, "probe-down" if direction > 0 else "probe-up", name)
                if kld is None:
                    break
                d_bytes = ks.choice_bytes(table, trial) - ks.choice_bytes(table, current)
                d_surr = sum(
                    working.by_name()[n].options[j][2] - working.by_name()[n].options[current[n]][2]
                    for n, j in moves.items()
                )
                probes.append(_Probe(name, direction, moves, d_bytes, d_surr, kld - best))
                if kld < best and ks.choice_bytes(table, trial) <= capacity:
                    # A free win (a cheaper or equal-size move that measured better): take it.
                    accept()
                    best, current = kld, trial
        if used >= settings.max_evals or not probes:
            break
        working = _corrected(working, groups, probes)
        candidates = [("resolve", "", ks.allocate_knapsack(working, capacity))]
        candidates += [("exchange", g, c) for g, c in _exchanges(table, current, capacity,
                                                                  probes, settings.exchanges)]
        improved = False
        for kind, group, cand in candidates:
            if cand == current:
                continue
            kld = measure(cand, kind, group)
            if kld is None:
                break
            if kld < best:
                accept()
                best, current, improved = kld, cand, True
        if not improved and rounds >= 2:
            break  # linearised twice around the same point without a gain: converged
    if progress:
        progress(settings.max_evals, settings.max_evals, "search done")
    return SearchResult(current, first, best, used, rounds, steps)


def _corrected(
    table: SensitivityTable, groups: Mapping[str, list[str]], probes: list[_Probe]
) -> SensitivityTable:
    """Scale each group's errors by its measured / predicted KLD change (geometric mean)."""
    lo, hi = CORRECTION_RANGE
    ratios: dict[str, list[float]] = {}
    for p in probes:
        if abs(p.d_surrogate) < 1e-12:
            continue
        # Downgrades should cost (d > 0), upgrades should gain (d < 0): compare magnitudes in the
        # expected direction; a move that measured the "wrong" way gets the smallest ratio.
        measured = p.d_kld if p.direction > 0 else -p.d_kld
        predicted = p.d_surrogate if p.direction > 0 else -p.d_surrogate
        if predicted <= 0:
            continue
        ratio = max(measured, EPSILON_KLD) / predicted
        ratios.setdefault(p.group, []).append(min(hi, max(lo, ratio)))
    scale: dict[str, float] = {}
    for group, values in ratios.items():
        g = math.exp(sum(math.log(v) for v in values) / len(values))
        for n in groups[group]:
            scale[n] = g
    return _scaled(table, scale)


def _exchanges(
    table: SensitivityTable,
    current: ks.Choice,
    capacity: int,
    probes: list[_Probe],
    limit: int,
) -> list[tuple[str, ks.Choice]]:
    """Upgrade a group, pay with the downgrades of least measured loss per byte; best first."""
    slack = capacity - ks.choice_bytes(table, current)
    ups = [p for p in probes if p.direction < 0 and p.d_kld < -EPSILON_KLD and p.d_bytes > 0]
    downs = [p for p in probes if p.direction > 0 and p.d_bytes < 0]
    ups.sort(key=lambda p: p.d_kld / p.d_bytes)  # most KLD gained per byte first
    downs.sort(key=lambda p: max(p.d_kld, 0.0) / -p.d_bytes)  # least KLD lost per byte first
    out: list[tuple[str, ks.Choice, float]] = []
    for up in ups:
        need = up.d_bytes - slack
        moves = dict(up.moves)
        gain = -up.d_kld
        loss = 0.0
        paid = []
        for down in downs:
            if need <= 0:
                break
            if down.group == up.group:
                continue
            moves.update(down.moves)
            need += down.d_bytes
            loss += max(down.d_kld, 0.0)
            paid.append(down.group)
        if need > 0 or loss >= gain:
            continue
        cand = {**current, **moves}
        if ks.choice_bytes(table, cand) > capacity:
            continue
        label = f"{up.group} <- {','.join(paid) or 'slack'}"
        out.append((label, cand, gain - loss))
    out.sort(key=lambda x: -x[2])
    return [(label, cand) for label, cand, _ in out[:limit]]
