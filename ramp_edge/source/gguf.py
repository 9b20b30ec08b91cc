"""`GGUFSource`: a GGUF file opened read-only (memory-mapped through gguf-py's reader)."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge.errors import ArtifactError
from ramp_edge.models import ModelInfo, ResolvedModel
from ramp_edge.source.base import KVField, TensorSpec

logger = logging.getLogger(__name__)


class GGUFSource:
    """A GGUF file opened read-only (memory-mapped)."""

    def __init__(self, model: ResolvedModel):
        from gguf import GGUFReader

        self.model = model
        self.path = Path(model.path)
        try:
            self._reader = GGUFReader(self.path, "r")
        except Exception as err:  # gguf raises ValueError/struct.error/IndexError on bad bytes
            raise ArtifactError(f"{self.path} is not a readable GGUF file ({err})") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        expected_end = max(
            (int(t.data_offset) + int(t.n_bytes) for t in self._reader.tensors), default=0
        )
        if expected_end > self.path.stat().st_size:
            raise ArtifactError(
                f"{self.path} is truncated ({self.path.stat().st_size} bytes, needs {expected_end})"
            )

    @cached_property
    def specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(t.name, tuple(int(x) for x in t.shape), t.tensor_type.name)
            for t in self._reader.tensors
        ]

    def spec(self, name: str) -> TensorSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)

    def field(self, key: str, default: Any = None) -> Any:
        f = self._reader.fields.get(key)
        return default if f is None else f.contents()

    @cached_property
    def arch(self) -> str:
        arch = self.field("general.architecture")
        if not arch:
            raise ArtifactError(f"{self.path} has no general.architecture")
        return str(arch)

    @cached_property
    def alignment(self) -> int:
        return int(self.field("general.alignment", 32))

    def kv_fields(self) -> list[KVField]:
        """Every metadata field to carry into an exported file (not the GGUF.* header fields)."""
        from gguf import GGUFValueType

        if "_kv_fields" in self.__dict__:
            return list(self.__dict__["_kv_fields"])
        out = []
        for f in self._reader.fields.values():
            if f.name.startswith("GGUF.") or f.name == "general.architecture":
                continue
            vtype = f.types[0]
            sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
            out.append(KVField(f.name, f.contents(), vtype, sub))
        self.__dict__["_kv_fields"] = tuple(out)
        return out

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """The tensor's stored bytes/values as the file holds them, and its type name."""
        t = self._tensors[name]
        return t.data, t.tensor_type.name

    def release(self, name: str) -> None:
        """Hand the tensor's mapped pages back to the OS (madvise MADV_DONTNEED).

        Pages of a read-only file mapping count in the process's RSS once touched; a pass over
        every tensor (measurement, export) would otherwise end holding the whole file. They stay
        in the page cache, so touching them again costs a page fault, not a disk read.
        """
        import mmap

        data = self._tensors[name].data
        base = data  # views of a memmap are memmaps too: walk to the one that owns the mmap
        while isinstance(base, np.ndarray) and not isinstance(base.base, mmap.mmap):
            base = base.base
        mm = base.base if isinstance(base, np.memmap) else None
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        map_start = base.ctypes.data - (int(base.offset) % mmap.ALLOCATIONGRANULARITY)
        rel = data.ctypes.data - map_start
        start = rel - rel % mmap.PAGESIZE
        length = min(data.nbytes + (rel - start), len(mm) - start)
        if length > 0:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, length)
            except (OSError, ValueError) as err:  # advice only; never fail a run over it
                logger.debug("madvise(%s) failed: %s", name, err)

    def tensor(self, name: str) -> np.ndarray:
        """Dequantized float32 values, numpy shape = reversed ggml shape (rows, row_length)."""
        from ramp_edge.quant.catalogue import BY_ID
        from ramp_edge.quant.quantizer import to_float

        t = self._tensors[name]
        shape = tuple(int(x) for x in reversed(t.shape))
        qt = BY_ID.get(int(t.tensor_type))
        if qt is None:
            from gguf.quants import dequantize

            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        return to_float(t.data, qt, int(t.shape[0])).reshape(shape)

    @cached_property
    def info(self) -> ModelInfo:
        a = self.arch
        n_embd = int(self.field(f"{a}.embedding_length", 0))
        n_head = int(self.field(f"{a}.attention.head_count", 1))
        n_ff = self.field(f"{a}.feed_forward_length", 0)
        n_head_kv = self.field(f"{a}.attention.head_count_kv", n_head)
        # per-layer arrays exist in some archs; the first entry is representative
        if isinstance(n_ff, list):
            n_ff = n_ff[0]
        if isinstance(n_head_kv, list):
            n_head_kv = n_head_kv[0]
        head_dim = int(self.field(f"{a}.attention.key_length", n_embd // max(1, n_head)))
        tokens = self._reader.fields.get("tokenizer.ggml.tokens")
        return ModelInfo(
            arch=a,
            n_layer=int(self.field(f"{a}.block_count", 0)),
            n_embd=n_embd,
            n_ff=int(n_ff),
            n_head=n_head,
            n_head_kv=int(n_head_kv),
            head_dim=head_dim,
            n_ctx_train=int(self.field(f"{a}.context_length", 0)),
            n_vocab=len(tokens.data) if tokens is not None else 0,
            n_params=sum(s.n_params for s in self.specs),
        )
