"""Calibration statistics as records, and their on-disk form (npz). numpy only.

Collected by `ramp_edge.features.stats` (torch); read by the embedding, Scale Folding and the
imatrix writer, which therefore work without torch once the statistics are cached.

Per distinct linear-layer input (q/k/v share one, gate/up share one) and per input channel j:
running max |x_j|, sums of |x_j|, x_j^2 and x_j^4 over all calibration tokens (float64), and
a fixed subsample of token rows, which Scale Folding uses to measure a layer's output error.
Memory is bounded by n_in * (4 * 8 bytes + n_sample * 4 bytes) per input, independent of the
number of calibration tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramp_edge.errors import ArtifactError
from ramp_edge.fsutil import atomic_path

logger = logging.getLogger(__name__)

STATS_VERSION = 1


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Per-input-channel activation statistics of one linear-layer input."""

    max_abs: np.ndarray  # (n_in,) float64: max over tokens of |x_j|
    sum_abs: np.ndarray  # (n_in,) float64: sum over tokens of |x_j|
    sum2: np.ndarray  # (n_in,) float64: sum of x_j^2 (llama.cpp's imatrix in_sum2)
    sum4: np.ndarray  # (n_in,) float64: sum of x_j^4
    count: int  # tokens seen
    sample: np.ndarray  # (n_sample, n_in) float32: token rows at a fixed stride
    # (n_in, n_in) float32: sum of x x^T, only when collected for error-compensated
    # quantization (ramp_edge.quant.compensate); n_in^2 floats per input, so opt-in.
    gram: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.max_abs.shape
        if len(n) != 1 or any(a.shape != n for a in (self.sum_abs, self.sum2, self.sum4)):
            raise ArtifactError("channel statistics have inconsistent shapes")
        if self.sample.ndim != 2 or self.sample.shape[1] != n[0]:
            raise ArtifactError(f"sample rows have shape {self.sample.shape}, expected (*, {n[0]})")
        if self.count <= 0:
            raise ArtifactError("channel statistics from zero tokens")
        if self.gram is not None and self.gram.shape != (n[0], n[0]):
            raise ArtifactError(f"gram matrix has shape {self.gram.shape}, expected {n * 2}")

    @property
    def n_in(self) -> int:
        return int(self.max_abs.shape[0])

    @property
    def mean_abs(self) -> np.ndarray:
        return self.sum_abs / self.count

    @property
    def m2(self) -> np.ndarray:
        """E[x_j^2]: the importance vector llama.cpp uses (in_sum2 / counts)."""
        return self.sum2 / self.count

    @property
    def m4(self) -> np.ndarray:
        return self.sum4 / self.count

    @property
    def hessian(self) -> np.ndarray | None:
        """E[x x^T] (float64), the layer-input Hessian GPTQ compensates with; None if not kept."""
        if self.gram is None:
            return None
        return np.asarray(self.gram, dtype=np.float64) / self.count

    def scaled(self, inv_scale: np.ndarray) -> ChannelStats:
        """Statistics of x / s, given 1/s per channel (what folding does to the layer input)."""
        inv = np.asarray(inv_scale, dtype=np.float64)
        return ChannelStats(
            max_abs=self.max_abs * inv,
            sum_abs=self.sum_abs * inv,
            sum2=self.sum2 * inv**2,
            sum4=self.sum4 * inv**4,
            count=self.count,
            sample=(self.sample * inv.astype(np.float32)).astype(np.float32),
            gram=None if self.gram is None else (self.gram * np.outer(inv, inv)).astype(np.float32),
        )


@dataclass(frozen=True, slots=True)
class CalibrationStats:
    """Activation statistics of one model on one calibration set.

    `inputs` is keyed by the GGUF name of the first weight that reads that input;
    `weight_input` maps every GGUF weight name (including tensors that share the input, and
    `output.weight` for the lm_head) to that key.
    """

    model_id: str
    key: str  # cache key: model bytes + data + settings
    n_tokens: int
    n_seq: int
    seq_len: int
    data: str  # dataset name or description
    inputs: Mapping[str, ChannelStats]
    weight_input: Mapping[str, str]
    version: int = field(default=STATS_VERSION)

    def __post_init__(self) -> None:
        missing = {k for k in self.weight_input.values() if k not in self.inputs}
        if missing:
            raise ArtifactError(f"statistics reference unknown inputs: {sorted(missing)[:3]}")

    def has(self, weight: str) -> bool:
        return weight in self.weight_input

    @property
    def has_gram(self) -> bool:
        return bool(self.inputs) and all(c.gram is not None for c in self.inputs.values())

    def hessians(self) -> Mapping[str, np.ndarray]:
        """GGUF weight name -> E[x x^T] of its input, made on access (float64 copies of every
        input at once would double the statistics' memory); weights that share an input get
        the same array while it is among the last few used."""
        return _Hessians(self)

    def for_weight(self, weight: str) -> ChannelStats:
        """The statistics of the input `weight` multiplies; KeyError if not collected."""
        return self.inputs[self.weight_input[weight]]

    def weights(self) -> list[str]:
        return list(self.weight_input)

    def save(self, path: str | Path) -> Path:
        """Write an npz atomically (arrays per input + a JSON header)."""
        arrays: dict[str, np.ndarray] = {}
        keys = sorted(self.inputs)
        for i, k in enumerate(keys):
            c = self.inputs[k]
            arrays[f"{i}.max_abs"] = c.max_abs
            arrays[f"{i}.sum_abs"] = c.sum_abs
            arrays[f"{i}.sum2"] = c.sum2
            arrays[f"{i}.sum4"] = c.sum4
            arrays[f"{i}.sample"] = c.sample
            if c.gram is not None:
                arrays[f"{i}.gram"] = c.gram
        header = {
            "version": self.version,
            "model_id": self.model_id,
            "key": self.key,
            "n_tokens": self.n_tokens,
            "n_seq": self.n_seq,
            "seq_len": self.seq_len,
            "data": self.data,
            "inputs": keys,
            "counts": [self.inputs[k].count for k in keys],
            "weight_input": dict(self.weight_input),
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationStats:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(bytes(npz["header"]).decode("utf-8"))
                if header.get("version") != STATS_VERSION:
                    raise ArtifactError(
                        f"{path}: statistics version {header.get('version')}, "
                        f"expected {STATS_VERSION}"
                    )
                inputs = {}
                for i, (k, count) in enumerate(
                    zip(header["inputs"], header["counts"], strict=True)
                ):
                    inputs[k] = ChannelStats(
                        max_abs=npz[f"{i}.max_abs"],
                        sum_abs=npz[f"{i}.sum_abs"],
                        sum2=npz[f"{i}.sum2"],
                        sum4=npz[f"{i}.sum4"],
                        count=int(count),
                        sample=npz[f"{i}.sample"],
                        gram=npz[f"{i}.gram"] if f"{i}.gram" in npz.files else None,
                    )
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise ArtifactError(f"{path} is not a readable statistics file ({err})") from None
        return cls(
            model_id=header["model_id"],
            key=header["key"],
            n_tokens=int(header["n_tokens"]),
            n_seq=int(header["n_seq"]),
            seq_len=int(header["seq_len"]),
            data=str(header["data"]),
            inputs=inputs,
            weight_input=dict(header["weight_input"]),
        )


class _Hessians(Mapping):
    """Lazy weight -> Hessian view of CalibrationStats (a Mapping, as export expects)."""

    KEEP = 4  # inputs kept: q/k/v and gate/up are encoded back to back

    def __init__(self, stats: CalibrationStats):
        self._stats = stats
        self._names = [w for w, k in stats.weight_input.items() if stats.inputs[k].gram is not None]
        self._recent: dict[str, np.ndarray] = {}

    def __getitem__(self, weight: str) -> np.ndarray:
        if weight not in self._stats.weight_input:
            raise KeyError(weight)
        key = self._stats.weight_input[weight]
        hit = self._recent.pop(key, None)
        if hit is None:
            hit = self._stats.inputs[key].hessian
            if hit is None:
                raise KeyError(weight)
        self._recent[key] = hit  # most recent last
        while len(self._recent) > self.KEEP:
            self._recent.pop(next(iter(self._recent)))
        return hit

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
