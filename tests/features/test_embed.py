"""The 11-dim embedding: finite, deterministic, identical from GGUF and HF, documented names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ramp_edge.features import embed
from ramp_edge.features.embed import (
    FEATURE_NAMES,
    N_FEATURES,
    LayerFeatures,
    ModelFeatures,
    compute_features,
)
from ramp_edge.models import resolve


def test_every_feature_is_documented():
    assert N_FEATURES == 11
    for name in FEATURE_NAMES:
        assert f"``{name}``" in (embed.__doc__ or ""), name


def test_weight_moments_match_numpy():
    rng = np.random.default_rng(0)
    w = rng.standard_t(5, size=(300, 70)).astype(np.float32)
    std, kurt, max_abs = embed.weight_moments(w, chunk=1000)
    w64 = w.astype(np.float64)
    assert std == pytest.approx(w64.std(), rel=1e-9)
    d = w64 - w64.mean()
    assert kurt == pytest.approx((d**4).mean() / d.var() ** 2, rel=1e-9)
    assert max_abs == pytest.approx(np.abs(w64).max())


def test_q4_error_pads_rows_that_do_not_fit():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 172)).astype(np.float32)  # 172 is not a multiple of 32
    err = embed.q4_relative_error(w)
    assert 0.05 < err < 0.2  # Q4_0 on Gaussian rows: about 0.1
    assert embed.q4_relative_error(np.zeros((4, 64), np.float32)) == 0.0


def test_without_stats_activation_features_are_zero(stories_source):
    feats = compute_features(stories_source, None)
    m = feats.matrix()
    assert m.shape == (len(feats.tensors), 11) and np.isfinite(m).all()
    assert (m[:, :3] == 0).all()
    names = [t.name for t in feats.tensors]
    assert names[0] == "token_embd.weight" and "output.weight" in names
    assert len(names) == 2 + 5 * 7  # every 2-D weight of stories260K
    roles = {t.name: t.role for t in feats.tensors}
    assert roles["blk.3.ffn_down.weight"] == "ffn_down" and roles["output.weight"] == "output"


def test_round_trip_dict(stories_source):
    feats = compute_features(stories_source, None)
    back = ModelFeatures.from_dict(feats.to_dict())
    assert back == feats
    with pytest.raises(Exception, match="features"):
        LayerFeatures("x", "other", 0, (0.0,) * 10)
    with pytest.raises(Exception, match="non-finite"):
        LayerFeatures("x", "other", 0, (math.nan,) + (0.0,) * 10)


@pytest.mark.torch
def test_features_finite_deterministic_and_structured(stories_source, stories_stats):
    a = compute_features(stories_source, stories_stats)
    b = compute_features(stories_source, stories_stats)
    assert a == b
    m = a.matrix()
    assert np.isfinite(m).all() and m.shape[1] == 11
    f = a.by_name()
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    # structure
    assert f["token_embd.weight"].values[col["rel_depth"]] == 0.0
    assert f["output.weight"].values[col["rel_depth"]] == 1.0
    assert (
        f["blk.0.attn_q.weight"].values[col["rel_depth"]]
        < f["blk.4.attn_q.weight"].values[col["rel_depth"]]
    )
    assert f["blk.0.ffn_down.weight"].values[col["log_fan_in"]] == pytest.approx(
        math.log2(172 / 64)
    )
    assert f["blk.0.attn_q.weight"].values[col["log_fan_in"]] == 0.0
    # q/k/v read the same input, so they share the activation features
    q, k = f["blk.1.attn_q.weight"].values, f["blk.1.attn_k.weight"].values
    assert q[:3] == k[:3]
    # per-model centring: block medians are 0
    blocks = np.array([t.values for t in a.tensors if t.layer >= 0])
    assert np.median(blocks[:, col["act_log_mean_abs"]]) == pytest.approx(0.0, abs=1e-12)
    assert np.median(blocks[:, col["w_log_std"]]) == pytest.approx(0.0, abs=1e-12)
    # an untied token_embd is a lookup: no activation features; the output matmul has them
    assert f["token_embd.weight"].values[:3] == (0.0, 0.0, 0.0)
    assert f["output.weight"].values[col["act_outlier_ratio"]] > 0


@pytest.mark.torch
def test_features_identical_from_gguf_and_hf(
    stories_hf, stories_tokens, stories_source, stories_stats
):
    from ramp_edge.features.stats import collect_stats
    from ramp_edge.source import open_source

    hf_model = resolve(str(stories_hf))
    hf_stats = collect_stats(hf_model, tokens=stories_tokens, n_sample=64, use_cache=False)
    from_hf = compute_features(open_source(hf_model), hf_stats).by_name()
    from_gguf = compute_features(stories_source, stories_stats).by_name()
    # The GGUF carries an untied output copy (llama2c converter); the HF model is tied, so its
    # token_embd doubles as the output matmul and has the output's activation features.
    assert set(from_gguf) - set(from_hf) == {"output.weight"}
    for name, feats in from_hf.items():
        if name == "token_embd.weight":
            assert feats.values[:3] == from_gguf["output.weight"].values[:3]
            assert feats.values[3:7] == from_gguf[name].values[3:7]
            continue
        assert feats.values == from_gguf[name].values, name
