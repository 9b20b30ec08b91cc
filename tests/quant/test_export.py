import os

import pytest
from gguf import GGUFReader

from ramp_edge.errors import ArtifactError, ConfigError, RampEdgeError
from ramp_edge.models import ResolvedModel, resolve
from ramp_edge.quant.export import export_model, plan_export
from ramp_edge.recipe import Recipe, build, uniform
from ramp_edge.source import open_source


@pytest.fixture(scope="module")
def smol_source(smollm2):
    return open_source(ResolvedModel("smollm2-135m", "gguf", smollm2))


@pytest.mark.llama
def test_export_size_equals_prediction_and_metadata_is_kept(tmp_path, smol_source):
    recipe = build(smol_source, "Q4_K_M")
    plan = plan_export(smol_source, recipe)
    result = export_model(smol_source, recipe, tmp_path / "q4km.gguf")
    assert os.path.getsize(result.path) == plan.size_bytes == result.plan.size_bytes
    out = GGUFReader(result.path)
    src_keys = {k for k in smol_source._reader.fields if not k.startswith("GGUF.")}
    assert src_keys <= set(out.fields)
    assert out.fields["tokenizer.chat_template"].contents() == smol_source.field(
        "tokenizer.chat_template"
    )
    assert out.fields["general.file_type"].contents() == 8  # Q5_0 holds most parameters here
    assert {t.name: t.tensor_type.name for t in out.tensors} == recipe.types
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.llama
def test_exported_file_generates_sensible_text(tmp_path, smol_source):
    import llama_cpp

    path = export_model(smol_source, uniform(smol_source, "Q8_0"), tmp_path / "q8.gguf").path
    llm = llama_cpp.Llama(str(path), n_ctx=128, verbose=False)
    text = llm("The capital of France is", max_tokens=6, temperature=0.0)["choices"][0]["text"]
    assert "Paris" in text


def test_illegal_type_names_tensor_and_legal_types(smol_source):
    types = dict(build(smol_source, "Q8_0").allocation)
    types["blk.0.attn_q.weight"] = "Q4_K"
    bad = Recipe("smollm2-135m", tuple(types.items()), "file")
    with pytest.raises(
        ConfigError, match=r"Q4_K is not legal for tensor blk\.0\.attn_q\.weight.*legal: .*Q4_0"
    ):
        plan_export(smol_source, bad)


def test_missing_tensor_in_recipe(smol_source):
    types = dict(build(smol_source, "Q8_0").allocation)
    del types["blk.3.ffn_up.weight"]
    with pytest.raises(ConfigError, match=r"no type for tensor blk\.3\.ffn_up\.weight"):
        plan_export(smol_source, Recipe("m", tuple(types.items()), "file"))


def test_failed_export_leaves_no_partial_file(tmp_path, smol_source, monkeypatch):
    import ramp_edge.quant.export as export_mod

    def boom(*args, **kwargs):
        raise RampEdgeError("simulated failure mid-write")

    monkeypatch.setattr(export_mod, "_tensor_bytes", boom)
    with pytest.raises(RampEdgeError):
        export_model(smol_source, uniform(smol_source, "Q4_0"), tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def test_truncated_gguf_is_an_artifact_error(tmp_path, smollm2):
    cut = tmp_path / "cut.gguf"
    with open(smollm2, "rb") as src:
        cut.write_bytes(src.read(5_000_000))
    with pytest.raises(ArtifactError):
        open_source(resolve(str(cut)))


def test_not_a_gguf(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello world")
    with pytest.raises(ArtifactError, match="not a GGUF"):
        resolve(str(junk))


def test_recipe_json_and_tensor_type_file_round_trip(tmp_path, smol_source):
    recipe = build(smol_source, "Q3_K_M")
    recipe.save(tmp_path / "r.json")
    again = Recipe.load(tmp_path / "r.json")
    assert again.types == recipe.types
    lines = recipe.tensor_type_file().splitlines()
    assert r"^blk\.0\.ffn_down\.weight$=q5_k" in lines
    assert all("=" in line for line in lines)


@pytest.mark.llama
def test_tensor_type_file_reproduces_recipe_in_llama_cpp(tmp_path, smollm2, smol_source):
    """llama.cpp's own quantizer, fed our per-tensor overrides, gives the same types."""
    from ramp_edge.quant.llamacpp import llama_quantize

    recipe = build(smol_source, "Q3_K_M")
    overrides = dict(line.rsplit("=", 1) for line in recipe.tensor_type_file().splitlines())
    llama_quantize(smollm2, tmp_path / "tt.gguf", "Q4_0", overrides=overrides)
    got = {t.name: t.tensor_type.name for t in GGUFReader(tmp_path / "tt.gguf").tensors}
    assert got == recipe.types
