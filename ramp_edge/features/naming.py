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

import json
import logging
import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np

from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.models import ModelInfo, ResolvedModel
from ramp_edge.source import TensorSpec

logger = logging.getLogger(__name__)

# GGUF architectures whose q/k rows convert_hf_to_gguf.py permutes (LlamaModel.permute).
PERMUTED_ARCHS = frozenset({"llama"})
# GGUF architectures whose stored norm weight is HF's (1 + w) (Gemma*Model.norm_shift).
NORM_OFFSET: dict[str, float] = {"gemma": 1.0, "gemma2": 1.0, "gemma3": 1.0}
# transformers model_type -> GGUF general.architecture
HF_TO_GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",  # llama.cpp runs mistral under the llama architecture
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
}

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


def permute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """convert_hf_to_gguf.py `LlamaModel.permute`: HF rows (rotate-half) -> GGUF (interleaved)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def unpermute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Inverse of `permute_qk` (transformers' `LlamaTensorProcessor._reverse_permute_weights`)."""
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


def to_gguf_layout(name: str, values: np.ndarray, arch: str, info: ModelInfo) -> np.ndarray:
    """An HF tensor (already renamed) in the layout and convention the GGUF stores."""
    kind = tensor_kind(name)
    if arch in PERMUTED_ARCHS and kind in ("attn_q", "attn_k") and name.endswith(".weight"):
        n_kv = info.n_head if kind == "attn_q" else info.n_head_kv
        values = permute_qk(values, info.n_head, n_kv)
    if arch in NORM_OFFSET and name.endswith("norm.weight"):
        values = values + np.float32(NORM_OFFSET[arch])
    return np.ascontiguousarray(values, dtype=np.float32)


def to_hf_layout(name: str, values: np.ndarray, arch: str, info: ModelInfo) -> np.ndarray:
    """Inverse of `to_gguf_layout`: a GGUF tensor as transformers holds it."""
    kind = tensor_kind(name)
    if arch in PERMUTED_ARCHS and kind in ("attn_q", "attn_k") and name.endswith(".weight"):
        n_kv = info.n_head if kind == "attn_q" else info.n_head_kv
        values = unpermute_qk(values, info.n_head, n_kv)
    if arch in NORM_OFFSET and name.endswith("norm.weight"):
        values = values - np.float32(NORM_OFFSET[arch])
    return np.ascontiguousarray(values, dtype=np.float32)


class HFWeights:
    """A Hugging Face safetensors directory seen through GGUF names, shapes and layout.

    The same interface as `ramp_edge.source.GGUFSource` for what features and folding need
    (`model`, `arch`, `info`, `specs`, `tensor(name)`). A tied `lm_head` is dropped, as
    convert_hf_to_gguf.py does; llama.cpp then uses token_embd for the output matmul.
    """

    def __init__(self, model: ResolvedModel):
        self.model = model
        self.path = Path(model.path)
        try:
            self.config = json.loads((self.path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ArtifactError(f"{self.path}/config.json is unreadable ({err})") from None
        cfg = self.config.get("text_config", self.config)
        model_type = str(cfg.get("model_type", ""))
        if model_type not in HF_TO_GGUF_ARCH:
            raise ConfigError(
                f"{self.path}: model_type {model_type!r} is not supported; "
                f"known: {', '.join(sorted(HF_TO_GGUF_ARCH))}"
            )
        self.arch = HF_TO_GGUF_ARCH[model_type]
        self._cfg = cfg
        self._files = sorted(self.path.glob("*.safetensors"))
        if not self._files:
            raise ConfigError(f"{self.path} has no *.safetensors files")

    @cached_property
    def _index(self) -> dict[str, tuple[Path, str]]:
        from safetensors import safe_open

        name_map = tensor_name_map(self.arch, int(self._cfg["num_hidden_layers"]))
        index: dict[str, tuple[Path, str]] = {}
        for file in self._files:
            with safe_open(str(file), framework="numpy") as handle:
                for hf_name in handle.keys():
                    gguf_name = hf_to_gguf_name(hf_name, name_map)
                    if gguf_name is None:
                        logger.debug("%s: no GGUF name for %s, skipped", self.path, hf_name)
                        continue
                    index[gguf_name] = (file, hf_name)
        if self._cfg.get("tie_word_embeddings", False):
            index.pop("output.weight", None)
        return index

    @cached_property
    def specs(self) -> list[TensorSpec]:
        from safetensors import safe_open

        out = []
        for name, (file, hf_name) in self._index.items():
            with safe_open(str(file), framework="numpy") as handle:
                sl = handle.get_slice(hf_name)
                shape = tuple(int(x) for x in reversed(sl.get_shape()))
                dtype = str(sl.get_dtype())
            out.append(
                TensorSpec(
                    name, shape, {"F32": "F32", "F16": "F16", "BF16": "BF16"}.get(dtype, dtype)
                )
            )
        order = {n: i for i, n in enumerate(_gguf_order(self._index))}
        return sorted(out, key=lambda s: order[s.name])

    def spec(self, name: str) -> TensorSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)

    def tensor(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        file, hf_name = self._index[name]
        with safe_open(str(file), framework="numpy") as handle:
            values = handle.get_tensor(hf_name)
        return to_gguf_layout(name, np.asarray(values, dtype=np.float32), self.arch, self.info)

    @cached_property
    def info(self) -> ModelInfo:
        cfg = self._cfg
        n_head = int(cfg["num_attention_heads"])
        n_embd = int(cfg["hidden_size"])
        return ModelInfo(
            arch=self.arch,
            n_layer=int(cfg["num_hidden_layers"]),
            n_embd=n_embd,
            n_ff=int(cfg.get("intermediate_size", 0)),
            n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads", n_head)),
            head_dim=int(cfg.get("head_dim") or n_embd // n_head),
            n_ctx_train=int(cfg.get("max_position_embeddings", 0)),
            n_vocab=int(cfg.get("vocab_size", 0)),
            n_params=sum(int(np.prod(s.shape)) for s in self.specs),
        )


def _gguf_order(names: Iterable[str]) -> list[str]:
    """Non-block tensors first, then blocks in layer order (the order convert writes)."""
    return sorted(names, key=lambda n: (block_index(n), n))


def open_weights(model: ResolvedModel):
    """The model's weights in GGUF naming: GGUFSource for .gguf, HFSource/HFWeights for HF dirs."""
    from ramp_edge.source import open_source

    if model.kind == "gguf":
        return open_source(model)
    try:
        return open_source(model)
    except ModuleNotFoundError:  # ramp_edge.hf_source not present: our own reader
        return HFWeights(model)
