"""Our preset rules against llama.cpp's, tensor by tensor, on real models."""

import pytest
from gguf import GGUFReader

from ramp_edge.models import ResolvedModel, resolve
from ramp_edge.quant.llamacpp import llama_quantize
from ramp_edge.recipe import build
from ramp_edge.source import open_source

PRESETS = [
    "Q4_0",
    "Q8_0",
    "Q2_K",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_M",
    "Q6_K",
    "IQ4_NL",
]


def _check(tmp_path, model_path, preset):
    ref = tmp_path / f"{preset}.gguf"
    llama_quantize(model_path, ref, preset)
    theirs = {t.name: t.tensor_type.name for t in GGUFReader(ref).tensors}
    source = open_source(ResolvedModel("m", "gguf", model_path))
    ours = build(source, preset).types
    assert ours == theirs


@pytest.mark.llama
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_match_llama_cpp_on_smollm2(tmp_path, smollm2, preset):
    _check(tmp_path, smollm2, preset)


@pytest.mark.llama
@pytest.mark.parametrize("preset", ["Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS"])
def test_presets_match_llama_cpp_on_kquant_fixture(tmp_path, tiny_kquant_gguf, preset):
    _check(tmp_path, tiny_kquant_gguf, preset)


@pytest.mark.llama
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["Q4_K_M", "Q3_K_M", "Q5_K_M"])
def test_presets_match_llama_cpp_on_gemma3(tmp_path, preset):
    _check(tmp_path, resolve("gemma3-270m").path, preset)
