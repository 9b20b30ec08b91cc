"""Error-compensated (GPTQ-style) quantization through ggml's real quantizer."""

from __future__ import annotations

import numpy as np
import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.quant import quantizer
from ramp_edge.quant.compensate import compensated_quantize, inverse_cholesky, output_error


def _correlated_inputs(n: int, tokens: int = 4096, seed: int = 0) -> np.ndarray:
    """Activations with strongly correlated channels and a few outliers, like a real layer's."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(n, n)) / np.sqrt(n)
    x = rng.normal(size=(tokens, n)) @ (np.eye(n) + 2.0 * mix)
    x[:, rng.choice(n, 3, replace=False)] *= 8.0
    return x


def test_inverse_cholesky_factors_the_damped_inverse():
    x = _correlated_inputs(64)
    h = x.T @ x / len(x)
    u = inverse_cholesky(h, damp=0.01)
    assert np.allclose(np.triu(u), u)
    damped = h + 0.01 * np.mean(np.diag(h)) * np.eye(64)
    assert np.allclose(u.T @ u, np.linalg.inv(damped), rtol=1e-6, atol=1e-9)


def test_dead_columns_do_not_break_the_factor():
    x = _correlated_inputs(64)
    x[:, 5] = 0.0
    u = inverse_cholesky(x.T @ x)
    assert np.all(np.isfinite(u))


@pytest.mark.parametrize("qtype", ["Q4_0", "IQ4_NL", "Q3_K", "Q5_K"])
def test_compensation_lowers_the_output_error(qtype):
    n = 512
    x = _correlated_inputs(n)
    h = x.T @ x / len(x)
    rng = np.random.default_rng(1)
    w = rng.normal(scale=0.02, size=(96, n)).astype(np.float32)
    rtn = quantizer.quantize(w, qtype, np.diag(h).astype(np.float32))
    ours = compensated_quantize(w, qtype, h)
    assert ours.shape == rtn.shape and ours.dtype == np.uint8
    assert quantizer.validate(ours, qtype)
    err_rtn = output_error(w, quantizer.to_float(rtn, qtype, n), h)
    err_ours = output_error(w, quantizer.to_float(ours, qtype, n), h)
    assert err_ours < 0.8 * err_rtn, (err_ours, err_rtn)


def test_uncorrelated_inputs_leave_nothing_to_compensate():
    n = 256
    rng = np.random.default_rng(2)
    w = rng.normal(scale=0.02, size=(32, n)).astype(np.float32)
    h = np.eye(n) * 3.0
    ours = quantizer.to_float(compensated_quantize(w, "Q4_0", h), "Q4_0", n)
    rtn = quantizer.to_float(quantizer.quantize(w, "Q4_0", np.ones(n, dtype=np.float32)), "Q4_0", n)
    # Not byte-identical: ggml weighs a block's error by the mean square of the row it is
    # given, here one block range. The output error is the same to a few percent.
    assert output_error(w, ours, h) == pytest.approx(output_error(w, rtn, h), rel=0.03)


def test_bad_shapes_are_refused():
    w = np.zeros((4, 64), dtype=np.float32)
    with pytest.raises(ConfigError, match="Hessian has shape"):
        compensated_quantize(w, "Q4_0", np.eye(32))
    with pytest.raises(ConfigError, match="divisible by 256"):
        compensated_quantize(w, "Q4_K", np.eye(64))
    bad = np.eye(64)
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        compensated_quantize(w, "Q4_0", bad)
