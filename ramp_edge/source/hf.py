"""Hugging Face model directories (llama / mistral / qwen2 / gemma3, safetensors) as export sources.

Tensor names and layouts follow llama.cpp's `convert_hf_to_gguf.py`: names through gguf-py's
tensor-name map, q_proj/k_proj rows permuted for llama-family rotary layout (`LlamaModel.permute`;
qwen2 and gemma3 keep the HF layout), every `*norm.weight` shifted by +1 for gemma3
(`Gemma3Model.modify_tensors`: Gemma3RMSNorm scales by 1 + w), a tied `lm_head` dropped.
Hyper-parameters come from config.json (a multimodal wrapper's `text_config`, its vision tower
skipped). The tokenizer comes from a GGUF of the same model (`tokenizer_from`) or, best effort,
from `tokenizer.json` via gguf-py's vocab readers.

To add an architecture: its model_type in HF_TO_GGUF_ARCH and a CONVERT row saying what its
convert_hf_to_gguf.py class does beyond renaming; HF_SOURCE_TYPES follows from the two.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge.errors import ArtifactError, ConfigError, DependencyError
from ramp_edge.models import ModelInfo, ResolvedModel
from ramp_edge.source.base import KVField, TensorSpec

logger = logging.getLogger(__name__)

# transformers model_type -> GGUF general.architecture (as convert_hf_to_gguf.py names it)
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


@dataclass(frozen=True)
class Convert:
    """What an architecture's convert_hf_to_gguf.py class does beyond renaming tensors."""

    permute_qk: bool = False  # LlamaModel.permute on q_proj/k_proj rows
    norm_shift: float = 0.0  # added to every "*norm.weight" (Gemma3RMSNorm scales by 1 + w)
    trim_vocab: bool = False  # token_embd rows past the tokenizer's vocabulary dropped
    sliding_window: bool = False  # writes attention.sliding_window


# GGUF architecture -> its converter class's rules (LlamaModel, Qwen2Model, Gemma3Model).
CONVERT = {
    "llama": Convert(permute_qk=True),
    "qwen2": Convert(),
    "gemma3": Convert(norm_shift=1.0, trim_vocab=True, sliding_window=True),
}
# The model types HFSource reads (layout and hyper-parameters as convert_hf_to_gguf.py writes).
HF_SOURCE_TYPES = tuple(t for t, arch in HF_TO_GGUF_ARCH.items() if arch in CONVERT)
# Towers of multimodal wrappers (Gemma3ForConditionalGeneration) that the text model skips.
_NOT_TEXT = ("vision_tower.", "vision_model.", "multi_modal_projector.", "multimodal_projector.")


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotary halves -> llama.cpp interleaved rows."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


class HFSource:
    """A local Hugging Face directory opened for export (read-only)."""

    def __init__(self, model: ResolvedModel, tokenizer_from: str | Path | None = None):
        try:
            from safetensors import safe_open
        except ImportError as err:
            raise DependencyError(
                "safetensors is missing; run: pip install 'ramp-edge[torch]'"
            ) from err
        self.model = model
        self.path = Path(model.path)
        try:
            config = json.loads((self.path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ArtifactError(f"{self.path}/config.json is unreadable ({err})") from None
        model_type = str(config.get("model_type", ""))
        if model_type not in HF_SOURCE_TYPES:
            raise ConfigError(
                f"{self.path}: model_type {model_type!r} is not supported; "
                f"supported: {', '.join(HF_SOURCE_TYPES)}"
            )
        # A multimodal wrapper keeps its language model's hyper-parameters under text_config.
        self.config = {**config, **(config.get("text_config") or {})}
        self.arch = HF_TO_GGUF_ARCH[model_type]
        self.convert = CONVERT[self.arch]
        # converter name (wrapper's "language_model." dropped) -> (open file, key in that file)
        self._files: dict[str, tuple[Any, str]] = {}
        for st in sorted(self.path.glob("*.safetensors")):
            handle = safe_open(str(st), "np")
            for key in handle.keys():
                if not any(part in key for part in _NOT_TEXT):
                    self._files[key.replace("language_model.", "")] = (handle, key)
        self.tokenizer_from = Path(tokenizer_from) if tokenizer_from else None
        self.alignment = 32
        import gguf

        arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch)
        self._name_map = gguf.get_tensor_name_map(arch_enum, self.n_layer)
        self._hf_by_gguf: dict[str, str] = {}
        for key in self._files:
            if key == "lm_head.weight" and self.tied:
                continue
            name = self._name_map.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                logger.warning("skipping unmapped tensor %s", key)
                continue
            self._hf_by_gguf[name] = key

    @property
    def n_layer(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def tied(self) -> bool:
        return (
            bool(self.config.get("tie_word_embeddings", False))
            or "lm_head.weight" not in self._files
        )

    def _order(self, name: str) -> tuple[int, int, str]:
        from ramp_edge.quant.presets import layer_index

        li = layer_index(name)
        return (0 if name.startswith("token_embd") else 2 if li < 0 else 1, li, name)

    @cached_property
    def specs(self) -> list[TensorSpec]:
        out = []
        for name in sorted(self._hf_by_gguf, key=self._order):
            handle, key = self._files[self._hf_by_gguf[name]]
            shape = tuple(int(x) for x in reversed(handle.get_slice(key).get_shape()))
            if name == "token_embd.weight" and self._vocab_rows is not None:
                shape = (shape[0], min(shape[1], self._vocab_rows))
            out.append(TensorSpec(name, shape, "F32"))
        return out

    @cached_property
    def _vocab_rows(self) -> int | None:
        """Gemma3Model keeps only the token_embd rows its tokenizer has (the rest are padding)."""
        if not self.convert.trim_vocab:
            return None
        try:
            fields = self._tokenizer_fields()
        except ConfigError:
            return None  # no tokenizer yet: the rows stay; kv_fields() will ask for one
        return next(len(kv.value) for kv in fields if kv.key == "tokenizer.ggml.tokens")

    def spec(self, name: str) -> TensorSpec:
        return next(s for s in self.specs if s.name == name)

    def tensor(self, name: str) -> np.ndarray:
        handle, key = self._files[self._hf_by_gguf[name]]
        w = np.asarray(handle.get_tensor(key), dtype=np.float32)
        if self.convert.permute_qk:
            n_head = int(self.config["num_attention_heads"])
            n_kv = int(self.config.get("num_key_value_heads", n_head))
            if name.endswith("attn_q.weight"):
                w = _permute(w, n_head, n_head)
            elif name.endswith("attn_k.weight"):
                w = _permute(w, n_head, n_kv)
        if self.convert.norm_shift and key.endswith("norm.weight"):
            w = w + np.float32(self.convert.norm_shift)
        if name == "token_embd.weight" and self._vocab_rows is not None:
            w = w[: self._vocab_rows]
        return w

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        return self.tensor(name), "F32"

    def field(self, key: str, default: Any = None) -> Any:
        for kv in self.kv_fields():
            if kv.key == key:
                return kv.value
        return default

    @cached_property
    def info(self) -> ModelInfo:
        c = self.config
        n_head = int(c["num_attention_heads"])
        return ModelInfo(
            arch=self.arch,
            n_layer=self.n_layer,
            n_embd=int(c["hidden_size"]),
            n_ff=int(c["intermediate_size"]),
            n_head=n_head,
            n_head_kv=int(c.get("num_key_value_heads", n_head)),
            head_dim=int(c.get("head_dim") or c["hidden_size"] // n_head),
            n_ctx_train=int(c.get("max_position_embeddings", 0)),
            n_vocab=self._vocab_rows or int(c["vocab_size"]),
            n_params=sum(s.n_params for s in self.specs),
        )

    def _hparam_fields(self) -> list[KVField]:
        from gguf import GGUFValueType as T

        c, a, i = self.config, self.arch, self.info
        # transformers 5 keeps rope settings in rope_parameters, per attention kind for gemma3;
        # GGUF's freq_base is the full-attention layers' (llama.cpp fixes gemma3's sliding
        # layers at 10000, Gemma3Model writes only the global theta).
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        rope = rope.get("full_attention", rope)
        theta = float(rope.get("rope_theta", c.get("rope_theta", 10000.0)))
        fields = [
            KVField("general.name", self.path.name, T.STRING, None),
            KVField(f"{a}.context_length", i.n_ctx_train, T.UINT32, None),
            KVField(f"{a}.embedding_length", i.n_embd, T.UINT32, None),
            KVField(f"{a}.feed_forward_length", i.n_ff, T.UINT32, None),
            KVField(f"{a}.block_count", i.n_layer, T.UINT32, None),
            KVField(f"{a}.attention.head_count", i.n_head, T.UINT32, None),
            KVField(f"{a}.attention.head_count_kv", i.n_head_kv, T.UINT32, None),
            KVField(f"{a}.rope.freq_base", theta, T.FLOAT32, None),
            KVField(
                f"{a}.attention.layer_norm_rms_epsilon",
                float(c.get("rms_norm_eps", 1e-5)),
                T.FLOAT32,
                None,
            ),
            KVField(f"{a}.rope.dimension_count", i.head_dim, T.UINT32, None),
        ]
        if c.get("head_dim") or i.head_dim != i.n_embd // i.n_head:
            fields += [
                KVField(f"{a}.attention.key_length", i.head_dim, T.UINT32, None),
                KVField(f"{a}.attention.value_length", i.head_dim, T.UINT32, None),
            ]
        if rope.get("rope_type", rope.get("type")) == "linear":
            fields += [
                KVField(f"{a}.rope.scaling.type", "linear", T.STRING, None),
                KVField(f"{a}.rope.scaling.factor", float(rope["factor"]), T.FLOAT32, None),
            ]
        elif rope.get("rope_type", "default") != "default":
            logger.warning("%s: rope scaling %s is not written to the GGUF", self.path, rope)
        # llama.cpp scales gemma attention by 1/sqrt(head_dim) (hidden/heads for the 27B) and
        # has no key for query_pre_attn_scalar; say so rather than export a different model.
        scalar = c.get("query_pre_attn_scalar")
        if scalar is not None and scalar not in (i.head_dim, i.n_embd // i.n_head):
            logger.warning(
                "%s: query_pre_attn_scalar=%s but llama.cpp scales attention by 1/sqrt(%d)",
                self.path,
                scalar,
                i.head_dim,
            )
        if c.get("final_logit_softcapping"):
            cap = float(c["final_logit_softcapping"])
            fields.append(KVField(f"{a}.final_logit_softcapping", cap, T.FLOAT32, None))
        pattern = c.get("sliding_window_pattern", c.get("_sliding_window_pattern"))
        if self.convert.sliding_window and c.get("sliding_window") and pattern != 1:
            window = int(c["sliding_window"])
            fields.append(KVField(f"{a}.attention.sliding_window", window, T.UINT32, None))
        return fields

    def _tokenizer_fields(self) -> list[KVField]:
        if self.tokenizer_from is not None:
            from ramp_edge.models import resolve
            from ramp_edge.source.gguf import GGUFSource

            donor = GGUFSource(resolve(str(self.tokenizer_from)))
            return [kv for kv in donor.kv_fields() if kv.key.startswith("tokenizer.")]
        if (self.path / "tokenizer.json").exists():
            return self._vocab_from_tokenizer_json()
        raise ConfigError(
            f"{self.path} has no tokenizer.json; "
            "pass a GGUF of the same model with --tokenizer-from"
        )

    def _vocab_from_tokenizer_json(self) -> list[KVField]:
        """Best effort: gguf-py's vocab readers (BPE or SentencePiece-style HF tokenizers)."""
        import gguf
        from gguf import GGUFValueType as T

        spec = json.loads((self.path / "tokenizer.json").read_text())
        is_bpe = spec.get("model", {}).get("type") == "BPE" and not spec.get("model", {}).get(
            "byte_fallback"
        )
        vocab = gguf.vocab.BpeVocab(self.path) if is_bpe else gguf.vocab.LlamaHfVocab(self.path)
        tokens, scores, types = [], [], []
        for text, score, ttype in vocab.all_tokens():
            tokens.append(
                text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
            )
            scores.append(score)
            types.append(int(ttype))
        fields = [
            KVField("tokenizer.ggml.model", "gpt2" if is_bpe else "llama", T.STRING, None),
            KVField("tokenizer.ggml.pre", "default", T.STRING, None),
            KVField("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
            KVField("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32),
        ]
        if not is_bpe:
            fields.append(KVField("tokenizer.ggml.scores", scores, T.ARRAY, T.FLOAT32))
        special = gguf.SpecialVocab(self.path, load_merges=is_bpe)
        if is_bpe and special.merges:
            fields.append(KVField("tokenizer.ggml.merges", list(special.merges), T.ARRAY, T.STRING))
        for kind, tid in special.special_token_ids.items():
            fields.append(KVField(f"tokenizer.ggml.{kind}_token_id", int(tid), T.UINT32, None))
        if special.chat_template:
            fields.append(KVField("tokenizer.chat_template", special.chat_template, T.STRING, None))
        return fields

    def kv_fields(self) -> list[KVField]:
        return self._hparam_fields() + self._tokenizer_fields()
