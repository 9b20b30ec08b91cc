"""GGUF <-> Hugging Face tensor conventions: names, the llama q/k row permutation, norm offsets.

Everything in `ramp_edge.features` works in GGUF naming and GGUF layout, because that is what
the exporter writes. Two conventions differ between a GGUF and the transformers checkpoint
it came from (both applied by llama.cpp's `convert_hf_to_gguf.py` and undone by
transformers' GGUF loader, `modeling_gguf_pytorch_utils.py`):

- **q/k permutation** (`LlamaModel.permute`): for arch `llama` the rows of attn_q / attn_k are
  reordered within each head from rotate-half to interleaved RoPE pairs. Only rows move, so
  anything computed per input channel (columns) or per row-set is unaffected.
- **norm offset** (`Gemma*Model`: `data_torch + 1` on `*norm.weight`): Gemma computes
  `x * (1 + w)`; the GGUF stores `1 + w`, the multiplier llama.cpp applies. Folding works on the
  GGUF value; converting back to transformers subtracts the offset again.

This module is pure numpy + gguf so that the exporter can use it without torch.
"""

from __future__ import annotations

import re

import numpy as np

from ramp_edge.errors import ConfigError
from ramp_edge.models import ModelInfo

# GGUF architectures whose q/k rows convert_hf_to_gguf.py permutes (LlamaModel.permute).
PERMUTED_ARCHS = frozenset({"llama"})
# GGUF architectures whose stored norm weight is HF's (1 + w) (Gemma*Model.norm_shift).
NORM_OFFSET: dict[str, float] = {"gemma": 1.0, "gemma2": 1.0, "gemma3": 1.0}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+?)\.(weight|bias)$")


def block_index(name: str) -> int:
    """Layer number of a GGUF tensor name (`blk.7.attn_q.weight` -> 7), -1 outside blocks."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else -1


def tensor_kind(name: str) -> str:
    """The part of a GGUF name that says what the tensor is (`attn_q`, `ffn_down`, `output`)."""
    match = _BLOCK.match(name)
    if match:
        return match.group(2)
    return name.rsplit(".", 1)[0]


def unpermute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """GGUF rows (interleaved) -> HF (rotate-half): undoes `source.hf`'s `LlamaModel.permute`.

    transformers' `LlamaTensorProcessor._reverse_permute_weights`.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tensor_name_map(arch: str, n_layer: int):  # -> gguf.TensorNameMap
    import gguf

    for key, value in gguf.MODEL_ARCH_NAMES.items():
        if value == arch:
            return gguf.get_tensor_name_map(key, n_layer)
    raise ConfigError(f"architecture {arch!r} is not known to gguf-py {gguf.__version__}")


def hf_to_gguf_name(hf_name: str, name_map) -> str | None:
    """`model.layers.0.self_attn.q_proj.weight` -> `blk.0.attn_q.weight` (None if unmapped)."""
    for suffix in (".weight", ".bias"):
        if hf_name.endswith(suffix):
            base = name_map.get_name(hf_name[: -len(suffix)])
            return None if base is None else base + suffix
    base = name_map.get_name(hf_name)
    return base


def to_hf_layout(name: str, values: np.ndarray, arch: str, info: ModelInfo) -> np.ndarray:
    """A GGUF tensor as transformers holds it (q/k rows un-permuted, norm offset removed)."""
    kind = tensor_kind(name)
    if arch in PERMUTED_ARCHS and kind in ("attn_q", "attn_k") and name.endswith(".weight"):
        n_kv = info.n_head if kind == "attn_q" else info.n_head_kv
        values = unpermute_qk(values, info.n_head, n_kv)
    if arch in NORM_OFFSET and name.endswith("norm.weight"):
        values = values - np.float32(NORM_OFFSET[arch])
    return np.ascontiguousarray(values, dtype=np.float32)
