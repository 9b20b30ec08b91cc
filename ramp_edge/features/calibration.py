"""What quantization learns from calibration text: the importance matrix, the input Hessians
and each weight's output Fisher sensitivity.

One place resolves them from one calibration set, so the measured search, `allocate --gptq`
and `export` of a gptq recipe quantize with the same numbers (the statistics are cached per
model file and tokens, so the second call reads them back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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
    # weight -> KLD per unit of relative output error (features/fisher.py; {} when not measured)
    sensitivity: Mapping[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.data}:{self.key[:16]}"


# Windows of 512 tokens the Hessians are estimated from. GPTQ fits the encoding to them: on
# SmolLM2-135M, uniform IQ4_NL scored KLD 0.079 on 2 of its own 16 windows but 0.131 on
# WikiText-2 test; 48 windows (24k tokens) gave 0.122 on test. Still the first ~20% of the
# validation text, so the search's scoring text (its second half) stays unseen.
GPTQ_N_SEQ = 48


def calibrate_model(
    model,
    data: str | None = None,
    gram: bool = True,
    progress: ProgressFn | None = None,
    fisher: bool = True,
) -> Calibration:
    """Collect (or read from the cache) the statistics of `model` on `data` (default: the
    shipped WikiText-2 validation split). `gram` keeps the full input Hessians GPTQ needs
    (from GPTQ_N_SEQ windows; without it the imatrix's usual 16). `fisher` also measures each
    weight's output Fisher sensitivity, which the error table of every allocator uses."""
    require("torch", "torch")
    from ramp_edge.features.imatrix import importance
    from ramp_edge.features.stats import DEFAULT_DATA, DEFAULT_N_SEQ, collect_stats

    label = data or DEFAULT_DATA
    n_seq = GPTQ_N_SEQ if gram else DEFAULT_N_SEQ
    stats = collect_stats(model, data=label, n_seq=n_seq, gram=gram, progress=progress)
    sensitivity = {}
    if fisher:
        from ramp_edge.features.fisher import output_sensitivity

        sensitivity = output_sensitivity(model, label, progress=progress)
    return Calibration(
        label, stats.key, importance(stats), stats.hessians() if gram else {}, sensitivity
    )
