"""Scale Folding: move activation outliers into the weights without changing the model's function.

For a linear layer y = W x whose input x reaches it through a per-channel multiplier (a norm
weight, or the rows of an earlier linear layer), pick s_j > 0 per input channel and write

    W' = W diag(s),   x' = x / s   (norm weight / s, or earlier rows / s),   so W' x' = W x.

In full precision the model is unchanged (up to float rounding); after quantization the error
moves from the activation-heavy channels into the weight grid. The scales follow SmoothQuant
(Xiao et al. 2023, eq. 4): s_j = max|X_j|^a / max|W_:,j|^(1-a), here normalised to geometric
mean 1 (the function does not depend on a common factor; this keeps the norm weights in range).

Four folds per block, on GGUF tensors (llama.cpp names and layout):

| group     | scaled columns (x s)        | divided by s                              |
|-----------|-----------------------------|-------------------------------------------|
| attn_in   | attn_q, attn_k, attn_v      | attn_norm (+ bias)                        |
| ffn_in    | ffn_gate, ffn_up            | ffn_norm (+ bias)                         |
| attn_out  | attn_output                 | attn_v rows (+ bias); one scale per KV-head channel |
| ffn_out   | ffn_down                    | ffn_up rows (+ bias): down(act(gate) * up) |

plus `output_in` (output columns, output_norm) where the output matrix is not tied to token_embd.

Why these are exact:
- q/k rows are permuted in llama GGUFs (`source.hf`; `naming.unpermute_qk` undoes it); folding
  touches their columns only, and a column scaling commutes with a row permutation.
- attention output for query head h is softmax(.) V_g with g = h // n_gqa (llama.cpp's
  broadcast, transformers' `repeat_kv`); it is linear in V, so dividing V's rows of KV head g
  by t_g and multiplying the o_proj columns of every query head in g by the same t_g is exact.
  The scale is computed from the max over the heads of the group.
- gated FFN: act(gate) * (up / s) = (act(gate) * up) / s, elementwise.
- norm conventions: Gemma computes x * (1 + w); its GGUF stores 1 + w (convert_hf_to_gguf.py
  adds the 1), so dividing the stored GGUF value by s is exact; `naming.to_hf_layout`
  subtracts the 1 again when going back to transformers.
- QK-norm (Gemma3, Qwen3) acts on q/k after the projection, which folding does not change.

The strength a is searched per group and layer over a small grid, minimising the measured
relative output error ||X (W' - Q(W'))^T||^2 / ||X W^T||^2 (X' = X / s for the folded
candidates) on calibration rows, after quantization at the type the recipe assigns (after
llama.cpp's fallback for rows that do not fit) through the real ggml quantizer. With
`per_tensor_decide` a group is folded only if its best folded error beats the unfolded one;
since all tensors of a group share one folded vector, the group is the smallest unit that can
be decided.

numpy + libggml only; the exporter can fold without torch once statistics are cached.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramp_edge.errors import ConfigError
from ramp_edge.features.embed import outlier_ratio
from ramp_edge.features.records import CalibrationStats, ChannelStats
from ramp_edge.quant import quantizer
from ramp_edge.quant.catalogue import QuantType, get, resolve_fallback

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]

DEFAULT_ALPHAS: tuple[float, ...] = (0.25, 0.5, 0.75)
FOLDABLE_ARCHS = frozenset({"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"})
GROUPS = ("attn_out", "ffn_out", "attn_in", "ffn_in", "output_in")
_SCALE_CLIP = 1e4  # s stays within [1e-4, 1e4] after normalisation
_MIN_SAMPLE_ROWS = 16


@dataclass(frozen=True, slots=True)
class GroupFold:
    """What folding did to one group of tensors sharing a folded vector."""

    layer: int  # block index, -1 for output_in
    group: str  # one of GROUPS
    tensors: tuple[str, ...]  # tensors whose columns are scaled (their error is measured)
    types: tuple[str, ...]  # effective quant type of each (after llama.cpp's fallback)
    folded: bool
    alpha: float | None  # chosen strength; None when not folded
    error_before: float  # mean relative output error, unfolded
    error_after: float  # same, as exported (== error_before when not folded)
    alpha_errors: tuple[tuple[float, float], ...]  # (alpha, error) for every grid point
    outlier_before: float  # max/median of per-channel max|x| of the group's input
    outlier_after: float
    reason: str  # "lower error", "forced", "no gain", or why the group was skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "group": self.group,
            "tensors": list(self.tensors),
            "types": list(self.types),
            "folded": self.folded,
            "alpha": self.alpha,
            "error_before": self.error_before,
            "error_after": self.error_after,
            "alpha_errors": [list(p) for p in self.alpha_errors],
            "outlier_before": self.outlier_before,
            "outlier_after": self.outlier_after,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class FoldResult:
    """Replacement tensors for the GGUF and a report per group.

    `tensors`: GGUF name -> float32 array in numpy order (rows, row_length) or (n,) for norms;
    only tensors that changed. `importance`: GGUF weight -> E[x_j^2] of its input *after*
    folding (the imatrix to quantize the folded tensors with). `col_scales`: folded weight ->
    the s its columns were multiplied by.
    """

    tensors: Mapping[str, np.ndarray]
    reports: tuple[GroupFold, ...]
    importance: Mapping[str, np.ndarray] = field(default_factory=dict)
    col_scales: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_folded(self) -> int:
        return sum(r.folded for r in self.reports)

    def adjust_imatrix(self, imatrix: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An imatrix of the unfolded model, made valid for the folded one (x' = x / s)."""
        out = {}
        for name, values in imatrix.items():
            s = self.col_scales.get(name)
            v = np.asarray(values, dtype=np.float32)
            out[name] = v if s is None or s.shape != v.shape else (v / (s * s)).astype(np.float32)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_groups": len(self.reports),
            "n_folded": self.n_folded,
            "tensors": sorted(self.tensors),
            "groups": [r.to_dict() for r in self.reports],
        }


# --------------------------------------------------------------------------- scales


def smooth_scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """s = x_max^a / w_max^(1-a), geometric mean 1, clipped; float64.

    Channels that never fire (x_max = 0) or have all-zero weights are floored at 1e-6 of the
    largest value so that s stays finite and positive.
    """
    x = np.asarray(x_max, dtype=np.float64)
    w = np.asarray(w_max, dtype=np.float64)
    x = np.maximum(x, max(float(x.max()) * 1e-6, 1e-30))
    w = np.maximum(w, max(float(w.max()) * 1e-6, 1e-30))
    log_s = alpha * np.log(x) - (1.0 - alpha) * np.log(w)
    log_s -= log_s.mean()
    return np.exp(np.clip(log_s, -math.log(_SCALE_CLIP), math.log(_SCALE_CLIP)))


def _gqa_scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float, n_kv: int, n_gqa: int, hd: int):
    """(scale per o_proj column, scale per v row): one value per KV-head channel."""
    x = np.asarray(x_max).reshape(n_kv, n_gqa, hd).max(axis=1)
    w = np.asarray(w_max).reshape(n_kv, n_gqa, hd).max(axis=1)
    t = smooth_scales(x.reshape(-1), w.reshape(-1), alpha).reshape(n_kv, 1, hd)
    return np.broadcast_to(t, (n_kv, n_gqa, hd)).reshape(-1).copy(), t.reshape(-1).copy()


# --------------------------------------------------------------------------- error measurement


def _roundtrip(w: np.ndarray, qt: QuantType, imatrix: np.ndarray | None) -> np.ndarray:
    if qt.name == "F32":
        return w
    imat = imatrix if (imatrix is not None and qt.block_size > 1) else None
    if qt.needs_imatrix and imat is None:
        raise ConfigError(f"type {qt.name} needs an importance matrix")
    data = quantizer.quantize(w, qt, imat)
    return quantizer.dequantize(data, qt, w.shape[1])


class _Member:
    """One tensor of a group: current values, its effective type, its unfolded output energy."""

    __slots__ = ("name", "qtype", "ref", "w")

    def __init__(
        self, name: str, w: np.ndarray, qtype: QuantType, x: np.ndarray | None, m2: np.ndarray
    ):
        self.name = name
        self.w = w
        self.qtype = qtype
        if x is not None:
            self.ref = float(np.sum((x @ w.T.astype(np.float64)) ** 2))
        else:
            self.ref = float(np.sum(m2[None, :] * w.astype(np.float64) ** 2)) * len(m2)


def _group_error(
    members: Sequence[_Member],
    x: np.ndarray | None,
    m2: np.ndarray,
    col_scale: np.ndarray | None,
    use_imatrix: bool,
) -> float:
    """Mean over members of the relative output error after quantization (folded if col_scale)."""
    total = 0.0
    for m in members:
        s = np.ones(m.w.shape[1]) if col_scale is None else col_scale
        w = np.ascontiguousarray(m.w * s[None, :].astype(np.float32), dtype=np.float32)
        m2s = m2 / (s * s)
        imat = m2s.astype(np.float32) if (use_imatrix or m.qtype.needs_imatrix) else None
        dw = (w - _roundtrip(w, m.qtype, imat)).astype(np.float64)
        if x is not None:
            err = float(np.sum(((x / s[None, :]) @ dw.T) ** 2))
        else:  # diagonal approximation (independent column errors), when no rows were kept
            err = float(np.sum(m2s[None, :] * dw * dw)) * len(m2)
        total += err / m.ref if m.ref > 0 else 0.0
    return total / max(1, len(members))


# --------------------------------------------------------------------------- the fold


def _effective_type(assignment: Mapping[str, str], name: str, row_length: int) -> QuantType | None:
    if name not in assignment:
        return None
    return resolve_fallback(get(assignment[name]), row_length)


def fold_for_export(
    source: Any,
    stats: CalibrationStats,
    assignment: Mapping[str, str],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    per_tensor_decide: bool = True,
    use_imatrix: bool = False,
    progress: ProgressFn | None = None,
) -> FoldResult:
    """Scale-fold `source` for export with the types in `assignment`.

    Args:
        source: GGUFSource / HFSource: `arch`, `info`, `specs`, `tensor(name)` in GGUF layout.
        stats: calibration statistics of the same model (features.stats.collect_stats).
        assignment: GGUF tensor name -> quant type name (the recipe's types).
        alphas: strengths to try per group (0 < a < 1).
        per_tensor_decide: fold a group only where it lowers the measured error; False folds
            every foldable group at its best alpha.
        use_imatrix: measure errors with the (folded) importance matrix, as an export with
            --imatrix quantizes; types that require one always use it.
        progress: callback(done, total, description).

    Returns:
        FoldResult whose `tensors` go to export_model(overrides=...) and `importance` to its
        imatrix argument.

    Raises:
        ConfigError: an empty or out-of-range alpha grid.
    """
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ConfigError(f"alphas must be a non-empty list of values in [0, 1], got {alphas}")
    arch = source.arch
    info = source.info
    specs = {s.name: s for s in source.specs}
    cur: dict[str, np.ndarray] = {}
    changed: set[str] = set()
    input_scale: dict[str, np.ndarray] = {}  # stats input key -> 1/s applied to that input
    col_scales: dict[str, np.ndarray] = {}
    reports: list[GroupFold] = []

    def get_t(name: str) -> np.ndarray:
        if name not in cur:
            cur[name] = np.array(source.tensor(name), dtype=np.float32, copy=True)
        return cur[name]

    def present(*names: str) -> bool:
        return all(n in specs for n in names)

    if arch not in FOLDABLE_ARCHS:
        logger.warning("Scale Folding does not know architecture %r; nothing folded", arch)
        return FoldResult({}, (), _importance(stats, {}, specs))

    plan: list[tuple[int, str]] = []
    for i in range(info.n_layer):
        plan += [(i, g) for g in GROUPS[:4]]
    plan.append((-1, "output_in"))

    for step, (layer, group) in enumerate(plan):
        if progress:
            progress(
                step, len(plan), f"folding blk.{layer} {group}" if layer >= 0 else "folding output"
            )
        p = f"blk.{layer}." if layer >= 0 else ""
        if group == "attn_in":
            cols = [f"{p}attn_q.weight", f"{p}attn_k.weight", f"{p}attn_v.weight"]
            divs = [f"{p}attn_norm.weight", f"{p}attn_norm.bias"]
        elif group == "ffn_in":
            cols = [n for n in (f"{p}ffn_gate.weight", f"{p}ffn_up.weight") if n in specs]
            divs = [f"{p}ffn_norm.weight", f"{p}ffn_norm.bias"]
        elif group == "attn_out":
            cols = [f"{p}attn_output.weight"]
            divs = [f"{p}attn_v.weight", f"{p}attn_v.bias"]
        elif group == "ffn_out":
            cols = [f"{p}ffn_down.weight"]
            divs = [f"{p}ffn_up.weight", f"{p}ffn_up.bias"]
        else:
            cols = ["output.weight"]
            divs = ["output_norm.weight", "output_norm.bias"]
        report = _fold_group(
            layer,
            group,
            cols,
            divs,
            specs,
            stats,
            assignment,
            alphas,
            per_tensor_decide,
            use_imatrix,
            info,
            get_t,
            present,
            changed,
            input_scale,
            col_scales,
        )
        if report is not None:
            reports.append(report)
    if progress:
        progress(len(plan), len(plan), "folding done")
    tensors = {n: cur[n] for n in sorted(changed)}
    folded = sum(r.folded for r in reports)
    logger.info("Scale Folding: %d of %d groups folded", folded, len(reports))
    return FoldResult(tensors, tuple(reports), _importance(stats, input_scale, specs), col_scales)


def _importance(
    stats: CalibrationStats, input_scale: Mapping[str, np.ndarray], specs
) -> dict[str, np.ndarray]:
    out = {}
    for name in stats.weights():
        if name not in specs or name == "token_embd.weight":
            continue
        key = stats.weight_input[name]
        m2 = stats.inputs[key].m2
        if key in input_scale:
            m2 = m2 * input_scale[key] ** 2
        out[name] = m2.astype(np.float32)
    return out


def _skip(layer: int, group: str, cols: Sequence[str], reason: str) -> GroupFold:
    logger.debug("fold %s %s skipped: %s", layer, group, reason)
    return GroupFold(layer, group, tuple(cols), (), False, None, 0.0, 0.0, (), 0.0, 0.0, reason)


def _fold_group(
    layer: int,
    group: str,
    cols: list[str],
    divs: list[str],
    specs: Mapping[str, Any],
    stats: CalibrationStats,
    assignment: Mapping[str, str],
    alphas: tuple[float, ...],
    per_tensor_decide: bool,
    use_imatrix: bool,
    info: Any,
    get_t: Callable[[str], np.ndarray],
    present: Callable[..., bool],
    changed: set[str],
    input_scale: dict[str, np.ndarray],
    col_scales: dict[str, np.ndarray],
) -> GroupFold | None:
    required_div = divs[0]
    if not cols or not present(*cols) or required_div not in specs:
        if group == "output_in" and "output.weight" not in specs:
            return None  # tied output: token_embd is also the lookup table, cannot be folded
        return _skip(layer, group, cols, "tensors missing")
    if group == "ffn_out" and f"blk.{layer}.ffn_gate.weight" not in specs:
        return _skip(layer, group, cols, "ungated FFN: up rows cannot carry the scale")
    if not stats.has(cols[0]):
        return _skip(layer, group, cols, "no calibration statistics")
    key = stats.weight_input[cols[0]]
    if any(stats.weight_input.get(c) != key for c in cols):
        return _skip(layer, group, cols, "tensors do not share one input")
    c: ChannelStats = stats.inputs[key]
    types = [_effective_type(assignment, n, specs[n].row_length) for n in cols]
    if any(t is None for t in types):
        return _skip(layer, group, cols, "tensor without an assigned type")
    ws = [get_t(n) for n in cols]
    n_in = ws[0].shape[1]
    if c.n_in != n_in or any(w.shape[1] != n_in for w in ws):
        return _skip(layer, group, cols, "statistics and tensor widths differ")

    gqa = None
    if group == "attn_out":
        v = get_t(divs[0])
        n_kv = info.n_head_kv
        if (
            v.shape[0] % n_kv
            or n_in % (v.shape[0] // n_kv)
            or n_in // (v.shape[0] // n_kv) != info.n_head
        ):
            return _skip(layer, group, cols, "attention head layout not understood")
        hd = v.shape[0] // n_kv
        gqa = (n_kv, info.n_head // n_kv, hd)
    elif group == "ffn_out":
        if get_t(divs[0]).shape[0] != n_in:
            return _skip(layer, group, cols, "ffn_up rows != ffn_down columns")
    else:
        if get_t(divs[0]).reshape(-1).shape[0] != n_in:
            return _skip(layer, group, cols, "norm width != tensor width")

    x = c.sample.astype(np.float64) if c.sample.shape[0] >= _MIN_SAMPLE_ROWS else None
    m2 = c.m2
    members = [_Member(n, w, t, x, m2) for n, w, t in zip(cols, ws, types, strict=True)]  # type: ignore[arg-type]
    w_max = np.max(np.stack([np.abs(w).max(axis=0) for w in ws]), axis=0)

    def scales(alpha: float) -> tuple[np.ndarray, np.ndarray]:
        if gqa is not None:
            return _gqa_scales(c.max_abs, w_max, alpha, *gqa)
        s = smooth_scales(c.max_abs, w_max, alpha)
        return s, s

    before = _group_error(members, x, m2, None, use_imatrix)
    tried = []
    for a in alphas:
        s_col, _ = scales(a)
        tried.append((a, _group_error(members, x, m2, s_col, use_imatrix)))
    best_alpha, best_err = min(tried, key=lambda p: (p[1], p[0]))
    ratio_before = outlier_ratio(c)
    type_names = tuple(t.name for t in types)  # type: ignore[union-attr]
    if per_tensor_decide and not best_err < before:
        return GroupFold(
            layer,
            group,
            tuple(cols),
            type_names,
            False,
            None,
            before,
            before,
            tuple(tried),
            ratio_before,
            ratio_before,
            "no gain",
        )

    s_col, s_div = scales(best_alpha)
    for n in cols:
        w = get_t(n)
        w *= s_col[None, :].astype(np.float32)
        changed.add(n)
        col_scales[n] = s_col.astype(np.float32)
    inv = (1.0 / s_div).astype(np.float32)
    for n in divs:
        if n not in specs:
            continue
        t = get_t(n)
        if t.ndim == 1:
            t *= inv
        else:
            t *= inv[:, None]
        changed.add(n)
    input_scale[key] = 1.0 / s_col
    ratio_after = outlier_ratio(c.scaled(1.0 / s_col))
    return GroupFold(
        layer,
        group,
        tuple(cols),
        type_names,
        True,
        best_alpha,
        before,
        best_err,
        tuple(tried),
        ratio_before,
        ratio_after,
        "lower error" if best_err < before else "forced",
    )


def fold_source(
    source: Any,
    recipe: Any,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    per_tensor_decide: bool = True,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Collect (or load cached) statistics for `source` and fold it for `recipe`; the overrides.

    A convenience for `ramp-edge export --fold`: needs torch for statistics on the first run.
    An imatrix given to the export must be adjusted with `FoldResult.adjust_imatrix`; use
    `fold_for_export` directly to get the whole result.
    """
    from ramp_edge.errors import require

    require("torch", "torch")
    require("transformers", "torch")
    from ramp_edge.features.stats import collect_stats

    stats = collect_stats(source.model, progress=progress)
    types = recipe.types if hasattr(recipe, "types") else dict(recipe)
    result = fold_for_export(source, stats, types, alphas, per_tensor_decide, progress=progress)
    return dict(result.tensors)
