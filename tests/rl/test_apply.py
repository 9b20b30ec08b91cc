"""Measurement-free apply (issue 13): sizes only, repair by the policy's own preferences."""

from __future__ import annotations

import pytest

pytest.importorskip("stable_baselines3")


@pytest.fixture(scope="module")
def stories_source(stories_gguf):
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    return open_source(resolve(str(stories_gguf)))


def test_size_table_matches_measured_candidates_without_quantizing(stories_source, monkeypatch):
    from ramp_edge.allocate import repair
    from ramp_edge.allocate.sensitivity import measure_sensitivity
    from ramp_edge.quant import quantizer

    measured = measure_sensitivity(stories_source, use_cache=False)

    def refuse(*a, **k):
        raise AssertionError("size_table must not quantize")

    monkeypatch.setattr(quantizer, "quantize", refuse)
    sizes = repair.size_table(stories_source)
    assert [t.name for t in sizes.tensors] == [t.name for t in measured.tensors]
    for s, m in zip(sizes.tensors, measured.tensors, strict=True):
        assert [(q, b) for q, b, _ in s.options] == [(q, b) for q, b, _ in m.options]
        assert all(e == 0.0 for _, _, e in s.options)
    assert sizes.fixed_bytes == measured.fixed_bytes


def test_repair_shrinks_low_preference_first_and_fits(stories_source):
    from ramp_edge.allocate import repair
    from ramp_edge.errors import BudgetError

    table = repair.size_table(stories_source)
    names = [t.name for t in table.tensors]
    # the policy wanted 8 bpw everywhere, and more than par for the first half
    target = {n: 8.5 for n in names}
    score = {n: (1.0 if i < len(names) // 2 else -1.0) for i, n in enumerate(names)}
    hi = sum(repair._pad(t.options[0][1]) for t in table.tensors)
    lo = sum(repair._pad(t.options[-1][1]) for t in table.tensors)
    cap = (hi + lo) // 2
    choice = repair.repair_to_budget(table, target, score, cap)
    used = repair._bytes(table, choice)
    assert used <= cap
    # no single one-step upgrade is left that would still fit
    for t in table.tensors:
        i = choice[t.name]
        if i > 0:
            extra = repair._pad(t.options[i - 1][1]) - repair._pad(t.options[i][1])
            assert used + extra > cap
    bpw = {t.name: t.options[choice[t.name]][1] * 8 / t.n_params for t in table.tensors}
    liked = [bpw[n] for n in names if score[n] > 0]
    disliked = [bpw[n] for n in names if score[n] < 0]
    assert sum(liked) / len(liked) >= sum(disliked) / len(disliked)
    with pytest.raises(BudgetError):
        repair.repair_to_budget(table, target, score, lo - 1)


@pytest.mark.slow
def test_sac_allocate_measures_nothing_and_runs_in_llama_cpp(stories_source, tmp_path, monkeypatch):
    """The issue's done-when, on the tiny model: a policy, then `allocate --method sac`."""
    from ramp_edge.allocate import sensitivity
    from ramp_edge.allocate.api import allocate
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.quant.export import export_model, plan_export
    from ramp_edge.rl import sac
    from ramp_edge.rl.env import make_task

    table = sensitivity.measure_sensitivity(stories_source)
    policy = tmp_path / "p.zip"
    sac.train(
        [make_task(stories_source, table)],
        policy,
        steps=64,
        budgets_bpw=(11.0, 12.0),
        checkpoint_every=0,
    )

    def refuse(*a, **k):
        raise AssertionError("the sac path must not measure the target")

    monkeypatch.setattr("ramp_edge.allocate.api.measure_sensitivity", refuse)
    monkeypatch.setattr("ramp_edge.allocate.api.calibrate", refuse)
    monkeypatch.setattr(sensitivity, "measure_sensitivity", refuse)
    budget = parse_budget("11.5bpw")
    recipe = allocate(stories_source, budget, "sac", policy=str(policy))
    notes = recipe.notes
    assert notes["target_measurements"] == 0
    assert notes["features_seconds"] >= 0 and notes["policy_seconds"] > 0
    assert 0 <= notes["repair_changed"] <= len(table.tensors)
    target = budget.target_bytes(stories_source.info.n_params)
    size = plan_export(stories_source, recipe).size_bytes
    assert size <= target and size >= 0.95 * target
    out = tmp_path / "m.gguf"
    export_model(stories_source, recipe, out)
    assert out.stat().st_size == size
    assert kl_divergence(out, stories_source.path, n_chunks=1, n_ctx=64).mean_kld >= 0


def test_predicted_error_table_fits_and_keeps_source_free(stories_source):
    """Baseline (c): errors predicted from the policy's observation by a ridge regression."""
    import numpy as np

    from ramp_edge.allocate import knapsack as ks
    from ramp_edge.allocate.predicted import ErrorModel, source_types
    from ramp_edge.allocate.repair import size_table
    from ramp_edge.allocate.sensitivity import measure_sensitivity
    from ramp_edge.rl.env import make_task

    table = measure_sensitivity(stories_source)
    task = make_task(stories_source, table, activations=False)
    obs = np.concatenate([task.features, task.extras], 1)
    src = source_types(stories_source, table)
    model = ErrorModel.fit([table], [obs], [src])
    assert model.r2 > 0.5  # in-sample: errors fall steeply with bits, the fit must see that
    predicted = model.predict_table(size_table(stories_source), obs, src)
    for t, s in zip(predicted.tensors, src, strict=True):
        errs = {q: e for q, _, e in t.options}
        assert all(e >= 0 for e in errs.values())
        if s in errs:
            assert errs[s] == 0.0
        paid = [e for q, _, e in t.options if q != s]
        if len(paid) >= 2:
            assert paid[-1] > paid[0]  # fewer bytes, more predicted error
    lo, hi = ks.min_max_bytes(predicted)
    choice = ks.allocate_knapsack(predicted, (lo + hi) // 2)
    assert ks.choice_bytes(predicted, choice) <= (lo + hi) // 2
