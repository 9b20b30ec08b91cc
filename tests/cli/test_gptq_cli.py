"""`--gptq` through the CLI: the measured search records its encoding and export honours it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def test_measured_recipe_is_gptq_encoded_and_export_follows_it(invoke, stories_gguf, tmp_path):
    recipe = tmp_path / "r.json"
    res = invoke(
        [
            "allocate",
            stories_gguf,
            "--budget",
            "0.5MB",
            "--method",
            "measured",
            "--max-evals",
            "2",
            "--no-calibrate",
            "--out",
            recipe,
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["encoding"] == "gptq" and doc["evaluations"] <= 2
    assert doc["error_scale"] == "fisher"  # the calibration measured each tensor's sensitivity
    assert json.loads(recipe.read_text())["encoding"] == "gptq"

    outs = {}
    for flag in ("", "--gptq", "--no-gptq"):
        out = tmp_path / f"m{flag}.gguf"
        args = ["export", stories_gguf, "--recipe", recipe, "--out", out, "--json"]
        res = invoke(args + ([flag] if flag else []))
        assert res.exit_code == 0, res.output
        outs[flag] = out.read_bytes()
    assert outs[""] == outs["--gptq"]  # the recipe's encoding is the default
    assert outs["--no-gptq"] != outs["--gptq"]
    assert len(outs["--no-gptq"]) == len(outs["--gptq"])


def test_gptq_with_fold_is_refused_before_work(invoke, stories_gguf, tmp_path):
    res = invoke(
        ["export", stories_gguf, "--recipe", "uniform:Q4_0", "--gptq", "--fold", "--out",
         tmp_path / "x.gguf"]
    )  # fmt: skip
    assert res.exit_code != 0
    assert "--gptq and --fold" in res.output
    assert not (tmp_path / "x.gguf").exists()
