"""Issue 16 class 8: a built-in model is reused by content (sha256), not by its size."""

from __future__ import annotations

import hashlib

import pytest

from ramp_edge import models
from ramp_edge.errors import ConfigError


@pytest.fixture
def tiny_builtin(tmp_path, monkeypatch):
    monkeypatch.setenv("RAMP_EDGE_CACHE", str(tmp_path / "cache"))
    data = b"GGUF" + b"\1" * 60
    entry = models.BuiltinModel(
        name="tiny",
        description="test",
        filename="tiny.gguf",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        license="MIT",
        wheels=(),
    )
    monkeypatch.setitem(models.BUILTIN, "tiny", entry)
    return data


def test_a_same_size_impostor_is_not_the_builtin_model(tiny_builtin):
    path = models.builtin_path("tiny")
    path.write_bytes(b"GGUF" + b"\2" * 60)  # same name and size, other bytes
    assert not models.is_fetched("tiny")
    with pytest.raises(ConfigError, match="not fetched"):
        models.resolve("tiny", fetch_missing=False)
    assert [r["fetched"] for r in models.list_models() if r["name"] == "tiny"] == [False]


def test_the_genuine_file_is_reused(tiny_builtin):
    models.builtin_path("tiny").write_bytes(tiny_builtin)
    assert models.is_fetched("tiny")
    assert models.resolve("tiny", fetch_missing=False).path == models.builtin_path("tiny")
