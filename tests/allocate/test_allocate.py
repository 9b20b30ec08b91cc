import json

import pytest

from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.api import allocate
from ramp_edge.allocate.budget import parse_budget
from ramp_edge.allocate.sensitivity import SensitivityTable, TensorCosts
from ramp_edge.errors import BudgetError, ConfigError
from ramp_edge.models import ResolvedModel
from ramp_edge.quant.export import plan_export
from ramp_edge.source import open_source


def test_parse_budget():
    assert parse_budget("4.6bpw").target_bytes(1000) == 575
    assert parse_budget("95MB").target_bytes(1) == 95_000_000
    assert parse_budget("90MiB").target_bytes(1) == 90 * 2**20
    for bad in ("", "4.6", "-3bpw", "lots"):
        with pytest.raises(ConfigError):
            parse_budget(bad)


def _toy_table():
    # two tensors; the second is 10x more sensitive per byte
    a = TensorCosts("a", (32, 10), 320, (("Q8_0", 340, 0.001), ("Q4_0", 180, 0.05)))
    b = TensorCosts("b", (32, 10), 320, (("Q8_0", 340, 0.001), ("Q4_0", 180, 0.5)))
    return SensitivityTable("toy", (a, b), 0)


def test_knapsack_spends_bytes_where_they_help_most():
    table = _toy_table()
    choice = ks.allocate_knapsack(table, 352 + 192)
    assert ks.choice_types(table, choice) == {"a": "Q4_0", "b": "Q8_0"}
    with pytest.raises(BudgetError):
        ks.allocate_knapsack(table, 100)


def test_knapsack_is_optimal_on_small_random_tables():
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(100):
        tensors = []
        for i in range(5):
            errs = sorted(rng.random() for _ in range(3))
            sizes = sorted((rng.randrange(1, 20) * 32 for _ in range(3)), reverse=True)
            tensors.append(
                TensorCosts(
                    f"t{i}", (32, 1), 32, tuple((f"T{j}", sizes[j], errs[j]) for j in range(3))
                )
            )
        table = SensitivityTable("r", tuple(tensors), 0)
        cap = rng.randrange(ks.min_max_bytes(table)[0], ks.min_max_bytes(table)[1] + 1)
        best = min(
            (
                sum(t.options[i][2] for t, i in zip(tensors, combo, strict=True))
                for combo in itertools.product(range(3), repeat=5)
                if sum(ks._pad(t.options[i][1]) for t, i in zip(tensors, combo, strict=True)) <= cap
            ),
        )
        got = ks.choice_error(table, ks.allocate_knapsack(table, cap))
        # bytes are multiples of 32 and the DP unit is 1 byte here: exactly optimal
        assert got == pytest.approx(best, abs=1e-12)
        assert ks.choice_bytes(table, ks.allocate_knapsack(table, cap)) <= cap


@pytest.mark.llama
@pytest.mark.parametrize("method", ["knapsack", "greedy", "uniform"])
def test_allocation_meets_budget_within_half_percent(smollm2, method):
    source = open_source(ResolvedModel("smollm2-135m", "gguf", smollm2))
    budget = parse_budget("4.6bpw")
    recipe = allocate(source, budget, method, calibrate_roles=False)
    size = plan_export(source, recipe).size_bytes
    target = budget.target_bytes(source.info.n_params)
    assert size <= target
    if method != "uniform":
        assert size >= target * 0.995


def test_infeasible_budget(smollm2):
    source = open_source(ResolvedModel("smollm2-135m", "gguf", smollm2))
    with pytest.raises(BudgetError, match="below the smallest"):
        allocate(source, parse_budget("1bpw"), "knapsack", calibrate_roles=False)


@pytest.mark.llama
def test_allocate_cli_recipe_exports(invoke, smollm2, tmp_path):
    out = tmp_path / "r.json"
    result = invoke(
        ["allocate", "smollm2-135m", "--budget", "4.6bpw", "--out", out, "--json", "--no-calibrate"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["predicted_bytes"] <= doc["target_bytes"]
    result = invoke(
        ["export", "smollm2-135m", "--recipe", out, "--out", tmp_path / "m.gguf", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.gguf").stat().st_size == doc["predicted_bytes"]
    bad = invoke(["allocate", "smollm2-135m", "--budget", "0.5bpw", "--no-calibrate"])
    assert bad.exit_code == 4 and "below the smallest" in bad.stderr


@pytest.mark.llama
@pytest.mark.slow
def test_calibrated_knapsack_beats_uniform_iq4_nl_at_smaller_size(smollm2, tmp_path):
    """The headline claim in miniature: lower KLD than a uniform 4.5-bit type, at most its size."""
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.quant.export import export_model
    from ramp_edge.recipe import build

    source = open_source(ResolvedModel("smollm2-135m", "gguf", smollm2))
    anchor = export_model(source, build(source, "uniform:IQ4_NL"), tmp_path / "a.gguf")
    budget = parse_budget(f"{anchor.plan.size_bytes}b")
    ours = export_model(source, allocate(source, budget, "knapsack"), tmp_path / "o.gguf")
    assert ours.plan.size_bytes <= anchor.plan.size_bytes
    k_anchor = kl_divergence(anchor.path, smollm2, n_chunks=2).mean_kld
    k_ours = kl_divergence(ours.path, smollm2, n_chunks=2).mean_kld
    assert k_ours < 0.85 * k_anchor


@pytest.mark.llama
def test_latency_budget_is_met_and_infeasible_is_clear(invoke, smollm2):
    result = invoke(
        [
            "allocate",
            "smollm2-135m",
            "--max-ms-per-token",
            "9",
            "--device",
            "raspberry-pi-5-8gb",
            "--no-calibrate",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["predicted_ms_per_token"] <= 9.0
    result = invoke(
        [
            "allocate",
            "smollm2-135m",
            "--max-ms-per-token",
            "1",
            "--device",
            "raspberry-pi-5-8gb",
            "--no-calibrate",
        ]
    )
    assert result.exit_code == 4 and "fastest" in result.stderr
    both = invoke(["allocate", "smollm2-135m", "--budget", "4bpw", "--max-ms-per-token", "9"])
    assert both.exit_code == 2


def test_preset_method_skips_presets_unusable_without_imatrix(smollm2):
    """IQ1_M (82.9 MB) and IQ2_M (85.6 MB) fit 5.0/5.2bpw on SmolLM2 but are unusable (KLD > 1)
    without an importance matrix; llama-quantize refuses IQ1_M outright."""
    from ramp_edge.errors import BudgetError
    from ramp_edge.models import resolve
    from ramp_edge.quant.presets import IMATRIX_ADVISED
    from ramp_edge.source import open_source

    source = open_source(resolve(str(smollm2)))
    for budget in ("5.0bpw", "5.2bpw"):
        with pytest.raises(BudgetError, match="no preset fits"):
            allocate(source, parse_budget(budget), "preset")
    recipe = allocate(source, parse_budget("5.5bpw"), "preset")
    assert recipe.method.split(":")[1] not in IMATRIX_ADVISED


def test_sensitivity_scales_each_tensor_and_fills_gaps_from_the_fallback():
    from ramp_edge.allocate.sensitivity import scale_by_sensitivity

    table = _toy_table()
    scaled = scale_by_sensitivity(table, {"a": 10.0, "b": 0.1})
    assert [o[2] for o in scaled.by_name()["a"].options] == pytest.approx([0.01, 0.5])
    assert [o[2] for o in scaled.by_name()["b"].options] == pytest.approx([0.0001, 0.05])
    # per byte, "a" is now the sensitive one: the knapsack upgrades it instead of "b"
    assert ks.choice_types(scaled, ks.allocate_knapsack(scaled, 352 + 192)) == {
        "a": "Q8_0",
        "b": "Q4_0",
    }
    fallback = SensitivityTable("toy", (table.tensors[1],), 0)
    partial = scale_by_sensitivity(table, {"a": 2.0}, fallback)
    assert partial.by_name()["b"] == table.tensors[1]  # not covered: the fallback's row
    assert scale_by_sensitivity(table, {"a": 2.0}).by_name()["b"].options[1][2] == 1.0  # median


@pytest.mark.llama
def test_allocate_follows_the_sensitivity(smollm2):
    """A tensor the sensitivity marks as costly gets the largest type; the rest pay for it."""
    source = open_source(ResolvedModel("smollm2-135m", "gguf", smollm2))
    budget = parse_budget("4.6bpw")
    names = [s.name for s in source.specs if s.name.endswith("ffn_down.weight")]
    flat = {n: 1.0 for n in (s.name for s in source.specs)}
    costly = {**flat, names[5]: 1e6}
    base = allocate(source, budget, "knapsack", calibrate_roles=False, sensitivity=flat)
    moved = allocate(source, budget, "knapsack", calibrate_roles=False, sensitivity=costly)
    assert moved.types[names[5]] != base.types[names[5]]
    assert moved.types[names[5]] in ("Q8_0", "Q4_1")  # the largest, or the source's own bytes
    assert plan_export(source, moved).size_bytes <= budget.target_bytes(source.info.n_params)
