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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramp_edge import paths
from ramp_edge.fsutil import atomic_write_json
from ramp_edge.quant import quantizer
from ramp_edge.quant.catalogue import CATALOGUE, QuantType, legal_types
from ramp_edge.quant.export import hessian_for
from ramp_edge.quant.presets import allows_quantization
from ramp_edge.source.base import TensorSpec

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


# Rows dequantized at a time: the float copies of one chunk (source values, each candidate's
# round trip, the difference) stay near 4 x 32 MiB whatever the tensor's size.
CHUNK_FLOATS = 8 << 20


def float_chunks(
    raw: np.ndarray, source_type: str, row_length: int, chunk_floats: int = CHUNK_FLOATS
) -> Iterator[np.ndarray]:
    """The stored tensor `raw` (as GGUF holds it) as float32 (rows, row_length) row blocks.

    Each block is dequantized on its own, so only one block's float copy is alive at a time;
    quantization is per row in ggml, so quantizing blocks gives the whole tensor's bytes.
    """
    qt = CATALOGUE.get(source_type)
    rows2d = raw.reshape(-1, raw.shape[-1]) if raw.ndim != 2 else raw
    n_rows = rows2d.shape[0]
    if qt is not None and qt.name != "F32" and rows2d.dtype == np.uint8:
        per_row = qt.row_bytes(row_length)
        if rows2d.shape[1] != per_row:  # e.g. packed as one long byte row
            rows2d = rows2d.reshape(-1, per_row)
            n_rows = rows2d.shape[0]
    step = max(1, chunk_floats // row_length)
    for first in range(0, n_rows, step):
        block = rows2d[first : first + step]
        if qt is None:
            from gguf import GGMLQuantizationType
            from gguf.quants import dequantize

            values = dequantize(np.asarray(block), GGMLQuantizationType[source_type])
            yield np.asarray(values, dtype=np.float32).reshape(-1, row_length)
        else:
            yield quantizer.to_float(np.ascontiguousarray(block), qt, row_length)


def tensor_chunks(source, spec: TensorSpec) -> Iterator[np.ndarray]:
    """Float row blocks of one source tensor: streamed from a GGUF's stored bytes, or whole
    from sources that only offer `tensor(name)` (safetensors via source.hf)."""
    if callable(getattr(source, "raw", None)) and spec.source_type in CATALOGUE:
        raw, stored = source.raw(spec.name)
        yield from float_chunks(raw, stored, spec.row_length)
    else:
        yield np.asarray(source.tensor(spec.name), dtype=np.float32).reshape(-1, spec.row_length)


def measure_tensor(
    spec: TensorSpec,
    chunks: Iterable[np.ndarray],
    types: Sequence[str],
    imat: np.ndarray | None = None,
    threads: int | None = None,
) -> TensorCosts:
    """Candidate options of one tensor from its float row blocks (a pure function: the local
    loop and the Ray tasks both call it, so their tables are identical).

    The relative output error of a candidate is
    sum_j ||dW[:, j]||^2 w_j / sum_j ||W[:, j]||^2 w_j, accumulated per column in float64
    over the row blocks.
    """
    weight = (
        np.asarray(imat, dtype=np.float64)
        if imat is not None
        else np.ones(spec.row_length, dtype=np.float64)
    )
    cands = candidates_for(spec.row_length, spec.source_type, types)
    measured = [
        qt
        for qt in cands
        if qt.name != spec.source_type and not (qt.needs_imatrix and imat is None)
    ]
    diff_sums = {qt.name: np.zeros(spec.row_length, dtype=np.float64) for qt in measured}
    ref_sum = np.zeros(spec.row_length, dtype=np.float64)
    for w in chunks:
        ref_sum += np.einsum("ij,ij->j", w, w, dtype=np.float64)
        for qt in measured:
            q = quantizer.quantize(w, qt, imat, threads=threads)
            d = quantizer.to_float(q, qt, spec.row_length, threads=threads)
            del q
            d -= w
            diff_sums[qt.name] += np.einsum("ij,ij->j", d, d, dtype=np.float64)
            del d
        del w
    ref = max(float((ref_sum * weight).sum()), 1e-30)
    options = []
    for qt in cands:
        nbytes = qt.tensor_bytes(spec.shape)
        if qt.name == spec.source_type:
            options.append((qt.name, nbytes, 0.0))  # the exporter copies the source bytes verbatim
        elif qt.name in diff_sums:
            options.append((qt.name, nbytes, float((diff_sums[qt.name] * weight).sum()) / ref))
    options.sort(key=lambda o: (-o[1], o[2]))
    return TensorCosts(spec.name, spec.shape, spec.n_params, tuple(options))


GPTQ_SAMPLE_ROWS = 128  # GPTQ treats rows independently: a row sample estimates the error


def measure_tensor_gptq(
    spec: TensorSpec,
    chunks: Iterable[np.ndarray],
    types: Sequence[str],
    hessian: np.ndarray,
    imat: np.ndarray | None = None,
    sample_rows: int = GPTQ_SAMPLE_ROWS,
) -> TensorCosts:
    """`measure_tensor` for GPTQ-encoded candidates (ramp_edge.quant.compensate).

    The error is the layer's relative output error under the full input Hessian,
    tr(dW H dW^T) / tr(W H W^T): GPTQ trades a larger weight error for a smaller output error,
    which the diagonal (imatrix) estimate cannot see. Rows are encoded independently, so an
    evenly spaced sample of `sample_rows` rows estimates the whole tensor's error.
    """
    from ramp_edge.quant.compensate import compensated_quantize, output_error

    n_rows = spec.n_params // spec.row_length
    stride = max(1, n_rows // sample_rows)
    picked, seen = [], 0
    for w in chunks:
        first = (-seen) % stride
        picked.append(np.array(w[first::stride], dtype=np.float32))
        seen += len(w)
    sample = np.concatenate(picked, axis=0)[:sample_rows]
    cands = candidates_for(spec.row_length, spec.source_type, types)
    options = []
    for qt in cands:
        nbytes = qt.tensor_bytes(spec.shape)
        if qt.name == spec.source_type:
            options.append((qt.name, nbytes, 0.0))
        elif not (qt.needs_imatrix and imat is None):
            encoded = compensated_quantize(sample, qt, hessian)
            decoded = quantizer.to_float(encoded, qt, spec.row_length)
            options.append((qt.name, nbytes, output_error(sample, decoded, hessian)))
    options.sort(key=lambda o: (-o[1], o[2]))
    return TensorCosts(spec.name, spec.shape, spec.n_params, tuple(options))


def _cache_key(source, types: Sequence[str], imatrix_id: str | None) -> str:
    # keyed by the source's content (hashed once, remembered by fsutil), not its path and
    # mtime: two different files never share a table; the model id is part of the key because
    # the table carries it
    from ramp_edge.fsutil import content_sha256

    model_id = getattr(getattr(source, "model", None), "model_id", "")
    raw = f"{content_sha256(source.path)}:{model_id}:{','.join(types)}:{imatrix_id}:{TABLE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


# (source, specs, types, imatrix, progress) -> TensorCosts per spec, in order
MeasureMany = Callable[..., list[TensorCosts]]


def measure_sensitivity(
    source,
    types: Sequence[str] = DEFAULT_CANDIDATES,
    imatrix: Mapping[str, np.ndarray] | None = None,
    imatrix_id: str | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
    measure_many: MeasureMany | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
) -> SensitivityTable:
    """Quantize every quantizable tensor at every candidate type and measure the error.

    Streams the model: one tensor's row block is dequantized at a time and the source's pages
    are handed back to the OS after each tensor (GGUFSource.release), so peak memory is bounded
    by the chunk size and the largest quantized tensor, not the model.

    Args:
        measure_many: measures all tensors elsewhere, e.g. one Ray task each
            (`ramp_edge.distributed.ray_measurer`); it calls `measure_tensor` like the local loop,
            so the table is the same. Default: this process, tensor by tensor.
        hessians: input Hessians: candidates are GPTQ-encoded and errors are output errors
            under the full Hessian (`measure_tensor_gptq`), measured here.
    """
    label = f"{imatrix_id}:gptq" if hessians else imatrix_id
    cache = paths.cache_dir("sensitivity") / f"{_cache_key(source, types, label)}.json"
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
    if measure_many is not None and not hessians:
        rows = measure_many(source, specs, tuple(types), imatrix, progress)
    else:
        rows = []
        release = getattr(source, "release", None)
        for i, s in enumerate(specs):
            if progress:
                progress(i, len(specs), f"sensitivity {s.name}")
            imat = imatrix.get(s.name) if imatrix else None
            hessian = hessian_for(hessians, s.name)
            if hessian is not None and hessian.shape == (s.row_length, s.row_length):
                rows.append(measure_tensor_gptq(s, tensor_chunks(source, s), types, hessian, imat))
            else:
                rows.append(measure_tensor(s, tensor_chunks(source, s), types, imat))
            if release:
                release(s.name)
    table = SensitivityTable(source.model.model_id, tuple(rows), fixed)
    if use_cache:
        atomic_write_json(cache, table.to_dict())
    if progress:
        progress(len(specs), len(specs), "sensitivity done")
    return table


def scale_by_sensitivity(
    table: SensitivityTable,
    sensitivity: Mapping[str, float],
    fallback: SensitivityTable | None = None,
) -> SensitivityTable:
    """Relative output errors -> KLD units, each tensor by its own output Fisher sensitivity.

    `sensitivity` (ramp_edge.features.fisher) is the KLD per unit of relative output error of
    each weight, where it sits in the model. Tensors it does not cover take their rows from
    `fallback` (the role-probe table) or, without one, the median sensitivity.
    """
    known = [v for v in sensitivity.values() if v > 0]
    median = float(np.median(known)) if known else 1.0
    backup = fallback.by_name() if fallback is not None else {}
    scaled = []
    for t in table.tensors:
        if t.name not in sensitivity and t.name in backup:
            scaled.append(backup[t.name])
            continue
        c = max(float(sensitivity.get(t.name, median)), 0.0)
        scaled.append(
            TensorCosts(t.name, t.shape, t.n_params, tuple((q, b, e * c) for q, b, e in t.options))
        )
    return SensitivityTable(table.model_id, tuple(scaled), table.fixed_bytes)


# Role probes score calibration text (never the evaluation text benchmarks report).
PROBE_DATA = "wikitext2-valid-late"


def calibrate(
    source,
    table: SensitivityTable,
    probe_type: str = "Q4_0",
    n_chunks: int = 2,
    progress: ProgressFn | None = None,
    imatrix: Mapping[str, np.ndarray] | None = None,
    imatrix_id: str | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
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
    if hessians:
        label += "+gptq"
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
                    source,
                    Recipe(table.model_id, allocation, "probe"),
                    path,
                    imatrix=imatrix,
                    hessians=hessians,
                )
                kld = kl_divergence(path, source.path, data=PROBE_DATA, n_chunks=n_chunks)
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
