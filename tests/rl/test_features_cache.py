"""Issue 16 class 6: the RL feature cache is written atomically, and a truncated cache file is a
miss with a warning, not a BadZipFile traceback. No model: compute_features is a stub."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import numpy as np
import pytest

from ramp_edge.rl import features_adapter as fa

NAMES = ("blk.0.attn_q.weight", "blk.0.ffn_down.weight")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    import ramp_edge.features.embed as embed

    monkeypatch.setenv("RAMP_EDGE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    calls = []

    def compute_features(source, stats, progress=None):
        calls.append(1)
        rows = [
            SimpleNamespace(name=n, as_array=lambda i=i: np.full(11, i + 1.0))
            for i, n in enumerate(NAMES)
        ]
        return SimpleNamespace(tensors=rows)

    monkeypatch.setattr(embed, "compute_features", compute_features)
    source = SimpleNamespace(path=model, model=SimpleNamespace(model_id="m"))
    table = SimpleNamespace(tensors=[SimpleNamespace(name=n) for n in NAMES])
    return source, table, calls


def test_a_truncated_cache_is_a_miss_with_a_warning(setup, caplog):
    source, table, calls = setup
    first = fa.tensor_features(source, table, activations=False)
    cache = fa._cache_file(source, False)
    assert cache is not None and cache.is_file() and len(calls) == 1
    cache.write_bytes(cache.read_bytes()[:40])  # a run killed mid-write (before atomic writes)
    with caplog.at_level("WARNING"):
        again = fa.tensor_features(source, table, activations=False)
    assert "unreadable" in caplog.text and len(calls) == 2
    np.testing.assert_array_equal(again, first)
    # rewritten whole: the next call is a hit
    np.testing.assert_array_equal(fa.tensor_features(source, table, activations=False), first)
    assert len(calls) == 2


def test_a_failed_write_leaves_no_cache_file(setup, monkeypatch):
    source, table, _ = setup

    def savez_then_disk_full(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_disk_full)
    values = fa.tensor_features(source, table, activations=False)
    assert values.shape == (2, 11)
    cache = fa._cache_file(source, False)
    assert cache is not None and list(cache.parent.iterdir()) == []
