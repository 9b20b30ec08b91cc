"""`ramp-edge features`: --help, a happy path on stories260K, bad input."""

from __future__ import annotations

import json
import math

import pytest


def test_help(invoke):
    result = invoke(["features", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout and "--json" in result.stdout


@pytest.mark.torch
def test_features_json(invoke, stories_gguf, tmp_path):
    pytest.importorskip("transformers")
    imatrix = tmp_path / "stories.imatrix.gguf"
    result = invoke(
        ["features", stories_gguf, "--n-seq", 2, "--seq-len", 64, "--json", "--imatrix", imatrix]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ramp-edge/features" and len(doc["feature_names"]) == 11
    assert len(doc["tensors"]) == 37
    for t in doc["tensors"]:
        assert len(t["features"]) == 11 and all(math.isfinite(v) for v in t["features"].values())
    from ramp_edge.features.imatrix import read_imatrix

    assert len(read_imatrix(imatrix)) == 36  # every matmul weight but the token_embd lookup


@pytest.mark.torch
def test_features_table(invoke, stories_gguf):
    pytest.importorskip("transformers")
    result = invoke(["features", stories_gguf, "--n-seq", 2, "--seq-len", 64])
    assert result.exit_code == 0, result.output
    assert "blk.4.ffn_down.weight" in result.stdout and "w.q4err" in result.stdout


def test_unknown_model(invoke):
    result = invoke(["features", "no-such-model"])
    assert result.exit_code == 3
    assert "unknown model" in result.output
