"""The 11-dimensional layer embedding: what the RAMP policy knows about each quantizable tensor.

The RAMP paper names three groups, activation statistics, weight properties and
structural descriptors, without listing them. Ours, and why each is there:

Activation statistics (of the input the tensor multiplies, from calibration):

0. ``act_log_mean_abs``: ln(mean over channels of E|x_j|), minus the model's median over block
   tensors. How large the signal is that weight errors get multiplied by; centring per model
   removes the family-specific residual-stream scale.
1. ``act_outlier_ratio``: ln(max_j M_j / median_j M_j) with M_j = max |x_j|. Outlier channels are
   what makes low-bit weight quantization of that input costly, and what Scale Folding targets.
2. ``act_kurtosis``: ln(E[x^4] / E[x^2]^2 / 3), pooled over tokens and channels (0 = Gaussian).
   Heavy tails across tokens and channels; complements the max-based ratio.

Weight properties:

3. ``w_log_std``: ln(std W), minus the model's median over block tensors. Per-model centring
   keeps the relative spread between roles (down vs q) and drops the absolute init scale.
4. ``w_kurtosis``: ln(kurtosis(W) / 3) (0 = Gaussian). Heavy-tailed weights waste the grid of
   uniform types.
5. ``w_max_over_std``: ln(max |w| / std W). The dynamic range a block scale must cover.
6. ``w_q4_error``: log2(||W - Q4_0(W)||_F / ||W||_F / 0.1): the relative error of a real ggml
   Q4_0 round trip (rows zero-padded to a multiple of 32; at most 4096 rows, at a fixed stride).
   A direct measure of how quantization-friendly the tensor is; 0 is a typical 4-bit tensor.

Structural descriptors:

7. ``rel_depth``: (layer + 1) / (n_layer + 1); token_embd 0, output 1. First and last layers
   are known to be sensitive; relative depth transfers across models of different depth.
8. ``role_code``: the role in data-flow order (token_embd, q, k, v, o, gate, up, down, output,
   other) as index / 9. A categorical packed into one dimension because the embedding has 11;
   neighbouring codes are neighbouring roles.
9. ``log_fan_in``: log2(row length / hidden size). 0 for hidden-width inputs, > 0 for ffn_down;
   scale-free, so a 576-wide and a 4096-wide model see the same value.
10. ``log_rel_size``: log2(parameters / mean parameters of the model's quantizable block tensors).
   The tensor's share of the budget, normalised by the number of tensors so that it compares
   across depths.

Every value is scale-free or centred per model, computed in float64, clipped to +-16 and
finite. Tensors without activation statistics (an untied token_embd is a row lookup, with no
input activations) get the neutral value 0 for features 0-2. Centring uses block tensors only,
so a model with and without a separate output tensor gives the same block features.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ramp_edge.errors import ArtifactError
from ramp_edge.features.naming import block_index, tensor_kind
from ramp_edge.features.records import CalibrationStats, ChannelStats
from ramp_edge.quant import quantizer
from ramp_edge.quant.presets import allows_quantization

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]

FEATURE_NAMES: tuple[str, ...] = (
    "act_log_mean_abs",
    "act_outlier_ratio",
    "act_kurtosis",
    "w_log_std",
    "w_kurtosis",
    "w_max_over_std",
    "w_q4_error",
    "rel_depth",
    "role_code",
    "log_fan_in",
    "log_rel_size",
)
N_FEATURES = len(FEATURE_NAMES)
FEATURES_VERSION = 1

ROLES: tuple[str, ...] = (
    "token_embd",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "output",
    "other",
)
_CLIP = 16.0
_EPS = 1e-30
_QERR_ROWS = 4096
_QERR_REF = 0.1


@dataclass(frozen=True, slots=True)
class LayerFeatures:
    """The embedding of one quantizable tensor."""

    name: str  # GGUF tensor name
    role: str  # one of ROLES
    layer: int  # block index, -1 for token_embd / output
    values: tuple[float, ...]  # N_FEATURES values, in FEATURE_NAMES order

    def __post_init__(self) -> None:
        if len(self.values) != N_FEATURES:
            raise ArtifactError(f"{self.name}: {len(self.values)} features, expected {N_FEATURES}")
        if not all(math.isfinite(v) for v in self.values):
            raise ArtifactError(f"{self.name}: non-finite feature values {self.values}")

    def as_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "layer": self.layer,
            "features": dict(zip(FEATURE_NAMES, self.values, strict=True)),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LayerFeatures:
        try:
            feats = doc["features"]
            return cls(
                str(doc["name"]),
                str(doc["role"]),
                int(doc["layer"]),
                tuple(float(feats[k]) for k in FEATURE_NAMES),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"malformed layer features ({err})") from None


@dataclass(frozen=True, slots=True)
class ModelFeatures:
    """Embeddings of every quantizable tensor of one model, in file order."""

    model_id: str
    stats_key: str
    tensors: tuple[LayerFeatures, ...]
    version: int = FEATURES_VERSION

    def matrix(self) -> np.ndarray:
        """(n_tensors, N_FEATURES) float32."""
        return (
            np.stack([t.as_array() for t in self.tensors])
            if self.tensors
            else np.zeros((0, N_FEATURES), np.float32)
        )

    def by_name(self) -> dict[str, LayerFeatures]:
        return {t.name: t for t in self.tensors}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "stats_key": self.stats_key,
            "features_version": self.version,
            "feature_names": list(FEATURE_NAMES),
            "tensors": [t.to_dict() for t in self.tensors],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelFeatures:
        try:
            if list(doc["feature_names"]) != list(FEATURE_NAMES):
                raise ArtifactError("feature names differ from this version of ramp-edge")
            return cls(
                str(doc["model_id"]),
                str(doc["stats_key"]),
                tuple(LayerFeatures.from_dict(t) for t in doc["tensors"]),
                int(doc.get("features_version", FEATURES_VERSION)),
            )
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"malformed model features ({err})") from None


def role_of(name: str) -> str:
    kind = tensor_kind(name)
    if name == "token_embd.weight":
        return "token_embd"
    if name == "output.weight":
        return "output"
    return kind if kind in ROLES else "other"


# --------------------------------------------------------------------------- raw statistics


def weight_moments(w: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float, float]:
    """(std, kurtosis, max |w|) in float64, streamed in chunks so big tensors stay cheap."""
    flat = np.asarray(w, dtype=np.float32).reshape(-1)
    n = flat.size
    total = 0.0
    for i in range(0, n, chunk):
        total += float(flat[i : i + chunk].sum(dtype=np.float64))
    mean = total / n
    m2 = m4 = 0.0
    max_abs = 0.0
    for i in range(0, n, chunk):
        part = flat[i : i + chunk].astype(np.float64)
        max_abs = max(max_abs, float(np.abs(part).max()))
        d = part - mean
        d2 = d * d
        m2 += float(d2.sum())
        m4 += float((d2 * d2).sum())
    var = m2 / n
    kurt = (m4 / n) / (var * var) if var > 0 else 3.0
    return math.sqrt(var), kurt, max_abs


def q4_relative_error(w: np.ndarray, max_rows: int = _QERR_ROWS) -> float:
    """||W - Q4_0(W)||_F / ||W||_F through libggml, rows zero-padded to a multiple of 32."""
    w2 = np.asarray(w, dtype=np.float32)
    w2 = w2.reshape(-1, w2.shape[-1])
    if w2.shape[0] > max_rows:
        w2 = w2[np.linspace(0, w2.shape[0] - 1, max_rows).astype(np.int64)]
    n = w2.shape[1]
    pad = (-n) % 32
    if pad:
        w2 = np.concatenate([w2, np.zeros((w2.shape[0], pad), np.float32)], axis=1)
    w2 = np.ascontiguousarray(w2)
    deq = quantizer.dequantize(quantizer.quantize(w2, "Q4_0", threads=1), "Q4_0", w2.shape[1])
    num = float(np.sum((deq.astype(np.float64) - w2) ** 2))
    den = float(np.sum(w2.astype(np.float64) ** 2))
    return math.sqrt(num / den) if den > 0 else 0.0


def activation_raw(c: ChannelStats) -> tuple[float, float, float]:
    """(ln mean |x|, ln outlier ratio, ln(kurtosis / 3)) of one input's channel statistics."""
    mean_abs = float(np.mean(c.mean_abs))
    m = c.max_abs
    med = float(np.median(m))
    ratio = float(m.max()) / med if med > 0 else float(m.max()) / _EPS if m.max() > 0 else 1.0
    e2 = float(np.mean(c.m2))
    e4 = float(np.mean(c.m4))
    kurt = e4 / (e2 * e2) if e2 > 0 else 3.0
    return math.log(max(mean_abs, _EPS)), math.log(max(ratio, 1.0)), math.log(max(kurt, _EPS) / 3.0)


def outlier_ratio(c: ChannelStats) -> float:
    """max_j M_j / median_j M_j with M_j = max |x_j| (the ratio Scale Folding lowers)."""
    med = float(np.median(c.max_abs))
    return float(c.max_abs.max()) / med if med > 0 else math.inf


def _activation_stats(
    name: str, stats: CalibrationStats | None, names: set[str]
) -> ChannelStats | None:
    if stats is None:
        return None
    if stats.has(name):
        return stats.for_weight(name)
    # A tied token_embd is also the output matmul: its input is the final norm's output.
    if name == "token_embd.weight" and "output.weight" not in names and stats.has("output.weight"):
        return stats.for_weight("output.weight")
    return None


def _clip(v: float) -> float:
    if not math.isfinite(v):
        return _CLIP if v > 0 else -_CLIP
    return max(-_CLIP, min(_CLIP, v))


def compute_features(
    source: Any,
    stats: CalibrationStats | None,
    progress: ProgressFn | None = None,
) -> ModelFeatures:
    """The 11-dim embedding of every tensor of `source` that llama.cpp would quantize.

    Args:
        source: GGUFSource / HFSource (specs, info, tensor(name) in GGUF layout).
        stats: calibration statistics of the same model (None: activation features are 0).
        progress: callback(done, total, description).

    Returns:
        ModelFeatures in the source's tensor order; deterministic for the same inputs.
    """
    info = source.info
    all_names = {s.name for s in source.specs}
    specs = [s for s in source.specs if len(s.shape) >= 2 and allows_quantization(s.name, s.shape)]
    block = [s for s in specs if block_index(s.name) >= 0]
    mean_block_params = (sum(s.n_params for s in block) / len(block)) if block else 1.0

    raw: dict[str, list[float]] = {}
    has_act: dict[str, bool] = {}
    for i, s in enumerate(specs):
        if progress:
            progress(i, len(specs), f"features {s.name}")
        w = source.tensor(s.name)
        std, kurt, max_abs = weight_moments(w)
        qerr = q4_relative_error(w)
        act = _activation_stats(s.name, stats, all_names)
        if act is not None and act.n_in != s.row_length:
            raise ArtifactError(
                f"{s.name}: statistics have {act.n_in} channels, tensor rows {s.row_length}"
            )
        a = activation_raw(act) if act is not None else (0.0, 0.0, 0.0)
        if act is None and s.name != "token_embd.weight" and stats is not None:
            logger.warning("no activation statistics for %s; activation features set to 0", s.name)
        has_act[s.name] = act is not None
        layer = block_index(s.name)
        if s.name == "token_embd.weight":
            depth = 0.0
        elif layer < 0:
            depth = 1.0
        else:
            depth = (layer + 1) / (info.n_layer + 1)
        role = role_of(s.name)
        raw[s.name] = [
            a[0],
            a[1],
            a[2],
            math.log(max(std, _EPS)),
            math.log(max(kurt, _EPS) / 3.0),
            math.log(max(max_abs, _EPS) / max(std, _EPS)),
            math.log2(max(qerr, _EPS) / _QERR_REF),
            depth,
            ROLES.index(role) / (len(ROLES) - 1),
            math.log2(s.row_length / max(1, info.n_embd)),
            math.log2(s.n_params / mean_block_params),
        ]
    if progress:
        progress(len(specs), len(specs), "features done")

    # Per-model centring of the two scale-carrying features, over block tensors only.
    block_names = [s.name for s in block]
    act_ref = [raw[n][0] for n in block_names if has_act[n]]
    w_ref = [raw[n][3] for n in block_names]
    act_med = float(np.median(act_ref)) if act_ref else 0.0
    w_med = float(np.median(w_ref)) if w_ref else 0.0
    out = []
    for s in specs:
        v = raw[s.name]
        if has_act[s.name]:
            v[0] -= act_med
        v[3] -= w_med
        out.append(
            LayerFeatures(s.name, role_of(s.name), block_index(s.name), tuple(_clip(x) for x in v))
        )
    return ModelFeatures(
        source.model.model_id if hasattr(source, "model") else "",
        stats.key if stats is not None else "",
        tuple(out),
    )
