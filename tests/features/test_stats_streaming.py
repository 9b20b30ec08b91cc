"""Block-by-block statistics (collect_streaming) equal the whole-model forward's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ramp_edge.models import resolve

N_SAMPLE = 64  # as in tests/features/conftest.py

pytestmark = pytest.mark.torch

FIELDS = ("max_abs", "sum_abs", "sum2", "sum4", "sample")


def _assert_same(a, b) -> None:
    assert a[1] == b[1]  # weight -> input key
    assert set(a[0]) == set(b[0])
    for key, stats in a[0].items():
        other = b[0][key]
        assert stats.count == other.count
        for field in FIELDS:
            assert np.array_equal(getattr(stats, field), getattr(other, field)), (key, field)


@pytest.mark.parametrize("kind", ["gguf", "hf"])
def test_streaming_equals_full_forward(kind, stories_gguf, stories_hf, stories_tokens):
    pytest.importorskip("transformers")
    from ramp_edge.features import stats as st

    model = resolve(str(stories_gguf if kind == "gguf" else stories_hf))
    full = st.collect_from_model(st.load_torch_model(model), stories_tokens, N_SAMPLE)
    streamed = st.collect_streaming(model, stories_tokens, N_SAMPLE)
    _assert_same(full, streamed)


def test_collect_stats_streams_llama_models(stories_gguf, stories_tokens, monkeypatch):
    pytest.importorskip("transformers")
    from ramp_edge.features import stats as st

    def refuse(_model):
        raise AssertionError("the whole model was loaded")

    monkeypatch.setattr(st, "load_torch_model", refuse)
    got = st.collect_stats(
        resolve(str(stories_gguf)), tokens=stories_tokens, n_sample=N_SAMPLE, use_cache=False
    )
    assert got.n_tokens == stories_tokens.size
