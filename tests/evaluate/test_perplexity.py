import numpy as np
import pytest

from ramp_edge.evaluate.metrics import kld_from_topk, log_softmax, perplexity_from_nll, top_k
from ramp_edge.evaluate.perplexity import kl_divergence, perplexity


def test_topk_kld_is_zero_for_identical_and_positive_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 1000)) * 3
    logp = log_softmax(logits)
    ref = top_k(logp, np.arange(5), k=64)
    assert np.allclose(kld_from_topk(ref, slice(0, 5), logp), 0, atol=1e-6)
    other = log_softmax(logits + rng.standard_normal((5, 1000)))
    approx = kld_from_topk(ref, slice(0, 5), other)
    exact = (np.exp(logp) * (logp - other)).sum(axis=1)
    assert np.all(approx > 0) and np.all(approx <= exact + 1e-9)


def test_full_k_kld_is_exact():
    rng = np.random.default_rng(1)
    p = log_softmax(rng.standard_normal((3, 50)))
    q = log_softmax(rng.standard_normal((3, 50)))
    ref = top_k(p, np.zeros(3, dtype=int), k=50)
    exact = (np.exp(p) * (p - q)).sum(axis=1)
    assert np.allclose(kld_from_topk(ref, slice(0, 3), q), exact, atol=1e-5)


def test_perplexity_from_nll():
    ppl, err = perplexity_from_nll(np.full(10, np.log(7.0)))
    assert ppl == pytest.approx(7.0) and err == pytest.approx(0.0)


@pytest.mark.llama
def test_self_kld_is_zero(smollm2):
    r = kl_divergence(smollm2, smollm2, n_chunks=1)
    assert r.mean_kld < 1e-6 and r.same_top_p == 1.0 and r.ppl_ratio == pytest.approx(1.0)
    assert r.n_tokens == 255  # second half of one 512-token window, minus the last position


@pytest.mark.llama
@pytest.mark.slow
def test_quality_orders_q8_q4km_q4_0(tmp_path, smollm2):
    from ramp_edge.models import ResolvedModel
    from ramp_edge.quant.export import export_model
    from ramp_edge.recipe import build
    from ramp_edge.source import open_source

    source = open_source(ResolvedModel("smollm2-135m", "gguf", smollm2))
    results = {}
    for spec in ("Q8_0", "Q4_K_M", "Q4_0"):
        path = export_model(source, build(source, spec), tmp_path / f"{spec}.gguf").path
        results[spec] = kl_divergence(path, smollm2, n_chunks=3)
    assert results["Q8_0"].ppl_cand <= results["Q4_K_M"].ppl_cand <= results["Q4_0"].ppl_cand
    assert results["Q8_0"].mean_kld < results["Q4_K_M"].mean_kld < results["Q4_0"].mean_kld
    ppl = perplexity(tmp_path / "Q8_0.gguf", n_chunks=3)
    assert ppl.ppl == pytest.approx(results["Q8_0"].ppl_cand, rel=1e-6)
