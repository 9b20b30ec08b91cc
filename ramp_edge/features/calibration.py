"""What quantization learns from calibration text: the importance matrix and input Hessians.

One place resolves both from one calibration set, so the measured search, `allocate --gptq`
and `export` of a gptq recipe quantize with the same numbers (the statistics are cached per
model file and tokens, so the second call reads them back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ramp_edge.errors import require

ProgressFn = Callable[[float, float, str], None]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per-weight quantization guidance from one calibration set."""

    data: str  # e.g. "wikitext2-valid"
    key: str  # the statistics' cache key (model bytes + tokens)
    imatrix: Mapping[str, np.ndarray]  # weight -> E[x_j^2] (llama.cpp's imatrix)
    hessians: Mapping[str, np.ndarray]  # weight -> E[x x^T] of its input ({} without gram)

    @property
    def id(self) -> str:
        return f"{self.data}:{self.key[:16]}"


def calibrate_model(
    model, data: str | None = None, gram: bool = True, progress: ProgressFn | None = None
) -> Calibration:
    """Collect (or read from the cache) the statistics of `model` on `data` (default: the
    shipped WikiText-2 validation split). `gram` keeps the full input Hessians GPTQ needs."""
    require("torch", "torch")
    from ramp_edge.features.imatrix import importance
    from ramp_edge.features.stats import DEFAULT_DATA, collect_stats

    label = data or DEFAULT_DATA
    stats = collect_stats(model, data=label, gram=gram, progress=progress)
    return Calibration(label, stats.key, importance(stats), stats.hessians() if gram else {})
