"""Per-tensor, per-type quantization error: the measured cost table the allocators optimise.

For each quantizable tensor and each legal candidate type we quantize the real weights with
ggml (bit-exact) and measure the output error the change causes on calibration activations,
estimated without running the model: E||(W - Q(W)) x||^2 = sum_j ||dW[:, j]||^2 * E[x_j^2]
(the importance matrix holds E[x_j^2]; without one, all channels weigh 1), relative to
E||W x||^2. Keeping the source's own type costs nothing: the exporter copies its bytes.
Tables are cached under the model cache, keyed by model file and imatrix.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramp_edge import paths
from ramp_edge.fsutil import atomic_write_json
from ramp_edge.quant import quantizer
from ramp_edge.quant.catalogue import CATALOGUE, QuantType, legal_types
from ramp_edge.quant.presets import allows_quantization

logger = logging.getLogger(__name__)
ProgressFn = Callable[[float, float, str], None]

# Candidate types the allocators consider, 8.5 down to 2.06 bits per weight. F16 is the
# escape hatch for rows no block type fits.
DEFAULT_CANDIDATES = (
    "Q8_0",
    "Q6_K",
    "Q5_K",
    "Q5_1",
    "Q5_0",
    "Q4_K",
    "Q4_1",
    "Q4_0",
    "IQ4_NL",
    "IQ4_XS",
    "MXFP4",
    "Q3_K",
    "IQ3_S",
    "IQ3_XXS",
    "Q2_K",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
)
# Every allocatable type llama.cpp's CPU backend runs; `--types` narrows it for older builds.
# IQ2_XS and IQ2_XXS are measured only with an importance matrix (ggml refuses them without).
TABLE_VERSION = 2


@dataclass(frozen=True, slots=True)
class TensorCosts:
    name: str
    shape: tuple[int, ...]
    n_params: int
    options: tuple[
        tuple[str, int, float], ...
    ]  # (type, bytes, relative output error), by bytes desc

    def cheapest(self) -> tuple[str, int, float]:
        return self.options[-1]


@dataclass(frozen=True, slots=True)
class SensitivityTable:
    model_id: str
    tensors: tuple[TensorCosts, ...]
    fixed_bytes: int  # tensors the allocator does not choose (norms, ...)

    def by_name(self) -> dict[str, TensorCosts]:
        return {t.name: t for t in self.tensors}

    def to_dict(self) -> dict:
        return {
            "version": TABLE_VERSION,
            "model_id": self.model_id,
            "fixed_bytes": self.fixed_bytes,
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "n_params": t.n_params,
                    "options": [list(o) for o in t.options],
                }
                for t in self.tensors
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping) -> SensitivityTable:
        return cls(
            doc["model_id"],
            tuple(
                TensorCosts(
                    t["name"],
                    tuple(t["shape"]),
                    t["n_params"],
                    tuple((o[0], int(o[1]), float(o[2])) for o in t["options"]),
                )
                for t in doc["tensors"]
            ),
            int(doc["fixed_bytes"]),
        )


def candidates_for(row_length: int, source_type: str, types: Sequence[str]) -> list[QuantType]:
    legal = {t.name for t in legal_types(row_length)}
    chosen = [CATALOGUE[t] for t in types if t in legal]
    if source_type in legal and source_type not in types:
        chosen.append(CATALOGUE[source_type])
    if not chosen:
        chosen = [CATALOGUE["F16"]]
    return chosen


def _relative_error(w: np.ndarray, q: np.ndarray, weight: np.ndarray) -> float:
    diff = ((q - w) ** 2).sum(axis=0)
    ref = (w**2).sum(axis=0)
    return float((diff * weight).sum() / max((ref * weight).sum(), 1e-30))


def _cache_key(source, types: Sequence[str], imatrix_id: str | None) -> str:
    stat = Path(source.path).stat()
    raw = f"{source.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{','.join(types)}:{imatrix_id}:{TABLE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def measure_sensitivity(
    source,
    types: Sequence[str] = DEFAULT_CANDIDATES,
    imatrix: Mapping[str, np.ndarray] | None = None,
    imatrix_id: str | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
) -> SensitivityTable:
    """Quantize every quantizable tensor at every candidate type and measure the error."""
    cache = paths.cache_dir("sensitivity") / f"{_cache_key(source, types, imatrix_id)}.json"
    if use_cache and cache.exists():
        try:
            return SensitivityTable.from_dict(json.loads(cache.read_text()))
        except (ValueError, KeyError):
            logger.warning("sensitivity cache %s unreadable; recomputing", cache)
    specs = [s for s in source.specs if allows_quantization(s.name, s.shape)]
    fixed = sum(
        CATALOGUE[s.source_type].tensor_bytes(s.shape)
        for s in source.specs
        if not allows_quantization(s.name, s.shape)
    )
    rows = []
    for i, s in enumerate(specs):
        if progress:
            progress(i, len(specs), f"sensitivity {s.name}")
        w = source.tensor(s.name).reshape(-1, s.row_length)
        imat = imatrix.get(s.name) if imatrix else None
        weight = imat if imat is not None else np.ones(s.row_length, dtype=np.float32)
        options = []
        for qt in candidates_for(s.row_length, s.source_type, types):
            nbytes = qt.tensor_bytes(s.shape)
            if qt.name == s.source_type:
                err = 0.0  # the exporter copies the source bytes verbatim
            elif qt.needs_imatrix and imat is None:
                continue
            else:
                q = quantizer.quantize(w, qt, imat)
                err = _relative_error(w, quantizer.to_float(q, qt, s.row_length), weight)
            options.append((qt.name, nbytes, err))
        options.sort(key=lambda o: (-o[1], o[2]))
        rows.append(TensorCosts(s.name, s.shape, s.n_params, tuple(options)))
    table = SensitivityTable(source.model.model_id, tuple(rows), fixed)
    if use_cache:
        atomic_write_json(cache, table.to_dict())
    if progress:
        progress(len(specs), len(specs), "sensitivity done")
    return table


def calibrate(
    source,
    table: SensitivityTable,
    probe_type: str = "Q4_0",
    n_chunks: int = 2,
    progress: ProgressFn | None = None,
    imatrix: Mapping[str, np.ndarray] | None = None,
    imatrix_id: str | None = None,
) -> SensitivityTable:
    """Turn relative weight errors into KLD units with one real measurement per tensor role.

    With an importance matrix (the table was measured with it), the probes are exported with
    it too and cached under its id: imatrix-weighted errors have their own scale.

    For each role (attn_q, ffn_down, token_embd, ...) we export the model with only that role's
    tensors at `probe_type` (the rest keep the source bytes, i.e. zero error), measure the real
    mean KLD of that file against the source, and scale the role's errors so they sum to it.
    Roles differ by orders of magnitude in how much their weight error reaches the output;
    this is what the proxy alone cannot know. Cached with the table.
    """
    import tempfile

    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.quant.export import export_model
    from ramp_edge.quant.presets import category
    from ramp_edge.recipe import Recipe

    label = "calibration" if imatrix is None else f"calibration+{imatrix_id or 'imatrix'}"
    key = _cache_key(source, [probe_type, str(n_chunks), table.model_id], label)
    cache = paths.cache_dir("sensitivity") / f"{key}-roles.json"
    if cache.exists():
        coefs = json.loads(cache.read_text())
    else:
        roles: dict[str, list[TensorCosts]] = {}
        for t in table.tensors:
            roles.setdefault(category(t.name), []).append(t)
        coefs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for i, (role, tensors) in enumerate(sorted(roles.items())):
                if progress:
                    progress(i, len(roles), f"calibrating {role}")
                probe = {}
                for t in tensors:
                    names = [o[0] for o in t.options]
                    if probe_type in names:
                        probe[t.name] = probe_type
                err = sum(
                    dict((o[0], o[2]) for o in t.options)[probe[t.name]]
                    for t in tensors
                    if t.name in probe
                )
                if not probe or err <= 0:
                    coefs[role] = 1.0
                    continue
                allocation = tuple((s.name, probe.get(s.name, s.source_type)) for s in source.specs)
                path = Path(tmp) / f"{role}.gguf"
                export_model(
                    source, Recipe(table.model_id, allocation, "probe"), path, imatrix=imatrix
                )
                kld = kl_divergence(path, source.path, n_chunks=n_chunks)
                coefs[role] = max(kld.mean_kld, 1e-9) / err
                path.unlink()
        atomic_write_json(cache, coefs)
    median = float(np.median(list(coefs.values())))
    scaled = []
    for t in table.tensors:
        c = coefs.get(category(t.name), median)
        scaled.append(
            TensorCosts(t.name, t.shape, t.n_params, tuple((q, b, e * c) for q, b, e in t.options))
        )
    return SensitivityTable(table.model_id, tuple(scaled), table.fixed_bytes)
