"""`ramp-edge train`: help, a tiny happy path, a bad budget."""

from __future__ import annotations

import json

import pytest


def test_train_help(invoke):
    result = invoke(["train", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "--resume" in result.output


def test_train_rejects_byte_budget(invoke, stories_gguf, tmp_path):
    pytest.importorskip("stable_baselines3")
    result = invoke(
        ["train", "--model", stories_gguf, "--budget", "95MB", "--out", tmp_path / "p.zip"]
    )
    assert result.exit_code == 3
    assert "bits per weight" in result.output


@pytest.mark.slow
def test_train_tiny(invoke, stories_gguf, tmp_path):
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "p.zip"
    result = invoke(
        [
            "train",
            "--model",
            stories_gguf,
            "--budget",
            "11bpw",
            "--steps",
            64,
            "--out",
            out,
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["steps"] == 64 and out.is_file()
