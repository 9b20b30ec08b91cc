"""What every model source offers: tensor specs, metadata fields and the `ModelSource` Protocol.

Tensors are addressed by their GGUF names (`blk.3.ffn_down.weight`) and shapes are ggml
shapes (ne0 = row length first), the convention of llama.cpp, gguf-py and the recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ramp_edge.models import ModelInfo, ResolvedModel


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of the source model."""

    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    source_type: str  # ggml type name in the source file

    @property
    def n_params(self) -> int:
        return int(np.prod(self.shape))

    @property
    def row_length(self) -> int:
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        return self.n_params // self.shape[0]


@dataclass(frozen=True, slots=True)
class KVField:
    key: str
    value: Any
    vtype: Any  # gguf.GGUFValueType
    sub_type: Any | None


class ModelSource(Protocol):
    """A model opened for reading: `source.gguf.GGUFSource` or `source.hf.HFSource`."""

    model: ResolvedModel
    path: Path

    @property
    def arch(self) -> str: ...

    @property
    def alignment(self) -> int: ...

    @property
    def specs(self) -> list[TensorSpec]: ...

    @property
    def info(self) -> ModelInfo: ...

    def spec(self, name: str) -> TensorSpec: ...

    def field(self, key: str, default: Any = None) -> Any: ...

    def kv_fields(self) -> list[KVField]: ...

    def raw(self, name: str) -> tuple[np.ndarray, str]: ...

    def tensor(self, name: str) -> np.ndarray: ...
