"""A tiny SAC run and a zero-shot application on the stories260K fixture."""

from __future__ import annotations

import zipfile

import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")


@pytest.fixture(scope="module")
def stories(stories_gguf):
    from ramp_edge.allocate.sensitivity import measure_sensitivity
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    source = open_source(resolve(str(stories_gguf)))
    return source, measure_sensitivity(source)


@pytest.mark.slow
def test_train_then_apply_fits_budget(stories, tmp_path):
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.quant.export import plan_export
    from ramp_edge.recipe import Recipe, validate
    from ramp_edge.rl import sac
    from ramp_edge.rl.env import make_task

    source, table = stories
    task = make_task(source, table)
    seen = []
    out = tmp_path / "policy.zip"
    result = sac.train(
        [task],
        out,
        steps=64,
        budgets_bpw=(11.0, 12.0),
        checkpoint_every=32,
        progress=lambda d, t, desc: seen.append((d, t)),
    )
    assert out.is_file() and result.steps == 64
    assert seen and seen[-1] == (64, 64)
    assert out.with_name("policy.ckpt.zip").is_file()
    with zipfile.ZipFile(out) as zf:
        assert sac.META_MEMBER in zf.namelist()
    meta = sac.read_metadata(out)
    assert meta["system"]["ramp_edge"] and meta["obs_dim"] == 29 and "prior" in meta

    from ramp_edge.allocate.repair import allocate_with_policy

    budget = parse_budget("11.5bpw")
    recipe = allocate_with_policy(source, budget, str(out))
    assert isinstance(recipe, Recipe) and recipe.method == "sac"
    assert recipe.notes["target_measurements"] == 0
    validate(recipe, source)
    size = plan_export(source, recipe).size_bytes
    assert size <= budget.target_bytes(source.info.n_params)

    # --method predicted: the policy's prior alone (the knapsack over its predicted errors)
    from ramp_edge.allocate.api import allocate

    prior = allocate(source, budget, "predicted", policy=str(out))
    assert prior.method == "predicted" and prior.notes["target_measurements"] == 0
    assert prior.notes["estimated_error"] > 0  # the prediction, in the knapsack's units
    assert plan_export(source, prior).size_bytes <= budget.target_bytes(source.info.n_params)

    # resumable from the periodic checkpoint, which carries the metadata too
    ckpt = out.with_name("policy.ckpt.zip")
    assert sac.read_metadata(ckpt)["steps"] in (32, 64)
    again = sac.train([task], tmp_path / "more.zip", steps=32, budgets_bpw=(11.0,), resume=ckpt)
    assert again.steps > 32


def test_read_metadata_rejects_non_policy(tmp_path):
    from ramp_edge.errors import ArtifactError, ConfigError
    from ramp_edge.rl import sac

    bad = tmp_path / "x.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("data", "{}")
    with pytest.raises(ArtifactError):
        sac.read_metadata(bad)
    with pytest.raises(ConfigError):
        sac.read_metadata(tmp_path / "missing.zip")


@pytest.mark.slow
def test_train_on_measured_kld_reward(stories, tmp_path, monkeypatch):
    """The paper's reward: the quality term is the assembled model's measured KLD."""
    # Evaluations are cached on disk: an empty cache, so a rerun still measures.
    monkeypatch.setenv("RAMP_EDGE_CACHE", str(tmp_path / "cache"))
    from ramp_edge.evaluate.assembled import EvalSettings
    from ramp_edge.rl import sac
    from ramp_edge.rl.env import make_task

    source, table = stories
    task = make_task(source, table)
    quality = sac.kld_quality(source, EvalSettings(n_ctx=64, n_chunks=1))
    calls = []

    def counted(t, types):
        calls.append(dict(types))
        return quality(t, types)

    out = tmp_path / "kld.zip"
    sac.train(
        [task],
        out,
        steps=96,
        budgets_bpw=(11.0, 12.0),
        checkpoint_every=0,
        true_quality=counted,
        true_every=1,
        eval_every=48,
    )
    meta = sac.read_metadata(out)
    assert meta["quality"] == "measured KLD"
    # demonstrations, every training episode and every evaluation point were measured
    assert len(calls) >= len(meta["demonstrations"]) and meta["demonstrations"]["episodes"] >= 2
    steps = [s for s, _ in meta["evaluation"]["history"]]
    assert steps[0] == 0 and len(steps) >= 3
    assert all(v <= 0 for _, v in meta["evaluation"]["history"])
    assert quality.evaluator.model_runs >= 2
