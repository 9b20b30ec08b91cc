"""Hugging Face families (llama, mistral, qwen2, gemma3) exported by ramp-edge and run in llama.cpp.

Each checkpoint is a tiny random model built here with transformers (no hub), exported to an F32
GGUF with the stories260K tokenizer (vocab 512); llama.cpp's logits must equal transformers'.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ramp_edge.models import resolve
from ramp_edge.source import open_source
from ramp_edge.source.hf import HF_SOURCE_TYPES

pytest.importorskip("safetensors")

DIMS = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,  # the stories260K tokenizer's
}
# gemma3: six layers so that layer 5 is global (llama.cpp's fixed swa pattern of 6: the only
# layer that uses rope.freq_base), a 4-token window so the sliding mask matters within TOKENS,
# and query_pre_attn_scalar = head_dim, the attention scale llama.cpp uses below 27B.
GEMMA3 = {"num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 4}
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", GEMMA3),
}
TOKENS = [1, 45, 300, 12, 7, 200, 99, 511, 3, 64]
# Max |logit difference| over all positions, as a fraction of the logits' std. Measured:
# llama/mistral/qwen2 2-4e-6, gemma3 1.7e-3 (ggml's GELU goes through an fp16 table). A missing
# q/k permutation, gemma norm +1, sliding window or global rope base costs 0.18-4.
MAX_DIFF_PER_STD = {"llama": 1e-4, "mistral": 1e-4, "qwen2": 1e-4, "gemma3": 5e-3}


def _randomize(model, seed: int):
    """Gaussian weights; norm weights around 0.5, so neither 1 (llama) nor 0 (gemma's 1 + w)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.5 if name.endswith("norm.weight") else 0.0, 0.2)
    return model.eval()


def _build(family: str, path, seed: int):
    transformers = pytest.importorskip("transformers")
    config_cls, model_cls, extra = FAMILIES[family]
    config = getattr(transformers, config_cls)(**{**DIMS, **extra})
    model = _randomize(getattr(transformers, model_cls)(config), seed)
    model.save_pretrained(path)
    return model


@pytest.mark.llama
@pytest.mark.torch
@pytest.mark.parametrize("family", FAMILIES)
def test_family_logits_match_transformers(family, invoke, stories_gguf, tmp_path):
    import torch

    model = _build(family, tmp_path / family, seed=list(FAMILIES).index(family))
    with torch.no_grad():
        expected = model(torch.tensor([TOKENS])).logits[0].numpy()
    out = tmp_path / f"{family}-f32.gguf"
    args = ["export", tmp_path / family, "--recipe", "uniform:F32", "--out", out]
    result = invoke([*args, "--tokenizer-from", stories_gguf])
    assert result.exit_code == 0, result.output
    import llama_cpp

    # F32 KV cache: llama.cpp's default F16 cache alone is off by ~2e-3 of the logit std.
    f32 = llama_cpp.GGML_TYPE_F32
    llm = llama_cpp.Llama(
        str(out), n_ctx=32, logits_all=True, type_k=f32, type_v=f32, n_threads=1, verbose=False
    )
    llm.eval(TOKENS)
    got = np.asarray(llm.scores[: len(TOKENS)])
    diff = float(np.abs(got - expected).max())
    assert diff < MAX_DIFF_PER_STD[family] * expected.std(), (diff, float(expected.std()))


@pytest.mark.torch
def test_gemma3_multimodal_directory_reads_as_its_text_model(stories_gguf, tmp_path):
    """Gemma3ForConditionalGeneration: text_config hyper-parameters, vision tower skipped,
    tensors those of the same weights saved as Gemma3ForCausalLM (norms +1, q/k as in HF)."""
    transformers = pytest.importorskip("transformers")
    text = {**DIMS, **GEMMA3}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    vision |= {"num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4
    )
    wrapper = _randomize(transformers.Gemma3ForConditionalGeneration(config), seed=7)
    wrapper.save_pretrained(tmp_path / "mm")
    causal = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**text))
    causal.model.load_state_dict(wrapper.model.language_model.state_dict())
    causal.save_pretrained(tmp_path / "text")
    assert json.loads((tmp_path / "mm" / "config.json").read_text())["model_type"] == "gemma3"

    mm = open_source(resolve(str(tmp_path / "mm")), tokenizer_from=stories_gguf)
    txt = open_source(resolve(str(tmp_path / "text")), tokenizer_from=stories_gguf)
    assert mm.specs == txt.specs and len(mm.specs) == 2 + 13 * 6
    assert mm.kv_fields()[1:] == txt.kv_fields()[1:]  # all but general.name
    for spec in mm.specs:
        assert np.array_equal(mm.tensor(spec.name), txt.tensor(spec.name)), spec.name
    layer = causal.model.layers[0]
    norm = layer.input_layernorm.weight.detach().numpy()
    assert np.array_equal(txt.tensor("blk.0.attn_norm.weight"), norm + np.float32(1))
    q = layer.self_attn.q_proj.weight.detach().numpy()
    assert np.array_equal(txt.tensor("blk.0.attn_q.weight"), q)
    assert txt.field("gemma3.attention.sliding_window") == 4


def test_unsupported_model_type_is_a_one_line_error(invoke, tmp_path):
    from safetensors.numpy import save_file

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"wte.weight": np.zeros((4, 4), np.float32)}, str(gpt2 / "model.safetensors"))
    out = tmp_path / "x.gguf"
    result = invoke(["export", gpt2, "--recipe", "uniform:F32", "--out", out])
    assert result.exit_code == 3, result.output
    message = result.output.strip()
    assert "\n" not in message and "'gpt2' is not supported" in message
    assert message.endswith("supported: " + ", ".join(HF_SOURCE_TYPES))
    assert set(HF_SOURCE_TYPES) == {"llama", "mistral", "qwen2", "gemma3", "gemma3_text"}
