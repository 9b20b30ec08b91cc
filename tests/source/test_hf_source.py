import numpy as np
import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.models import resolve
from ramp_edge.source import open_source

pytest.importorskip("safetensors")


@pytest.fixture
def stories_hf(stories_gguf):
    return stories_gguf.parent / "hf"


def test_hf_tensors_equal_the_converted_gguf(stories_hf, stories_gguf):
    """Names, q/k permutation and values match llama.cpp's converter output exactly."""
    hf = open_source(resolve(str(stories_hf)), tokenizer_from=stories_gguf)
    gg = open_source(resolve(str(stories_gguf)))
    assert hf.info.n_layer == gg.info.n_layer == 5 and hf.info.n_head_kv == 4
    for spec in hf.specs:
        assert spec.shape == gg.spec(spec.name).shape
        assert np.array_equal(hf.tensor(spec.name), gg.tensor(spec.name)), spec.name
    assert "output.weight" not in {s.name for s in hf.specs}  # tied embeddings


@pytest.mark.llama
def test_hf_directory_exports_a_running_gguf(invoke, stories_hf, stories_gguf, tmp_path):
    out = tmp_path / "stories-q8.gguf"
    result = invoke(
        [
            "export",
            stories_hf,
            "--recipe",
            "uniform:Q8_0",
            "--out",
            out,
            "--tokenizer-from",
            stories_gguf,
        ]
    )
    assert result.exit_code == 0, result.output
    import llama_cpp

    llm = llama_cpp.Llama(str(out), n_ctx=128, verbose=False)
    text = llm("Once upon a time", max_tokens=8, temperature=0.0)["choices"][0]["text"]
    assert "there was" in text


def test_hf_directory_without_tokenizer_is_a_clear_error(stories_hf):
    with pytest.raises(ConfigError, match="--tokenizer-from"):
        open_source(resolve(str(stories_hf))).kv_fields()
