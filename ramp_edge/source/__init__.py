"""Model sources: read a model's weights and metadata, whatever the container.

    base.py   TensorSpec, KVField and the `ModelSource` Protocol every reader satisfies
    gguf.py   `GGUFSource`: a GGUF file (gguf-py's reader, memory-mapped)
    hf.py     `HFSource`: a Hugging Face safetensors directory seen through GGUF names

`open_source` picks the reader for a resolved model (`ramp_edge.models.resolve`).
"""

from __future__ import annotations

from pathlib import Path

from ramp_edge.models import ResolvedModel
from ramp_edge.source.base import KVField, ModelSource, TensorSpec
from ramp_edge.source.gguf import GGUFSource

__all__ = ["GGUFSource", "KVField", "ModelSource", "TensorSpec", "open_source"]


def open_source(model: ResolvedModel, tokenizer_from: str | Path | None = None) -> ModelSource:
    """Open a resolved model for reading (GGUF, or an HF directory via `source.hf`).

    `tokenizer_from` (a GGUF of the same model) supplies the tokenizer of an HF directory.
    """
    if model.kind == "gguf":
        return GGUFSource(model)
    from ramp_edge.source.hf import HFSource

    return HFSource(model, tokenizer_from)
