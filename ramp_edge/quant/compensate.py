"""Error-compensated quantization (GPTQ-style) to any ggml type, through ggml's own quantizer.

Round-to-nearest quantizes every block of a weight row on its own, so it minimises the weight
error. What the model feels is the layer's *output* error, ||(W - Q) x||, over the inputs x the
layer really sees. GPTQ (Frantar et al., arXiv 2210.17323) quantizes the input columns in order
and folds each column's error into the columns not yet quantized, weighted by the input's
second moment H = E[x x^T], which lowers the output error at the same bits.

Here the unit is one block column range: a block of a ggml type never spans two ranges whose
width is a multiple of the block size, so each range is quantized by `ggml_quantize_chunk`
(ramp_edge.quant.quantizer) and the row's bytes are the ranges' bytes side by side. Every type
llama.cpp has is therefore supported, the output is ordinary llama.cpp blocks, and a stock
llama.cpp runs it. Within a range, the importance ggml weighs the block's error by is the
diagonal of that range's effective Hessian after compensation (the Schur complement).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from ramp_edge.errors import ConfigError
from ramp_edge.quant import quantizer
from ramp_edge.quant.catalogue import QuantType, get

DEFAULT_DAMP = 0.01  # fraction of the mean diagonal added to H: keeps it invertible (GPTQ's value)


def inverse_cholesky(hessian: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Upper-triangular U with (H + damp * mean(diag H) * I)^-1 = U^T U.

    Columns no calibration token ever excited (zero diagonal) get diagonal 1: their error then
    costs nothing and is not propagated.
    """
    h = np.array(hessian, dtype=np.float64, copy=True)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ConfigError(f"a Hessian must be square, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ConfigError("the Hessian contains non-finite values")
    dead = np.diag(h) <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    mean_diag = float(np.mean(np.diag(h)))
    h[np.diag_indices_from(h)] += damp * mean_diag
    lower_inv = np.linalg.inv(np.linalg.cholesky(h))  # H = L L^T
    h_inv = lower_inv.T @ lower_inv
    h_inv = (h_inv + h_inv.T) / 2
    return np.linalg.cholesky(h_inv).T.copy()  # upper U, U^T U = H^-1 (GPTQ's factor)


_FACTORS: dict[tuple[int, float], tuple[weakref.ref, np.ndarray]] = {}
_FACTORS_LOCK = threading.Lock()


def _factor(hessian: np.ndarray, damp: float) -> np.ndarray:
    """inverse_cholesky, computed once per Hessian array: q/k/v share one input, and a search
    encodes each tensor at several types."""
    key = (id(hessian), damp)
    with _FACTORS_LOCK:
        hit = _FACTORS.get(key)
        if hit is not None and hit[0]() is hessian:
            return hit[1]
    u = inverse_cholesky(hessian, damp)
    try:
        ref = weakref.ref(hessian, lambda _r, k=key: _FACTORS.pop(k, None))
    except TypeError:  # not weak-referenceable (a view of a memmap, ...): do not cache
        return u
    with _FACTORS_LOCK:
        _FACTORS[key] = (ref, u)
    return u


def _range_width(qt: QuantType, row_length: int) -> int:
    """Columns quantized at once: one block (32 or 256 columns)."""
    width = qt.block_size
    if row_length % width:
        raise ConfigError(
            f"type {qt.name} needs rows divisible by {width}, got rows of {row_length}"
        )
    return width


def compensated_quantize(
    weights: np.ndarray,
    qtype: QuantType | str,
    hessian: np.ndarray,
    damp: float = DEFAULT_DAMP,
    threads: int | None = None,
) -> np.ndarray:
    """Quantize a (rows, row_length) matrix to `qtype` with GPTQ error compensation.

    Args:
        weights: the layer's weights in ggml order: one row per output, `row_length` inputs.
        qtype: target ggml type (any quantized type; F16/F32/BF16 are returned as plain
            quantization, which has nothing to compensate).
        hessian: (row_length, row_length) second moment of the layer's input, E[x x^T].
        damp: relative dampening of H.

    Returns:
        uint8 (rows, row_bytes): the same layout as `quantizer.quantize`.
    """
    qt = get(qtype) if isinstance(qtype, str) else qtype
    w = np.array(weights, dtype=np.float64, copy=True)
    if w.ndim != 2:
        raise ConfigError(f"compensated_quantize expects a 2-D matrix, got shape {w.shape}")
    _, n = w.shape
    if hessian.shape != (n, n):
        raise ConfigError(f"Hessian has shape {hessian.shape}, expected ({n}, {n})")
    if qt.name in ("F32", "F16", "BF16"):
        return quantizer.quantize(w.astype(np.float32), qt, threads=threads)
    width = _range_width(qt, n)
    u = _factor(hessian, damp)
    parts = []
    for start in range(0, n, width):
        stop = start + width
        u_ff = u[start:stop, start:stop]
        u_ff_inv = np.linalg.inv(u_ff)
        # Effective Hessian of this range once later columns compensate: (U_ff^T U_ff)^-1.
        importance = np.einsum("ij,ij->i", u_ff_inv, u_ff_inv)
        importance = np.maximum(importance / max(importance.mean(), 1e-30), 1e-6)
        block = np.ascontiguousarray(w[:, start:stop], dtype=np.float32)
        # small ranges: a thread pool per call costs more than it saves
        n_threads = threads if block.size >= 1 << 14 else 1
        encoded = quantizer.quantize(block, qt, importance.astype(np.float32), threads=n_threads)
        parts.append(encoded)
        if stop < n:
            decoded = quantizer.to_float(encoded, qt, width, threads=n_threads)
            err = (w[:, start:stop] - decoded) @ u_ff_inv
            w[:, stop:] -= err @ u[start:stop, stop:]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def output_error(weights: np.ndarray, decoded: np.ndarray, hessian: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)^T) / tr(W H W^T): the layer's relative output error under H."""
    w = np.asarray(weights, dtype=np.float64)
    d = w - np.asarray(decoded, dtype=np.float64)
    h = np.asarray(hessian, dtype=np.float64)
    num = float(np.sum((d @ h) * d))  # BLAS; a three-operand einsum would loop in C
    den = float(np.sum((w @ h) * w))
    return num / den if den > 0 else 0.0
