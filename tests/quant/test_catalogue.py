import gguf
import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.quant.catalogue import CATALOGUE, get, legal_types, resolve_fallback


@pytest.mark.parametrize("qt", list(CATALOGUE.values()), ids=lambda t: t.name)
def test_catalogue_matches_gguf_sizes(qt):
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qt.ggml_id)]
    assert (qt.block_size, qt.block_bytes) == (block, nbytes)
    assert gguf.GGMLQuantizationType(qt.ggml_id).name == qt.name


def test_bits_per_weight_includes_scales():
    assert get("Q4_0").bits_per_weight == 4.5
    assert get("Q4_K").bits_per_weight == 4.5
    assert get("Q6_K").bits_per_weight == 6.5625
    assert get("q8_0").bits_per_weight == 8.5


def test_llama_cpp_fallbacks_on_576_wide_rows():
    # SmolLM2's hidden size: K-quants do not fit and llama.cpp substitutes (tensor_type_fallback)
    assert resolve_fallback(get("Q4_K"), 576).name == "Q5_0"
    assert resolve_fallback(get("Q6_K"), 576).name == "Q8_0"
    assert resolve_fallback(get("Q2_K"), 576).name == "Q4_0"
    assert resolve_fallback(get("IQ3_S"), 576).name == "IQ4_NL"
    assert resolve_fallback(get("Q4_K"), 1536).name == "Q4_K"
    # 172 is not even a multiple of 32 (stories260K ffn): F16
    assert resolve_fallback(get("Q4_0"), 172).name == "F16"


def test_legal_types_sorted_and_block_aware():
    names = [t.name for t in legal_types(576)]
    assert "Q4_K" not in names and "Q4_0" in names and "IQ4_NL" in names
    bits = [get(n).bits_per_weight for n in names]
    assert bits == sorted(bits, reverse=True)
    assert "Q2_K" in [t.name for t in legal_types(1536)]


def test_unknown_type_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown quant type 'Q9_9'"):
        get("Q9_9")
