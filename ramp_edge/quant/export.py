"""Recipe -> standard GGUF that stock llama.cpp loads (HALO export).

The file is streamed: header, metadata and tensor infos first (so its exact size is known
before any tensor is quantized), then each tensor is quantized and written in turn, into
`<out>.partial`, renamed onto `<out>` only after the last byte. Metadata (tokenizer, chat
template, hyper-parameters) is copied from the source verbatim; `general.file_type` is set to
the type that holds most parameters so llama.cpp's model description is not misleading.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ramp_edge import __version__
from ramp_edge.errors import ConfigError, RampEdgeError
from ramp_edge.fsutil import atomic_path
from ramp_edge.quant import quantizer
from ramp_edge.quant.catalogue import CATALOGUE, get
from ramp_edge.quant.presets import allows_quantization
from ramp_edge.recipe import Recipe, validate

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]


@dataclass(frozen=True, slots=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # ggml order
    qtype: str
    nbytes: int
    action: str  # "quantize" | "copy"

    @property
    def n_params(self) -> int:
        return int(np.prod(self.shape))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "type": self.qtype,
            "params": self.n_params,
            "bytes": self.nbytes,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """Everything about the output file that is known before writing it."""

    model_id: str
    method: str
    tensors: tuple[TensorPlan, ...]
    header_bytes: int  # header + metadata + tensor infos, padded to the alignment
    alignment: int
    file_type: int

    @property
    def size_bytes(self) -> int:
        return self.header_bytes + sum(_pad(t.nbytes, self.alignment) for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_params for t in self.tensors)

    @property
    def bpw(self) -> float:
        """Bits per weight as llama.cpp reports it: tensor data bits / parameters."""
        return self.tensor_bytes * 8 / max(1, self.n_params)

    @property
    def file_bpw(self) -> float:
        """Bits per weight counting the whole file (metadata and padding included)."""
        return self.size_bytes * 8 / max(1, self.n_params)

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(t.qtype for t in self.tensors))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "method": self.method,
            "size_bytes": self.size_bytes,
            "tensor_bytes": self.tensor_bytes,
            "header_bytes": self.header_bytes,
            "n_params": self.n_params,
            "bpw": round(self.bpw, 4),
            "file_bpw": round(self.file_bpw, 4),
            "file_type": self.file_type,
            "types": self.type_counts(),
            "tensors": [t.to_dict() for t in self.tensors],
        }


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    plan: ExportPlan
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "seconds": round(self.seconds, 3), **self.plan.to_dict()}


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _dominant_ftype(tensors: list[TensorPlan]) -> int:
    weights: Counter[str] = Counter()
    for t in tensors:
        if allows_quantization(t.name, t.shape):
            weights[t.qtype] += t.n_params
    if not weights:
        return 0
    qtype = weights.most_common(1)[0][0]
    ftype = CATALOGUE[qtype].ftype
    return 0 if ftype is None else ftype


def _plan_tensors(
    source: Any, recipe: Recipe, overrides: Mapping[str, np.ndarray]
) -> list[TensorPlan]:
    types = recipe.types
    plans = []
    for s in source.specs:
        qt = get(types[s.name])
        copy = qt.name == s.source_type and s.name not in overrides
        plans.append(
            TensorPlan(
                s.name, s.shape, qt.name, qt.tensor_bytes(s.shape), "copy" if copy else "quantize"
            )
        )
    return plans


def _writer(source: Any, plans: list[TensorPlan], file_type: int, method: str, path: Path | None):
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    writer = GGUFWriter(path, source.arch)
    writer.data_alignment = source.alignment
    for kv in source.kv_fields():
        if kv.key in ("general.file_type", "general.quantization_version"):
            continue
        writer.add_key_value(kv.key, kv.value, kv.vtype, sub_type=kv.sub_type)
    writer.add_key_value("general.quantization_version", 2, GGUFValueType.UINT32)
    writer.add_key_value("general.file_type", file_type, GGUFValueType.UINT32)
    writer.add_key_value("ramp_edge.version", __version__, GGUFValueType.STRING)
    writer.add_key_value("ramp_edge.method", method, GGUFValueType.STRING)
    for t in plans:
        qt = CATALOGUE[t.qtype]
        byte_shape = [*reversed(t.shape[1:]), qt.row_bytes(t.shape[0])]
        writer.add_tensor_info(
            t.name,
            byte_shape,
            np.dtype(np.uint8),
            t.nbytes,
            raw_dtype=GGMLQuantizationType(qt.ggml_id),
        )
    return writer


def _write_head(writer: Any, source: Any, path: Path) -> None:
    """Header, metadata and tensor infos, as GGUFWriter writes them.

    Packing a 50k-262k token vocabulary in Python costs a few hundred ms, so each source's
    packed fields are cached on the source object (sweeps export one model many times).
    """
    from gguf import GGUFValueType
    from gguf.gguf_writer import WriterState

    writer.write_header_to_file(path)
    cache: dict[str, bytes] = source.__dict__.setdefault("_ramp_packed_kv", {})
    blob = bytearray()
    for key, val in writer.kv_data[0].items():
        packed = cache.get(key) if not key.startswith(("general.file_type", "ramp_edge.")) else None
        if packed is None:
            packed = bytes(writer._pack_val(key, GGUFValueType.STRING, add_vtype=False)) + bytes(
                writer._pack_val(val.value, val.type, add_vtype=True, sub_type=val.sub_type)
            )
            cache[key] = packed
        blob += packed
    writer.fout[0].write(blob)
    writer.state = WriterState.KV_DATA
    writer.write_ti_data_to_file()


def _header_bytes(source: Any, plans: list[TensorPlan], file_type: int, method: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header.gguf"
        writer = _writer(source, plans, file_type, method, path)
        _write_head(writer, source, path)
        size = writer.fout[0].tell()
        writer.close()
    return _pad(size, source.alignment)


def plan_export(
    source: Any, recipe: Recipe, overrides: Mapping[str, np.ndarray] | None = None
) -> ExportPlan:
    """Check the recipe against the model and compute the output layout, to the byte."""
    validate(recipe, source)
    plans = _plan_tensors(source, recipe, overrides or {})
    file_type = _dominant_ftype(plans)
    return ExportPlan(
        model_id=recipe.model_id or source.model.model_id,
        method=recipe.method,
        tensors=tuple(plans),
        header_bytes=_header_bytes(source, plans, file_type, recipe.method),
        alignment=source.alignment,
        file_type=file_type,
    )


class EncodedCache(Protocol):
    """Quantized bytes per (tensor, type), reused across exports of one source and setting."""

    def get(self, name: str, qtype: str, encode: Callable[[], np.ndarray]) -> np.ndarray: ...


def hessian_for(hessians: Mapping[str, np.ndarray] | None, name: str) -> np.ndarray | None:
    """The input Hessian of `name`; a tied token_embd.weight is the output head's input."""
    if not hessians:
        return None
    if name in hessians:
        return hessians[name]
    if name == "token_embd.weight":
        return hessians.get("output.weight")
    return None


def _tensor_bytes(
    source: Any,
    plan: TensorPlan,
    overrides: Mapping[str, np.ndarray],
    imatrix: Mapping[str, np.ndarray] | None,
    cache: EncodedCache | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    if plan.action == "copy":
        raw, _ = source.raw(plan.name)
        return np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if cache is not None:
        return cache.get(
            plan.name,
            plan.qtype,
            lambda: _tensor_bytes(source, plan, overrides, imatrix, None, hessians),
        )
    values = overrides[plan.name] if plan.name in overrides else source.tensor(plan.name)
    matrix = np.asarray(values, dtype=np.float32).reshape(-1, plan.shape[0])
    qt = CATALOGUE[plan.qtype]
    imat = imatrix.get(plan.name) if imatrix else None
    if qt.needs_imatrix and imat is None:
        raise ConfigError(
            f"type {qt.name} for tensor {plan.name} needs an importance matrix (--imatrix)"
        )
    if qt.name == "BF16":
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize as np_quantize

        return np_quantize(matrix, GGMLQuantizationType.BF16).view(np.uint8).reshape(-1)
    hessian = hessian_for(hessians, plan.name) if qt.name not in ("F32", "F16") else None
    if hessian is not None and hessian.shape == (matrix.shape[1], matrix.shape[1]):
        from ramp_edge.quant.compensate import compensated_quantize

        return compensated_quantize(matrix, qt, hessian).reshape(-1)
    return quantizer.quantize(matrix, qt, imat).reshape(-1)


def export_model(
    source: Any,
    recipe: Recipe,
    out: str | os.PathLike[str],
    imatrix: Mapping[str, np.ndarray] | None = None,
    overrides: Mapping[str, np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    cache: EncodedCache | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
) -> ExportResult:
    """Write `source` quantized per `recipe` to the GGUF `out`, atomically.

    Args:
        source: an opened model (ramp_edge.source.open_source).
        recipe: tensor -> type; validated against the model first.
        out: output path; written as a temporary file beside it and renamed at the end.
        imatrix: GGUF tensor name -> importance per column (llama.cpp imatrix: in_sum2 / counts).
        overrides: GGUF tensor name -> float32 values replacing the source's (Scale Folding).
        progress: callback(done_bytes, total_bytes, description).
        cache: reuses quantized tensors across exports (the measured search assembles hundreds
            of files from the same few candidates per tensor); keyed by (tensor, type) only, so
            one cache serves one (source, imatrix, overrides, hessians) setting.
        hessians: GGUF tensor name -> E[x x^T] of its input; tensors that have one are quantized
            with error compensation (ramp_edge.quant.compensate, GPTQ), the rest as llama.cpp
            does. Same types, same bytes: only which levels the blocks pick changes.

    Returns:
        ExportResult; `result.plan.size_bytes` equals the file size.
    """
    start = time.perf_counter()
    overrides = overrides or {}
    plan = plan_export(source, recipe, overrides)
    out_path = Path(out)
    total = plan.tensor_bytes
    done = 0
    release = getattr(source, "release", None)
    with atomic_path(out_path) as tmp:
        writer = _writer(source, list(plan.tensors), plan.file_type, plan.method, tmp)
        _write_head(writer, source, tmp)
        fout = writer.fout[0]
        writer.write_padding(fout, fout.tell())
        for t in plan.tensors:
            if progress:
                progress(done, total, f"{t.name} -> {t.qtype}")
            data = _tensor_bytes(source, t, overrides, imatrix, cache, hessians)
            if data.nbytes != t.nbytes:
                raise RampEdgeError(f"{t.name}: produced {data.nbytes} bytes, planned {t.nbytes}")
            writer.write_tensor_data(data)
            del data
            if release is not None:  # the source's pages: RSS stays one tensor, not the model
                release(t.name)
            done += t.nbytes
        writer.close()
        size = tmp.stat().st_size
        if size != plan.size_bytes:
            raise RampEdgeError(
                f"wrote {size} bytes but predicted {plan.size_bytes}; please report"
            )
    if progress:
        progress(total, total, "done")
    return ExportResult(out_path, plan, time.perf_counter() - start)
