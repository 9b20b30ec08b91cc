"""Input Hessians from calibration, and GPTQ-encoded GGUFs that stock llama.cpp runs."""

from __future__ import annotations

import numpy as np
import pytest

from ramp_edge.features.records import CalibrationStats

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def gram_stats(stories_gguf, stories_tokens) -> CalibrationStats:
    from ramp_edge.features.stats import collect_stats
    from ramp_edge.models import resolve

    return collect_stats(
        resolve(str(stories_gguf)), tokens=stories_tokens, n_sample=16, use_cache=False, gram=True
    )


def test_gram_is_the_sum_of_outer_products(gram_stats, stories_stats):
    assert gram_stats.has_gram and not stories_stats.has_gram
    for key, c in gram_stats.inputs.items():
        # its diagonal is the imatrix's in_sum2, accumulated the same way
        assert np.allclose(np.diag(c.gram), c.sum2, rtol=1e-4, atol=1e-6), key
        assert np.allclose(c.gram, c.gram.T, rtol=1e-5, atol=1e-6)
        assert np.all(np.linalg.eigvalsh(c.hessian) > -1e-6 * np.abs(c.hessian).max())
    hessians = gram_stats.hessians()
    # q, k and v read one input: one Hessian, shared
    assert hessians["blk.0.attn_q.weight"] is hessians["blk.0.attn_k.weight"]
    assert "output.weight" in hessians or "token_embd.weight" in hessians


def test_gram_survives_the_cache_file(gram_stats, tmp_path):
    path = gram_stats.save(tmp_path / "stats.npz")
    back = CalibrationStats.load(path)
    assert back.has_gram
    key = next(iter(gram_stats.inputs))
    assert np.array_equal(back.inputs[key].gram, gram_stats.inputs[key].gram)


def test_gptq_export_runs_in_llama_cpp_and_lowers_kld(
    gram_stats, stories_gguf, stories_source, tmp_path
):
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.features.imatrix import importance
    from ramp_edge.quant.export import export_model
    from ramp_edge.recipe import build

    imatrix = importance(gram_stats)
    recipe = build(stories_source, "uniform:Q4_0", has_imatrix=True)
    rtn = export_model(stories_source, recipe, tmp_path / "rtn.gguf", imatrix=imatrix)
    ours = export_model(
        stories_source,
        recipe,
        tmp_path / "gptq.gguf",
        imatrix=imatrix,
        hessians=gram_stats.hessians(),
    )
    # same types, same bytes: only the levels the blocks pick differ
    assert ours.plan.size_bytes == rtn.plan.size_bytes
    assert (tmp_path / "gptq.gguf").read_bytes() != (tmp_path / "rtn.gguf").read_bytes()
    kld_rtn = kl_divergence(tmp_path / "rtn.gguf", stories_gguf, n_ctx=128, n_chunks=4)
    kld_ours = kl_divergence(tmp_path / "gptq.gguf", stories_gguf, n_ctx=128, n_chunks=4)
    assert np.isfinite(kld_ours.mean_kld)
    assert kld_ours.mean_kld < kld_rtn.mean_kld, (kld_ours.mean_kld, kld_rtn.mean_kld)
