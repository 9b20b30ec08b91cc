"""--help, a happy path and bad input (exit code + one line) for each core command.

Commands: models, inspect, export, eval, deploy.
"""

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["models"],
        ["inspect"],
        ["export"],
        ["eval"],
        ["eval", "ppl"],
        ["eval", "kld"],
        ["deploy"],
    ],
)
def test_help(invoke, args):
    result = invoke([*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_cli_import_stays_light():
    code = (
        "import sys, ramp_edge.cli; "
        "heavy = {'torch','transformers','gymnasium','stable_baselines3',"
        "'llama_cpp','paramiko','ray'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_json(invoke):
    result = invoke(["models", "--json"])
    assert result.exit_code == 0
    names = [m["name"] for m in json.loads(result.stdout)]
    assert names == ["smollm2-135m", "gemma3-270m"]


def test_inspect_json_legal_types(invoke, smollm2):
    result = invoke(["inspect", "smollm2-135m", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    tensors = {t["name"]: t for t in doc["tensors"]}
    assert len(tensors) == 272 and doc["info"]["n_params"] == 134_515_008
    assert "Q4_K" in tensors["blk.0.ffn_down.weight"]["legal_types"]  # rows of 1536
    assert "Q4_K" not in tensors["blk.0.attn_q.weight"]["legal_types"]  # rows of 576
    assert tensors["blk.0.attn_q.weight"]["fallbacks"]["Q4_K"] == "Q5_0"
    assert not tensors["blk.0.attn_norm.weight"]["quantizable"]


def test_export_dry_run_json(invoke, smollm2, tmp_path):
    result = invoke(["export", "smollm2-135m", "--recipe", "Q4_K_M", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["size_bytes"] == plan["header_bytes"] + sum(
        -(-t["bytes"] // 32) * 32 for t in plan["tensors"]
    )
    assert {t["name"]: t["type"] for t in plan["tensors"]}["blk.0.ffn_down.weight"] == "Q6_K"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.llama
def test_export_writes_file_of_predicted_size(invoke, smollm2, tmp_path):
    out = tmp_path / "smol q4_0.gguf"
    result = invoke(
        [
            "export",
            "smollm2-135m",
            "--recipe",
            "uniform:Q4_0",
            "--out",
            out,
            "--tensor-type-file",
            tmp_path / "types.txt",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert out.stat().st_size == doc["size_bytes"]
    assert (tmp_path / "types.txt").read_text().count("=q4_0") == 211  # token_embd too
    assert "=f32" not in (tmp_path / "types.txt").read_text()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (
            ["export", "no-such-model", "--recipe", "Q4_0", "--dry-run"],
            3,
            "unknown model 'no-such-model'",
        ),
        (["export", "smollm2-135m", "--recipe", "Q9_K", "--dry-run"], 3, "unknown recipe 'Q9_K'"),
        (
            ["export", "smollm2-135m", "--recipe", "uniform:Q7", "--dry-run"],
            3,
            "unknown quant type",
        ),
        (["export", "smollm2-135m", "--recipe", "Q4_0"], 2, "--out is required"),
        (
            ["export", "smollm2-135m", "--recipe", "Q4_0", "--out", "/proc/nope/x.gguf"],
            1,
            "does not exist",
        ),
        (["eval", "ppl", "smollm2-135m", "--data", "no-such-data"], 3, "unknown data"),
    ],
)
def test_bad_input_one_line_error(invoke, smollm2, args, code, needle):
    result = invoke(args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    if code != 2:  # click usage errors add the usage line; our own errors are one line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


def test_illegal_type_in_recipe_file(invoke, smollm2, tmp_path):
    result = invoke(["export", "smollm2-135m", "--recipe", "Q8_0", "--dry-run", "--json"])
    plan = json.loads(result.stdout)
    tensors = {t["name"]: t["type"] for t in plan["tensors"]}
    tensors["blk.2.attn_k.weight"] = "Q3_K"
    from ramp_edge import schema

    recipe = tmp_path / "bad.json"
    recipe.write_text(
        json.dumps(schema.wrap("ramp-edge/recipe", {"model_id": "x", "tensors": tensors}))
    )
    result = invoke(["export", "smollm2-135m", "--recipe", recipe, "--out", tmp_path / "o.gguf"])
    assert result.exit_code == 3
    assert "blk.2.attn_k.weight" in result.stderr and "legal:" in result.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_corrupt_recipe_file(invoke, smollm2, tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    result = invoke(["export", "smollm2-135m", "--recipe", bad, "--dry-run"])
    assert result.exit_code == 5 and "not valid JSON" in result.stderr


def test_newer_schema_refused(invoke, smollm2, tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"schema": "ramp-edge/recipe", "schema_version": 99, "tensors": {}}))
    result = invoke(["export", "smollm2-135m", "--recipe", bad, "--dry-run"])
    assert result.exit_code == 5 and "newer than this ramp-edge supports" in result.stderr


@pytest.mark.llama
def test_eval_ppl_and_kld_json(invoke, smollm2):
    result = invoke(["eval", "ppl", "smollm2-135m", "--chunks", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert 5 < json.loads(result.stdout)["ppl"] < 60
    result = invoke(
        ["eval", "kld", "smollm2-135m", "--reference", "smollm2-135m", "--chunks", "1", "--json"]
    )
    doc = json.loads(result.stdout)
    assert doc["mean_kld"] < 1e-6 and doc["same_top_p"] == 1.0


@pytest.mark.llama
@pytest.mark.slow
def test_deploy_localhost_json(invoke, smollm2, tmp_path):
    out = tmp_path / "d.gguf"
    result = invoke(
        [
            "deploy",
            "--device",
            "localhost",
            "--budget",
            "5bpw",
            "--no-calibrate",
            "--tasks",
            "arc_easy",
            "--limit",
            "3",
            "--chunks",
            "1",
            "--out",
            out,
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert out.stat().st_size == doc["artifact_bytes"] <= doc["budget"]["bytes"]
    assert doc["quality"]["mean_kld"] < 0.5
    report = doc["device_report"]
    assert report["status"] == "ok" and report["bench"]["tg_tps"] > 0
    assert report["evals"][0]["task"] == "arc_easy" and report["evals"][0]["n"] == 3
    from ramp_edge.store import Store

    with Store() as store:
        kinds = {row.kind for row in store.results()}
    assert {"bench", "eval", "quality"} <= kinds


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["deploy", "--device", "jetson-nan"], "unknown device 'jetson-nan'"),
        (["deploy", "--device", "raspberry-pi-5-8gb"], "needs --host"),
        (["deploy", "--budget", "lots"], "bad budget"),
    ],
)
def test_deploy_bad_input(invoke, args, needle):
    result = invoke(args)
    assert result.exit_code == 3, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
