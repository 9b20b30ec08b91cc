"""Fixtures for the feature tests: stories260K statistics computed once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N_SEQ, SEQ_LEN, N_SAMPLE = 4, 128, 64


@pytest.fixture(scope="session")
def stories_hf(stories_gguf) -> Path:
    path = Path(stories_gguf).parent / "hf"
    if not (path / "model.safetensors").exists():
        pytest.skip("stories260K/hf is not available")
    return path


@pytest.fixture(scope="session")
def stories_tokens(stories_gguf) -> np.ndarray:
    pytest.importorskip("torch")
    from ramp_edge.features.stats import calibration_tokens
    from ramp_edge.models import resolve

    return calibration_tokens(resolve(str(stories_gguf)), n_seq=N_SEQ, seq_len=SEQ_LEN)


@pytest.fixture(scope="session")
def stories_stats(stories_gguf, stories_tokens):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ramp_edge.features.stats import collect_stats
    from ramp_edge.models import resolve

    return collect_stats(
        resolve(str(stories_gguf)), tokens=stories_tokens, n_sample=N_SAMPLE, use_cache=False
    )


@pytest.fixture(scope="session")
def stories_source(stories_gguf):
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    return open_source(resolve(str(stories_gguf)))


@pytest.fixture(scope="session")
def sample_text_tokens(stories_gguf) -> np.ndarray:
    """A TinyStories-like sentence, tokenized by llama.cpp with BOS: (1, n) int64."""
    pytest.importorskip("torch")
    import llama_cpp

    from ramp_edge.features.stats import _quiet_fd2

    with _quiet_fd2():
        llm = llama_cpp.Llama(model_path=str(stories_gguf), vocab_only=True, verbose=False)
    text = (
        "Once upon a time, there was a little girl named Lily. She loved to play outside in "
        "the park. One day, she saw a big, red ball and ran to get it."
    )
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    llm.close()
    return np.asarray([ids], dtype=np.int64)
