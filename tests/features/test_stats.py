"""Calibration statistics in torch: shapes, aliasing, GGUF == HF, cache, progress."""

from __future__ import annotations

import numpy as np
import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.models import resolve

N_SEQ, SEQ_LEN, N_SAMPLE = 4, 128, 64  # as in tests/features/conftest.py

pytestmark = pytest.mark.torch


def test_calibration_tokens_windows(stories_tokens):
    assert stories_tokens.shape == (N_SEQ, SEQ_LEN)
    assert stories_tokens.dtype == np.int64
    assert (stories_tokens[:, 0] == 1).all()  # llama SPM vocab adds BOS: first token replaced
    assert len(np.unique(stories_tokens[:, 1:])) > 50


def test_stats_shapes_and_sharing(stories_stats):
    s = stories_stats
    assert s.n_tokens == N_SEQ * SEQ_LEN
    # q/k/v share the attn_norm output, gate/up the ffn_norm output
    assert s.weight_input["blk.2.attn_k.weight"] == s.weight_input["blk.2.attn_q.weight"]
    assert s.weight_input["blk.2.attn_v.weight"] == s.weight_input["blk.2.attn_q.weight"]
    assert s.weight_input["blk.2.ffn_up.weight"] == s.weight_input["blk.2.ffn_gate.weight"]
    assert s.weight_input["blk.2.attn_output.weight"] == "blk.2.attn_output.weight"
    assert len(s.inputs) == 5 * 4 + 1  # 4 distinct inputs per block + lm_head
    down = s.for_weight("blk.0.ffn_down.weight")
    assert down.n_in == 172 and down.count == N_SEQ * SEQ_LEN
    assert down.sample.shape == (N_SAMPLE, 172)  # bounded: N_SAMPLE rows whatever the token count
    for c in s.inputs.values():
        assert np.all(c.max_abs >= c.mean_abs) and np.all(c.m4 >= c.m2**2 * (1 - 1e-9))
        assert np.all(np.abs(c.sample) <= c.max_abs[None, :] + 1e-6)


def test_stats_from_gguf_and_hf_are_identical(
    stories_gguf, stories_hf, stories_tokens, stories_stats
):
    from ramp_edge.features.stats import collect_stats

    hf = collect_stats(
        resolve(str(stories_hf)), tokens=stories_tokens, n_sample=N_SAMPLE, use_cache=False
    )
    assert hf.weight_input == stories_stats.weight_input
    for key, c in stories_stats.inputs.items():
        h = hf.inputs[key]
        for field in ("max_abs", "sum_abs", "sum2", "sum4", "sample"):
            np.testing.assert_array_equal(
                getattr(h, field), getattr(c, field), err_msg=f"{key}.{field}"
            )


def test_cache_and_progress(stories_gguf, stories_tokens, tmp_path, monkeypatch):
    from ramp_edge.features import stats as S

    monkeypatch.setenv("RAMP_EDGE_CACHE", str(tmp_path))
    model = resolve(str(stories_gguf))
    calls = []
    first = S.collect_stats(
        model,
        tokens=stories_tokens[:2, :64],
        n_sample=8,
        progress=lambda d, t, desc: calls.append((d, t)),
    )
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)
    files = list((tmp_path / "stats").glob("*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(S, "load_torch_model", lambda m: pytest.fail("cache not used"))
    again = S.collect_stats(model, tokens=stories_tokens[:2, :64], n_sample=8)
    assert again.key == first.key
    np.testing.assert_array_equal(
        again.for_weight("output.weight").sum2, first.for_weight("output.weight").sum2
    )


def test_hf_dir_without_tokenizer_needs_tokens(stories_hf):
    from ramp_edge.features.stats import calibration_tokens

    with pytest.raises(ConfigError, match="no tokenizer"):
        calibration_tokens(resolve(str(stories_hf)), n_seq=1, seq_len=16)


def test_unknown_data(stories_gguf):
    from ramp_edge.features.stats import calibration_tokens

    with pytest.raises(ConfigError, match="unknown calibration data"):
        calibration_tokens(resolve(str(stories_gguf)), data="no-such-set")
