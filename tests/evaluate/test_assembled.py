"""The fast evaluator: its KLD is the exported GGUF's KLD, cached and resumable."""

from __future__ import annotations

import pytest

from ramp_edge.evaluate.assembled import AssembledEvaluator, EncodedTensors, EvalSettings
from ramp_edge.evaluate.perplexity import kl_divergence
from ramp_edge.models import ResolvedModel
from ramp_edge.quant.export import export_model
from ramp_edge.recipe import Recipe
from ramp_edge.source import open_source

pytestmark = pytest.mark.llama
SETTINGS = EvalSettings(data="wikitext2-valid", n_ctx=64, n_chunks=2)


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Evaluations are cached on disk: each test starts with an empty cache."""
    monkeypatch.setenv("RAMP_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def source(stories_gguf):
    return open_source(ResolvedModel("stories260k", "gguf", stories_gguf))


def _mixed(source, low: str, high: str) -> dict[str, str]:
    from ramp_edge.quant.catalogue import get

    types = {}
    for i, s in enumerate(source.specs):
        want = low if i % 2 else high
        if len(s.shape) > 1 and get(want).fits(s.row_length):
            types[s.name] = want
    assert len(types) >= 4
    return types


def test_evaluator_kld_equals_the_exported_files(source, tmp_path):
    ev = AssembledEvaluator(source, settings=SETTINGS)
    for low, high in (("Q4_0", "Q5_1"), ("IQ4_NL", "Q8_0")):
        types = _mixed(source, low, high)
        got = ev.evaluate(types)
        full = tuple((s.name, types.get(s.name, s.source_type)) for s in source.specs)
        out = tmp_path / f"{low}.gguf"
        export_model(source, Recipe("stories260k", full, "candidate"), out)
        want = kl_divergence(out, source.path, data=SETTINGS.data, n_ctx=64, n_chunks=2)
        assert got.mean_kld == pytest.approx(want.mean_kld, rel=1e-4, abs=1e-7)
        assert got.size_bytes == out.stat().st_size
        assert got.mean_kld > 0 and not got.cached
    assert ev.model_runs == 2


def test_evaluations_are_cached_on_disk_and_tensors_reused(source):
    tensors = EncodedTensors()
    ev = AssembledEvaluator(source, settings=SETTINGS, cache=tensors)
    a = _mixed(source, "Q4_1", "Q8_0")
    first = ev.evaluate(a)
    b = dict(a)
    name = next(n for n, t in b.items() if t == "Q4_1")
    b[name] = "Q5_0"
    ev.evaluate(b)
    n_quantized = len(a)
    assert tensors.encoded == n_quantized + 1  # the second file re-encoded one tensor only
    again = AssembledEvaluator(source, settings=SETTINGS)  # a new process resumes
    hit = again.evaluate(a)
    assert hit.cached and again.model_runs == 0
    assert hit.mean_kld == pytest.approx(first.mean_kld)
    other = AssembledEvaluator(
        source, settings=EvalSettings(data="wikitext2-valid", n_ctx=64, n_chunks=1)
    )
    assert other.cached(a) is None  # another setting never reads these results
