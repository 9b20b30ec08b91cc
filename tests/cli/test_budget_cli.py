"""`ramp-edge budget`: --help, explained budgets for pi5 and localhost, bad input exit codes."""

from __future__ import annotations

import json

import pytest


def test_help(invoke):
    result = invoke(["budget", "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout and "--min-tps" in result.stdout


def test_pi5_json(invoke, smollm2):
    result = invoke(
        [
            "budget",
            "--device",
            "raspberry-pi-5-8gb",
            "--model",
            "smollm2-135m",
            "--min-tps",
            "20",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["device"] == "raspberry-pi-5-8gb" and doc["binding"] in ("memory", "latency", "none")
    assert doc["budget_bytes"] <= min(doc["memory_limit_bytes"], doc["latency_limit_bytes"])
    assert doc["explanation"] and doc["bandwidth_source"] == "published"
    assert doc["budget_bpw"] == pytest.approx(
        (doc["budget_bytes"] - doc["fixed_bytes"]) * 8 / doc["n_params_quantizable"], abs=1e-3
    )


@pytest.mark.slow
def test_localhost_probe_and_table(invoke, smollm2):
    result = invoke(
        ["budget", "--device", "localhost", "--model", "smollm2-135m", "--min-tps", "1000"]
    )
    assert result.exit_code == 4, result.output  # 1000 tok/s is beyond a CPU's reach for 135M
    assert "nearest feasible: --min-tps" in result.stderr
    result = invoke(["budget", "--device", "local", "--model", "smollm2-135m", "--min-tps", "20"])
    assert result.exit_code == 0, result.output
    assert "budget" in result.stdout and "binds" in result.stdout
    assert "quick probe" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--device", "jetson-nan", "--model", "smollm2-135m"], 3, "unknown device 'jetson-nan'"),
        (
            ["--device", "pi4-4gb", "--model", "smollm2-135m", "--min-tps", "500"],
            4,
            "cannot reach 500 tok/s",
        ),
        (
            ["--device", "pi4-4gb", "--model", "smollm2-135m", "--ctx", "100000000"],
            4,
            "does not fit",
        ),
        (["--device", "pi5", "--model", "no-such-model"], 3, "unknown model 'no-such-model'"),
        (["--device", "pi5", "--model", "smollm2-135m", "--headroom", "1.5"], 2, "headroom"),
    ],
)
def test_bad_input_one_line(invoke, smollm2, args, code, needle):
    result = invoke(["budget", *args])
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert "Traceback" not in result.output
