"""Per-tensor observation features for the allocation policy: 11 scale-free numbers per tensor.

The policy must transfer zero-shot between models, so every feature is scale-free or centred
per model. The source is the layer embedding of `ramp_edge.features.embed` (`compute_features`)
*with* its activation statistics (calibration text through the model in torch, cached per
model). Measured zero-shot, SmolLM2-135M -> Gemma-3-270M, summed surrogate error after the
repair to budget at 4.6/5.0/5.5/6.0 bpw: 0.35/0.054/0.060/0.011 with them, 0.43/0.135/0.069/
0.073 without (knapsack: 0.35/0.054/0.047/0.011). With them the policy over-spends by 4-17%
before the repair, so part of that gain is the repair's (a greedy downgrade by measured error).
Where statistics cannot be collected (no torch, an HF directory without tokenizer) the three
activation features are 0 and a warning says the policy sees less than it was trained on.
Where the embedding module fails altogether, a built-in fallback with the same layout is used
(documented in `_fallback`). Results are cached on disk per model file, keyed by path, size,
mtime and whether activations were used.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge import paths
from ramp_edge.errors import RampEdgeError
from ramp_edge.features.embed import N_FEATURES, ROLES  # noqa: F401 - N_FEATURES is re-exported for rl.env
from ramp_edge.fsutil import atomic_path

logger = logging.getLogger(__name__)

ADAPTER_VERSION = 3
# Calibration windows (512 tokens of WikiText-2 validation each) for the activation features:
# one pass of 4 windows, in training and in apply alike. 16 (the imatrix default) cost ~4x the
# time for features that are ranks and log-ratios; apply on Gemma-3-270M must stay near a minute.
ACT_WINDOWS = 4
_CLIP = 16.0
_ROLES = ROLES  # one role list: the embedding's


def _cache_file(source: Any, activations: bool) -> Path | None:
    path = getattr(source, "path", None)
    if path is None:
        return None
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}:{ADAPTER_VERSION}:{activations}"
    return paths.cache_dir("rl-features") / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _activation_stats(source: Any) -> Any:
    """The model's calibration statistics (cached by `collect_stats`), or None with a warning."""
    try:
        from ramp_edge.features.stats import collect_stats

        return collect_stats(source.model, n_seq=ACT_WINDOWS)
    except ImportError as err:
        reason = f"torch is not installed ({err})"
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    logger.warning(
        "no activation statistics for %s (%s): the policy sees weight and structure features only",
        getattr(source.model, "model_id", "model"),
        reason,
    )
    return None


def tensor_features(
    source: Any, table: Any, use_cache: bool = True, activations: bool = True
) -> np.ndarray:
    """(n_tensors, 11) float32 features in `table.tensors` order.

    Args:
        source: an opened model (`ramp_edge.source.open_source`).
        table: its `SensitivityTable` (names the tensors and gives per-type errors).
        use_cache: read/write the on-disk cache.
        activations: fill the activation features from calibration statistics (policies of
            format 2); False gives format-1 policies the zeros they were trained on.
    """
    names = [t.name for t in table.tensors]
    cache = _cache_file(source, activations) if use_cache else None
    if cache is not None and cache.exists():
        try:
            with np.load(cache) as z:
                cached = dict(zip(z["names"].tolist(), z["values"], strict=True))
            if all(n in cached for n in names):
                return np.stack([cached[n] for n in names]).astype(np.float32)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            # a truncated or damaged cache (e.g. from a killed run before writes were atomic)
            # is a miss, not a traceback
            logger.warning("feature cache %s unreadable (%s); recomputing", cache, err)
    by_name: dict[str, np.ndarray] = {}
    try:
        from ramp_edge.features.embed import compute_features

        stats = _activation_stats(source) if activations else None
        model_features = compute_features(source, stats)
        by_name = {t.name: t.as_array() for t in model_features.tensors}
    except ImportError:
        logger.info("ramp_edge.features.embed unavailable; using the built-in features")
    missing = [n for n in names if n not in by_name]
    if missing:
        fb = _fallback(source, table)
        for n in missing:
            by_name[n] = fb[n]
    values = np.stack([by_name[n] for n in names]).astype(np.float32)
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=_CLIP, neginf=-_CLIP), -_CLIP, _CLIP)
    if cache is not None:
        try:
            with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, names=np.array(names), values=values)
        except (OSError, RampEdgeError) as err:
            logger.warning("could not write feature cache %s (%s)", cache, err)
    return values


def _role(name: str) -> str:
    from ramp_edge.quant.presets import category

    cat = category(name)
    return cat if cat in _ROLES else "other"


def _fallback(source: Any, table: Any) -> dict[str, np.ndarray]:
    """Built-in features, same slots as the embedding:

    0 log-std of the weights minus the model median (replaces the activation scale),
    1 ln(max|w| / std), 2 ln(kurtosis / 3), 3 0 (w_log_std is slot 0 here),
    4 log2(relative error at Q4_0 / 0.01) from the table (its nearest 4.5-bpw option if Q4_0
      is not a candidate), 5 log2(rel. error at the cheapest option / rel. error at Q4_0),
    6 log2(relative error at the largest non-source option / 1e-4),
    7 relative depth, 8 role code, 9 log2 fan-in / hidden size, 10 log2 share of params.
    """
    from ramp_edge.quant.presets import layer_index

    info = source.info
    specs = {s.name: s for s in source.specs}
    sizes = [t.n_params for t in table.tensors]
    mean_size = float(np.mean(sizes)) if sizes else 1.0
    raw: dict[str, list[float]] = {}
    for t in table.tensors:
        w = np.asarray(source.tensor(t.name), dtype=np.float64).reshape(-1)
        std = float(w.std()) or 1e-30
        kurt = float(np.mean((w - w.mean()) ** 4)) / std**4
        opts = {o[0]: o for o in t.options}
        q4 = opts.get("Q4_0") or min(t.options, key=lambda o: abs(o[1] * 8 / t.n_params - 4.5))
        e4 = max(q4[2], 1e-12)
        low = max(t.options[-1][2], 1e-12)
        high = max(
            min(o[2] for o in t.options if o[2] > 0) if any(o[2] > 0 for o in t.options) else 1e-12,
            1e-12,
        )
        layer = layer_index(t.name)
        depth = (
            0.0
            if t.name == "token_embd.weight"
            else 1.0
            if layer < 0
            else (layer + 1) / (info.n_layer + 1)
        )
        row = specs[t.name].row_length if t.name in specs else t.shape[0]
        raw[t.name] = [
            math.log(std),
            math.log(max(float(np.abs(w).max()), 1e-30) / std),
            math.log(max(kurt, 1e-30) / 3),
            0.0,
            math.log2(e4 / 0.01),
            math.log2(low / e4),
            math.log2(high / 1e-4),
            depth,
            _ROLES.index(_role(t.name)) / (len(_ROLES) - 1),
            math.log2(row / max(1, info.n_embd)),
            math.log2(t.n_params / mean_size),
        ]
    med = float(np.median([v[0] for v in raw.values()])) if raw else 0.0
    out = {}
    for n, v in raw.items():
        v[0] -= med
        out[n] = np.clip(np.asarray(v, dtype=np.float32), -_CLIP, _CLIP)
    return out
