"""llama.cpp's quantization presets (ftypes), reproduced tensor by tensor.

A port of `src/llama-quant.cpp` of the llama.cpp vendored in llama-cpp-python 0.3.36
(`tensor_allows_quantization`, `llama_tensor_get_type_impl`, `tensor_type_fallback`,
`llama_ftype_get_default_type`), for dense and MoE decoder models (Falcon and GLM5-next
special cases are not reproduced). The iteration order matters for the attn_v counters:
llama.cpp walks tensors sorted by layer number, then name (`weight_name_comparer`).
A test checks the result against `llama_model_quantize` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ramp_edge.errors import ConfigError
from ramp_edge.quant.catalogue import CATALOGUE, resolve_fallback


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    ftype: int  # llama_ftype
    base: str  # default tensor type (llama_ftype_get_default_type)


_PRESETS = [
    ("F32", 0, "F32"),
    ("F16", 1, "F16"),
    ("BF16", 32, "BF16"),
    ("Q4_0", 2, "Q4_0"),
    ("Q4_1", 3, "Q4_1"),
    ("Q8_0", 7, "Q8_0"),
    ("Q5_0", 8, "Q5_0"),
    ("Q5_1", 9, "Q5_1"),
    ("Q2_K", 10, "Q2_K"),
    ("Q3_K_S", 11, "Q3_K"),
    ("Q3_K_M", 12, "Q3_K"),
    ("Q3_K_L", 13, "Q3_K"),
    ("Q4_K_S", 14, "Q4_K"),
    ("Q4_K_M", 15, "Q4_K"),
    ("Q5_K_S", 16, "Q5_K"),
    ("Q5_K_M", 17, "Q5_K"),
    ("Q6_K", 18, "Q6_K"),
    ("IQ2_XXS", 19, "IQ2_XXS"),
    ("IQ2_XS", 20, "IQ2_XS"),
    ("Q2_K_S", 21, "Q2_K"),
    ("IQ3_XS", 22, "IQ3_S"),
    ("IQ3_XXS", 23, "IQ3_XXS"),
    ("IQ1_S", 24, "IQ1_S"),
    ("IQ4_NL", 25, "IQ4_NL"),
    ("IQ3_S", 26, "IQ3_S"),
    ("IQ3_M", 27, "IQ3_S"),
    ("IQ2_S", 28, "IQ2_XS"),
    ("IQ2_M", 29, "IQ2_S"),
    ("IQ4_XS", 30, "IQ4_XS"),
    ("IQ1_M", 31, "IQ1_M"),
    ("TQ1_0", 36, "TQ1_0"),
    ("TQ2_0", 37, "TQ2_0"),
    ("NVFP4", 39, "NVFP4"),
]
PRESETS: dict[str, Preset] = {name: Preset(name, ftype, base) for name, ftype, base in _PRESETS}
# Presets llama-quantize refuses without an importance matrix ("Please do not use IQ1_S, IQ1_M,
# IQ2_S, IQ2_XXS, IQ2_XS or Q2_K_S quantization without an importance matrix"): without one
# they are unusable (IQ1_M on SmolLM2-135M: perplexity 3232 against 23 at the same size).
NEEDS_IMATRIX: frozenset[str] = frozenset(
    {"IQ1_S", "IQ1_M", "IQ2_S", "IQ2_XXS", "IQ2_XS", "Q2_K_S"}
)
# ... and the rest of the sub-3-bit i-quant presets, which it accepts but which are as unusable
# without one (IQ2_M on SmolLM2-135M: mean KLD 1.63 against 0.026 at the same size).
IMATRIX_ADVISED: frozenset[str] = NEEDS_IMATRIX | {
    name for name in PRESETS if name.startswith(("IQ1_", "IQ2_"))
}
FTYPE_NAMES: dict[int, str] = {p.ftype: p.name for p in PRESETS.values()}

# Categories as in tensor_get_category (substring tests, first match wins).
_CATEGORY_RULES = [
    ("attn_qkv.weight", "attn_qkv"),
    ("attn_kv_b.weight", "attn_kv_b"),
    ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"),
    ("attn_q.weight", "attn_q"),
    ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_down", "ffn_down"),
]
_NOT_QUANTIZED_SUBSTRINGS = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
_LAYER = re.compile(r"^blk\.(\d+)\.")


def get_preset(name: str) -> Preset:
    key = name.strip().upper()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key]


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, cat in _CATEGORY_RULES:
        if needle in name:
            return cat
    return "other"


def allows_quantization(name: str, shape: Sequence[int]) -> bool:
    """tensor_allows_quantization: 2-D+ weights other than norms, routers and small tables."""
    if len(shape) < 2 or not name.endswith("weight"):
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(s in name for s in _NOT_QUANTIZED_SUBSTRINGS)


def layer_index(name: str) -> int:
    match = _LAYER.match(name)
    return int(match.group(1)) if match else -1


def llama_order(names: Sequence[str]) -> list[str]:
    """llama_model_loader's weights_map order: by layer number (-1 first), then by name."""
    return sorted(names, key=lambda n: (layer_index(n), n))


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def preset_types(
    preset: str,
    tensors: Mapping[str, tuple[int, ...]],
    source_types: Mapping[str, str],
    n_layer: int,
    n_head: int,
    n_head_kv: int,
    n_expert: int = 0,
    has_imatrix: bool = False,
    is_70b: bool = False,
) -> dict[str, str]:
    """The type llama_model_quantize gives each tensor for a preset (ftype).

    Args:
        preset: e.g. "Q4_K_M".
        tensors: GGUF name -> ggml shape (row length first).
        source_types: GGUF name -> type in the source (kept by tensors that are not quantized).
        n_layer, n_head, n_head_kv, n_expert: model hyper-parameters.
        has_imatrix: llama.cpp changes a few choices when an importance matrix is given.

    Returns:
        GGUF name -> type name, for every tensor.
    """
    p = get_preset(preset)
    ftype = p.name
    base = CATALOGUE[p.base]
    n_gqa = n_head // max(1, n_head_kv)
    n_exp = max(1, n_expert)
    names = llama_order(list(tensors))
    tied = "output.weight" not in tensors
    n_attention_wv = sum(1 for n in names if category(n) in ("attn_v", "attn_qkv", "attn_kv_b"))
    counters = {"attn_v": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}
    iq12 = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}

    def layer_of(name: str, counter: str) -> int:
        return layer_index(name) if n_exp > 1 else counters[counter]

    def impl(name: str, shape: tuple[int, ...], cat: str) -> str:
        new = base.name
        if cat == "output" or (tied and cat == "token_embd"):
            if shape[0] % base.block_size != 0:
                return "Q8_0"
            if ftype in {"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}:
                return "Q5_K"
            return "Q6_K" if new != "Q8_0" else new
        if cat == "token_embd":
            if ftype in {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"}:
                return "Q2_K"
            if ftype in {"IQ2_S", "IQ2_M", "IQ3_XXS"}:
                return "IQ3_S"
            if ftype in {"TQ1_0", "TQ2_0"}:
                return "Q4_K"
            return new
        if ftype in iq12:
            if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
                if n_gqa >= 4 or n_expert >= 4:
                    new = "Q4_K"
                else:
                    new = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
                counters["attn_v"] += 1
            elif n_expert == 8 and cat == "attn_k":
                new = "Q4_K"
            elif cat == "ffn_down":
                if counters["ffn_down"] < n_layer // 8:
                    new = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
                counters["ffn_down"] += 1
            elif cat == "attn_output":
                if n_expert == 8:
                    new = "Q5_K"
                elif ftype in ("IQ1_S", "IQ1_M"):
                    new = "IQ2_XXS"
                elif ftype in ("IQ2_S", "IQ2_M"):
                    new = "IQ3_S"
            return new
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            i_wv = counters["attn_v"]
            if ftype == "Q2_K":
                new = "Q4_K" if n_gqa >= 4 else "Q3_K"
            elif ftype == "Q2_K_S" and n_gqa >= 4:
                new = "Q4_K"
            elif ftype == "IQ3_XXS":
                new = "Q4_K" if n_gqa >= 4 else ("IQ3_S" if not has_imatrix else "IQ3_XXS")
            elif ftype in ("IQ3_XS", "IQ3_S") and n_gqa >= 4:
                new = "Q4_K"
            elif ftype == "IQ3_M":
                new = "Q4_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if i_wv < 2 else "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
                new = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i_wv, n_attention_wv):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and i_wv < 4:
                new = "Q5_K"
            if is_70b and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"
            if n_expert == 8:
                new = "Q8_0"
            counters["attn_v"] += 1
            return new
        if cat == "attn_k":
            if n_expert == 8:
                new = "Q8_0"
            elif ftype == "IQ3_XS":
                new = "IQ3_XXS"
            elif ftype == "IQ3_XXS":
                new = "IQ2_S"
            return new
        if cat == "attn_q":
            if ftype == "IQ3_XS":
                new = "IQ3_XXS"
            elif ftype == "IQ3_XXS":
                new = "IQ2_S"
            return new
        if cat == "ffn_down":
            i_layer = layer_of(name, "ffn_down")
            n = n_layer
            if ftype == "Q2_K":
                new = "Q3_K"
            elif ftype == "Q2_K_S":
                if i_layer < n // 8:
                    new = "Q4_K"
            elif ftype == "IQ3_XXS" and not has_imatrix:
                new = "Q4_K" if i_layer < n // 8 else "Q3_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if i_layer < n // 16 else "Q4_K"
            elif ftype == "IQ3_M" and (
                i_layer < n // 8 or (n_expert == 8 and _use_more_bits(i_layer, n))
            ):
                new = "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype == "Q4_K_M":
                if _use_more_bits(i_layer, n):
                    new = "Q6_K"
            elif i_layer < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not has_imatrix:
                new = "Q5_K"
            elif ftype == "Q5_K_M" and _use_more_bits(i_layer, n):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and i_layer < n // 8:
                new = "Q5_K"
            elif ftype in ("Q4_0", "Q5_0") and has_imatrix and i_layer < n // 8:
                new = "Q4_1" if ftype == "Q4_0" else "Q5_1"
            counters["ffn_down"] += 1
            return new
        if cat == "attn_output":
            if n_expert == 8:
                if ftype in {
                    "Q2_K",
                    "IQ3_XS",
                    "IQ3_XXS",
                    "Q3_K_S",
                    "Q3_K_M",
                    "IQ4_NL",
                    "Q4_K_S",
                    "Q4_K_M",
                    "IQ3_S",
                    "IQ3_M",
                    "IQ4_XS",
                }:
                    new = "Q5_K"
            else:
                new = {
                    "Q2_K": "Q3_K",
                    "IQ3_XXS": "IQ3_S",
                    "Q3_K_M": "Q4_K",
                    "Q3_K_L": "Q5_K",
                    "IQ3_M": "Q4_K",
                }.get(ftype, new)
            return new
        if cat == "attn_qkv":  # unreachable: handled with attn_v above, as in llama.cpp
            return new
        if cat in ("ffn_gate", "ffn_up"):
            i_layer = layer_of(name, cat)
            if ftype == "IQ3_XS" and n_layer // 8 <= i_layer < 7 * n_layer // 8:
                new = "IQ3_XXS"
            counters[cat] += 1
            return new
        return new

    result: dict[str, str] = {}
    for name in names:
        shape = tuple(tensors[name])
        if not allows_quantization(name, shape):
            result[name] = source_types[name]
            continue
        if base.block_size == 1:  # F32/F16/BF16 presets: no mixture logic, no fallback
            result[name] = base.name
            continue
        chosen = impl(name, shape, category(name))
        result[name] = resolve_fallback(CATALOGUE[chosen], shape[0]).name
    return result
