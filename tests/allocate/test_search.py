"""The measured-quality search: budget kept, evaluations counted, true loss lowered."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.search import SearchSettings, groups_of, measured_search
from ramp_edge.allocate.sensitivity import SensitivityTable, TensorCosts

LADDER = (("Q8_0", 34, 0.001), ("Q5_0", 22, 0.02), ("Q4_0", 18, 0.06), ("Q2_K", 11, 0.4))


def _table(n_layers: int = 6) -> SensitivityTable:
    tensors = []
    for i in range(n_layers):
        for role in ("attn_q", "attn_v", "ffn_down"):
            opts = tuple((q, b * 100, e) for q, b, e in LADDER)
            tensors.append(TensorCosts(f"blk.{i}.{role}.weight", (3200, 1), 3200, opts))
    return SensitivityTable("toy", tuple(tensors), 0)


@dataclass
class _Eval:
    mean_kld: float


class HiddenTruth:
    """A 'true' KLD the surrogate gets wrong: attn_v is 8x more sensitive than the table says,
    ffn_down 4x less, and errors compound (superadditive) below ~4.5 bits."""

    def __init__(self, table: SensitivityTable):
        self.table = table
        self.calls = 0

    def evaluate(self, types):
        self.calls += 1
        total = 0.0
        for t in self.table.tensors:
            err = dict((q, e) for q, _, e in t.options)[types[t.name]]
            factor = 8.0 if "attn_v" in t.name else 0.25 if "ffn_down" in t.name else 1.0
            total += factor * err
        return _Eval(total + 0.5 * total**2)


def test_groups_split_roles_and_depth():
    groups = groups_of(_table(6), bands=3)
    roles = ("attn_q", "attn_v", "ffn_down")
    assert set(groups) == {f"{r}@{b}/3" for r in roles for b in (1, 2, 3)}
    assert groups["attn_v@1/3"] == ["blk.0.attn_v.weight", "blk.1.attn_v.weight"]


def test_search_beats_the_knapsack_on_the_true_loss_within_budget():
    table = _table()
    capacity = int(ks.min_max_bytes(table)[1] * 0.55)
    truth = HiddenTruth(table)
    start = ks.allocate_knapsack(table, capacity)
    start_kld = truth.evaluate(ks.choice_types(table, start)).mean_kld
    result = measured_search(table, capacity, truth, settings=SearchSettings(max_evals=60))
    assert ks.choice_bytes(table, result.choice) <= capacity
    assert result.evaluations <= 60 and truth.calls == 1 + result.evaluations
    assert result.start_kld == pytest.approx(start_kld)
    assert result.best_kld < 0.8 * start_kld  # the surrogate's optimum was far from the truth's
    final = truth.evaluate(ks.choice_types(table, result.choice)).mean_kld
    assert final == pytest.approx(result.best_kld)
    # every accepted step improved on the one before
    accepted = [s.mean_kld for s in result.steps if s.accepted]
    assert accepted == sorted(accepted, reverse=True)
    json.dumps([s.to_dict() for s in result.steps])


def test_search_respects_the_evaluation_budget():
    table = _table()
    capacity = int(ks.min_max_bytes(table)[1] * 0.55)
    truth = HiddenTruth(table)
    result = measured_search(table, capacity, truth, settings=SearchSettings(max_evals=5))
    assert result.evaluations == 5 and truth.calls == 5
    assert ks.choice_bytes(table, result.choice) <= capacity


def test_search_keeps_the_start_when_the_surrogate_is_right():
    table = _table(3)
    capacity = int(ks.min_max_bytes(table)[1] * 0.6)

    class Exact:
        def evaluate(self, types):
            return _Eval(
                sum(dict((q, e) for q, _, e in t.options)[types[t.name]] for t in table.tensors)
            )

    start = ks.allocate_knapsack(table, capacity)
    result = measured_search(table, capacity, Exact(), settings=SearchSettings(max_evals=80))
    assert result.best_kld <= result.start_kld + 1e-12
    assert result.best_kld == pytest.approx(
        Exact().evaluate(ks.choice_types(table, start)).mean_kld, rel=0.05
    )
    assert np.isfinite(result.best_kld)


def test_gains_below_the_noise_margin_are_not_taken():
    """Every other allocation measures 0.5% better than the start: noise, not a gain."""
    table = _table(3)
    capacity = int(ks.min_max_bytes(table)[1] * 0.6)
    start = ks.allocate_knapsack(table, capacity)
    start_types = ks.choice_types(table, start)

    class Noisy:
        def evaluate(self, types):
            return _Eval(1.0 if dict(types) == start_types else 0.995)

    result = measured_search(table, capacity, Noisy(), settings=SearchSettings(max_evals=40))
    assert result.choice == start and result.best_kld == 1.0
    taken = measured_search(
        table, capacity, Noisy(), settings=SearchSettings(max_evals=40, min_gain=0.0)
    )
    assert taken.choice != start and taken.best_kld == 0.995
    with pytest.raises(ValueError):
        SearchSettings(min_gain=1.0)
